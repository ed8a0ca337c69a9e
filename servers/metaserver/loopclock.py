"""A clock that runs only while the event loop keeps up, for the metaserver's timeouts.

A message that reached the metaserver while its event loop was busy waits unread until the loop
gets to it. Silence measured by wall time would then count the loop's own lag against the
client: a metaserver busy for a lease (thousands of clients registering at once, a slow disk
under SQLite) would end sessions whose heartbeats were sitting in its queue all along.

So leases and revocation timeouts are measured on this clock. A ticker wakes every TICK seconds;
a gap between two ticks longer than MAX_STEP is the loop's lag, and the clock counts only
MAX_STEP of it. Between ticks the clock advances at most MAX_STEP past its last tick, so a reader
that runs right after a long stall (before the ticker) does not see the stall either. A loop
that is always late still moves the clock forward by MAX_STEP per tick, so silent clients are
still ended, later.

The clock never runs faster than wall time, so nothing measured on it ends sooner than it would
on wall time: a lease the metaserver grants is at least as long as the client's own view of it.
"""
from __future__ import annotations

import asyncio
import time

#: How often the ticker measures the loop's lag (seconds).
TICK = 0.1
#: The most the clock advances from one tick to the next: a loop late by up to a tick is on time.
MAX_STEP = 2 * TICK


class LoopClock:
    def __init__(self) -> None:
        self._wall = time.monotonic()  # wall time at the last tick
        self._at = self._wall  # this clock's time at the last tick
        self.lag = 0.0  # seconds of lag left out so far

    def __call__(self) -> float:
        """The time (seconds, like time.monotonic) less the loop's lag."""
        return self._at + min(time.monotonic() - self._wall, MAX_STEP)

    def _tick(self) -> None:
        wall = time.monotonic()
        step = min(wall - self._wall, MAX_STEP)
        self.lag += wall - self._wall - step
        self._at += step
        self._wall = wall

    async def run(self) -> None:
        """Runs until cancelled: the ticker."""
        while True:
            await asyncio.sleep(TICK)
            self._tick()
