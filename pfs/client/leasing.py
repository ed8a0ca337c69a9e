"""Whether a session may be relied on: its lease, and its recovery after the stream broke or the
lease ran out. Nothing is served from the cache unless `lease_valid()`; calls wait while the session
recovers (`back`), and a reclaim (`reclaimed`) or a heartbeat acknowledged again ends the recovery.

The lease: the metaserver ends a session it has not heard from for `lease_seconds`. A heartbeat
it acknowledges was received after it was sent, so the session lives at least until that send
time plus the lease; past that (`lease_valid()` false) the client must assume its tokens are
gone and serve nothing from its cache.

When the stream breaks (the metaserver died or restarts, or the network failed), the session is
not given up: it is *recovering*. Its lease counts as over at once (a metaserver that is alive
ends the sessions of a broken stream and may give their tokens away), so nothing is served from
the cache, but the cache, held tokens and unstored writes stay. The stream rejoins it with its
key as soon as the metaserver answers again (pfs/client/stream.py). A metaserver that restarted on its
data directory takes it back, and the Client reclaims its open files and tokens (`reclaim`;
servers/metaserver/recovery.py); a metaserver that ended the session refuses the join, and the
session is lost as before. Calls made meanwhile wait for the outcome, up to PFS_RETRY_SECONDS.
A lease that runs out while the stream seems up (this process was paused, or the metaserver
hung) recovers too, silently: a heartbeat acknowledged again brings the session back as it was,
an `ended` notice loses it, and a stream that breaks meanwhile makes it rejoin and reclaim.
"""
from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Callable

from pfs.protocol import errnos
from pfs.protocol.transport import KEEPALIVE_SECONDS, KEEPALIVE_TIMEOUT_SECONDS

log = logging.getLogger("pfs.client")

#: Part of the lease the client gives up as a safety margin.
LEASE_MARGIN = 0.05
#: Seconds a call that found the metaserver unreachable waits to see the stream break (both
#: use one connection, so it breaks at once; else gRPC keepalive notices within 5 s).
BREAK_SECONDS = KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS


