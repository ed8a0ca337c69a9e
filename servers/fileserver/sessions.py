"""Which client sessions this fileserver serves: the fileserver's half of fencing (docs/consistency.md).

The metaserver sends the table of live sessions by client id (whole when we attach, then each
admission and each fence) and acknowledges our heartbeats. A call names its session through its
capabilities (pfs/capability.py: the metaserver signed them, so the id is the caller's own); we
serve it only if that session is in the table, and only while the lease bought by our last
acknowledged heartbeat runs, minus a margin for calls already under way: cut off from the
metaserver, we stop by ourselves before it stops waiting for us. A fence is acknowledged only
once no call of the fenced session is still running here, so none of its writes can land after
its tokens move on.

Each acknowledgement also carries the metaserver's clock, by which capabilities expire: we keep
a lower bound of it (the acknowledgement's time plus what has passed here since it arrived),
so a capability is never taken for unexpired when the metaserver would not.

Thread-safe: calls run on the server's threads, table changes on the control stream's.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

#: Seconds before the lease ends at which new calls stop being served: a call admitted just
#: before must still finish before the metaserver gives up waiting for us.
LEASE_MARGIN = 1.0


class NotAdmitted(Exception):
    """The call's session is unknown here, or fenced."""


class NotServing(Exception):
    """This fileserver is not in contact with the metaserver: nobody is served."""


class SessionTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._admitted: set[int] = set()
        self._running: dict[int, int] = {}  # client id -> calls in progress
        self._serve_until = float("-inf")
        self._metaserver_clock = (float("-inf"), 0.0)  # (its time, our clock then)

    def install(self, sessions: list[int]) -> None:
        """The whole table, at attach; nothing is served until a heartbeat is acknowledged."""
        with self._changed:
            self._admitted = set(sessions)
            self._serve_until = float("-inf")

    def admit(self, client_id: int) -> None:
        with self._changed:
            self._admitted.add(client_id)

    def fence(self, client_id: int) -> None:
        """Refuses the session from now on; returns once none of its calls is running."""
        with self._changed:
            self._admitted.discard(client_id)
            self._changed.wait_for(lambda: not self._running.get(client_id))

    def renew(self, lease_ends: float, metaserver_time: float) -> None:
        with self._changed:
            self._serve_until = max(self._serve_until, lease_ends - LEASE_MARGIN)
            if metaserver_time > self.metaserver_time():
                self._metaserver_clock = (metaserver_time, self._clock())

    def metaserver_time(self) -> float:
        """A time the metaserver's clock has surely reached."""
        at, here = self._metaserver_clock
        return at + (self._clock() - here)

    def lapse(self) -> None:
        """The control stream broke: serve nobody until attached again."""
        with self._changed:
            self._serve_until = float("-inf")

    @contextlib.contextmanager
    def serving(self, client_id: int) -> Iterator[None]:
        """Runs a call for the session `client_id`, or refuses it."""
        with self._changed:
            if not self._clock() < self._serve_until:
                raise NotServing("this fileserver is not in contact with the metaserver; retry "
                                 "shortly (check `pfs status`)")
            if client_id not in self._admitted:
                raise NotAdmitted(f"session {client_id} may not use this fileserver: it has "
                                  "ended (its lease ran out or it was evicted) or never began")
            self._running[client_id] = self._running.get(client_id, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                left = self._running.pop(client_id) - 1
                if left:
                    self._running[client_id] = left
                else:
                    self._changed.notify_all()
