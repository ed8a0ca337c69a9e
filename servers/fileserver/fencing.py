"""Which client sessions this fileserver serves: the fileserver's half of fencing (docs/consistency.md).

Invariant: a call runs only for a session in the table and only while our lease holds; a fence
is acknowledged only once no call of the fenced session is still running here, so none of its
writes lands after its tokens move on.

The metaserver sends the table of sessions by client id and acknowledges our heartbeats. When
we attach, the table is the live sessions plus a floor: every id from the floor on is a session
begun since (ids are handed out in increasing order, never twice), served unless fenced. After
that come the fences (and, rarely, the admission of a session below the floor). A call names its
session through its capabilities (pfs/capability.py: the metaserver signed them, so the id is
the caller's own); we serve it only if that session is in the table, and only while the lease
bought by our last acknowledged heartbeat runs, minus a margin for calls already under way: cut
off from the metaserver, we stop by ourselves before it stops waiting for us. A fence is
acknowledged only once no call of the fenced session is still running here, so none of its
writes can land after its tokens move on.

A fence above the floor is remembered until every capability the session could hold has
expired (the metaserver signs none once the session has ended), then forgotten: the table stays
as small as the sessions of the last CAPABILITY_SECONDS, however many came and went.

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

from pfs.protocol.capability import CAPABILITY_SECONDS

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
        self._admitted: set[int] = set()  # live sessions below the floor
        self._new_sessions_from = 0  # the floor (see above)
        # Sessions at or above the floor fenced: client id -> when it may be forgotten (the
        # metaserver's clock), in the order fenced.
        self._fenced: dict[int, float] = {}
        self._running: dict[int, int] = {}  # client id -> calls in progress
        self._serve_until = float("-inf")
        self._metaserver_clock = (float("-inf"), 0.0)  # (its time, our clock then)

    def install(self, sessions: list[int], new_sessions_from: int) -> None:
        """The whole table, at attach; nothing is served until a heartbeat is acknowledged."""
        with self._changed:
            self._admitted = set(sessions)
            self._new_sessions_from = new_sessions_from
            self._fenced = {}
            self._serve_until = float("-inf")

    def admit(self, client_id: int) -> None:
        with self._changed:
            if client_id < self._new_sessions_from:
                self._admitted.add(client_id)

    def fence(self, client_id: int, fenced_at: float) -> None:
        """Refuses the session from now on; returns once none of its calls is running."""
        with self._changed:
            if client_id < self._new_sessions_from:
                self._admitted.discard(client_id)
            else:
                self._fenced[client_id] = fenced_at + CAPABILITY_SECONDS
            self._changed.wait_for(lambda: not self._running.get(client_id))

    def _served(self, client_id: int) -> bool:
        if client_id < self._new_sessions_from:
            return client_id in self._admitted
        return client_id not in self._fenced

    def _forget_expired_fences(self) -> None:
        now = self.metaserver_time()
        while self._fenced:
            client_id, forget_at = next(iter(self._fenced.items()))
            if forget_at >= now:
                return
            del self._fenced[client_id]

    def renew(self, lease_ends: float, metaserver_time: float) -> None:
        with self._changed:
            self._serve_until = max(self._serve_until, lease_ends - LEASE_MARGIN)
            if metaserver_time > self.metaserver_time():
                self._metaserver_clock = (metaserver_time, self._clock())
            self._forget_expired_fences()

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
            if not self._served(client_id):
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