class Leased:
    """The lease and recovery state of a session (MetaSession is one)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._grants = threading.Condition()  # guards the recovery's state; waits for it
        self._lease_ends = 0.0
        self._lease = 0.0
        self.lease_seconds = 0.0
        self._finishing = False
        self.lost: str | None = None
        self.recovering: str | None = None  # why it may be lost, until the metaserver says
        self._silent = False  # recovering while the stream seems up: no reclaim needed
        # Reclaims so far: a grant of the metaserver of before one is void after it.
        self.era = 0
        self._outage = 0.0  # when it broke (monotonic)
        self.client_id = 0
        self._on_lease: Callable[[int], None] | None = None  # told every change: see watch_lease

    def watch_lease(self, on_lease: Callable[[int], None]) -> None:
        """Calls on_lease(deadline) now and on every change of whether, or until when, the
        lease is valid: the monotonic time in ns before which it is (0: it is not, recovering
        or lost). Called under the recovery's lock, so the calls come in the order of the
        changes; a change that ends validity is told before anything acts on it."""
        with self._grants:
            self._on_lease = on_lease
            self._tell_lease()

    def _tell_lease(self) -> None:
        if self._on_lease is not None:
            valid = self.lost is None and self.recovering is None
            self._on_lease(int(self._lease_ends * 1e9) if valid else 0)

    def leased(self, asked: float, lease_seconds: float) -> None:
        """Registered: the lease runs from `asked`, when registration was asked for."""
        with self._grants:
            self.lease_seconds = lease_seconds
            self._lease = lease_seconds * (1 - LEASE_MARGIN)
            self._lease_ends = asked + self._lease
            self._tell_lease()

    def lease_valid(self) -> bool:
        """Whether the metaserver surely still counts this session as alive."""
        return self.lost is None and self.recovering is None and time.monotonic() < self._lease_ends

    def check_lease(self) -> None:
        """Once the lease may have run out (this process was paused, or the metaserver
        stopped answering) the tokens may be someone else's: the session recovers, serving
        nothing from the cache, until the metaserver says which (the stream brings it: a
        heartbeat acknowledged again, the session ended, or the stream broken)."""
        if self.lost is None and self.recovering is None and time.monotonic() >= self._lease_ends:
            self._recover(f"no heartbeat was acknowledged for over the lease of "
                          f"{self.lease_seconds:g}s (was this process paused, or the "
                          "metaserver unreachable?)", silent=True)

    def renewed(self, sent: float) -> None:
        """A heartbeat sent at `sent` was acknowledged while this session was on the stream:
        the metaserver still counted the session then (it announces an ending before any
        later acknowledgement), so a silent one is back."""
        with self._grants:
            self._lease_ends = max(self._lease_ends, sent + self._lease)
            if self._silent and self.recovering and time.monotonic() < self._lease_ends:
                log.warning("client %d hears from the metaserver again after %.1fs",
                            self.client_id, time.monotonic() - self._outage)
                self.recovering, self._silent = None, False
                self._grants.notify_all()
            self._tell_lease()

    # --- a broken stream --------------------------------------------------------------------
    def disconnected(self, reason: str) -> bool:
        """On the stream's thread: the stream broke. Whether the session is to be rejoined
        (not when it is being given up anyway)."""
        if self._finishing or self.lost:
            return False
        self._recover(reason, silent=False)
        return True

    def _recover(self, reason: str, silent: bool) -> None:
        """The session stops serving from the cache until the metaserver says whether it
        still counts it: `silent`, it may merely have been slow; else the stream broke, and
        only a reclaim brings the session back."""
        with self._grants:
            if self.lost:
                return
            if self.recovering is None:
                self._outage = time.monotonic()
                log.warning("client %d lost contact with the metaserver at %s (%s); it keeps "
                            "its open files, tokens and unstored writes until the metaserver "
                            "answers", self.client_id, self.address, reason)
                self.recovering, self._silent = reason, silent
            elif not silent:  # (a broken stream is never taken back for a silent one)
                self.recovering, self._silent = reason, False
            self._tell_lease()
            self._grants.notify_all()

    def unreachable(self) -> OSError:
        """The failure of a call that waited too long for the recovering session."""
        return errnos.error(errno.EHOSTDOWN, (
            f"the metaserver at {self.address} has not answered for "
            f"{time.monotonic() - self._outage:.0f}s ({self.recovering}); is it restarting? "
            "The session keeps its open files and unstored writes, and rejoins when the "
            "metaserver is back: try again"))

    @property
    def silent(self) -> bool:
        """Recovering with the stream up: waiting for the metaserver's word."""
        return self.recovering is not None and self._silent and not self.lost

    def _broke(self, timeout: float) -> bool:
        """Whether the stream is (within `timeout`) found broken: a call that failed for want
        of the metaserver then waits for the recovery rather than losing the session."""
        with self._grants:
            return self._grants.wait_for(lambda: self.recovering is not None
                                         and not self._silent, timeout)

    def reclaimed(self, sent: float) -> None:
        """The restarted metaserver gave the session back (a reclaim sent at `sent`): a new era."""
        with self._grants:
            self._lease_ends = max(self._lease_ends, sent + self._lease)
            self.recovering = None
            self.era += 1
            self._tell_lease()
            self._grants.notify_all()

    def back_by(self, era: int, deadline: float) -> bool:
        """After a call made in `era` found the metaserver unreachable: whether the session is
        back on a restarted one by `deadline`. False when the stream did not break (the
        metaserver is up: the call failed for another reason), or the session is lost."""
        with self._grants:
            if not self._grants.wait_for(
                    lambda: self.era != era or (self.recovering and not self._silent),
                    min(BREAK_SECONDS, max(0.0, deadline - time.monotonic()))):
                return False
        return self.back(deadline)

    def back(self, deadline: float) -> bool:
        """Whether the session is not recovering (any more) by `deadline`, nor lost."""
        with self._grants:
            self._grants.wait_for(lambda: self.recovering is None or self.lost is not None,
                                  max(0.0, deadline - time.monotonic()))
            return self.recovering is None and self.lost is None
