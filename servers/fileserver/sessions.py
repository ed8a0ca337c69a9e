"""Which client sessions this fileserver serves: the fileserver's half of fencing (docs/consistency.md).

The metaserver sends the table of live sessions (whole when we attach, then each admission and
each fence) and acknowledges our heartbeats. We serve a call only if its session is in the table
with the key it presents, and only while the lease bought by our last acknowledged heartbeat
runs, minus a margin for calls already under way: cut off from the metaserver, we stop by
ourselves before it stops waiting for us. A fence is acknowledged only once no call of the
fenced session is still running here, so none of its writes can land after its tokens move on.

Thread-safe: calls run on the server's threads, table changes on the control stream's.
"""
from __future__ import annotations

import contextlib
import hmac
import threading
import time
from typing import Callable, Iterator

#: Seconds before the lease ends at which new calls stop being served: a call admitted just
#: before must still finish before the metaserver gives up waiting for us.
LEASE_MARGIN = 1.0


class NotAdmitted(Exception):
    """The call's session is unknown here, fenced, or named with the wrong key."""


class NotServing(Exception):
    """This fileserver is not in contact with the metaserver: nobody is served."""


class SessionTable:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._changed = threading.Condition()
        self._keys: dict[int, bytes] = {}
        self._running: dict[int, int] = {}  # client id -> calls in progress
        self._serve_until = float("-inf")

    def install(self, sessions: dict[int, bytes]) -> None:
        """The whole table, at attach; nothing is served until a heartbeat is acknowledged."""
        with self._changed:
            self._keys = dict(sessions)
            self._serve_until = float("-inf")

    def admit(self, client_id: int, key: bytes) -> None:
        with self._changed:
            self._keys[client_id] = key

    def fence(self, client_id: int) -> None:
        """Refuses the session from now on; returns once none of its calls is running."""
        with self._changed:
            self._keys.pop(client_id, None)
            self._changed.wait_for(lambda: not self._running.get(client_id))

    def renew(self, lease_ends: float) -> None:
        with self._changed:
            self._serve_until = max(self._serve_until, lease_ends - LEASE_MARGIN)

    def lapse(self) -> None:
        """The control stream broke: serve nobody until attached again."""
        with self._changed:
            self._serve_until = float("-inf")

    @contextlib.contextmanager
    def serving(self, session: tuple[int, bytes] | None) -> Iterator[None]:
        """Runs a call for `session` (client id, key), or refuses it."""
        with self._changed:
            if not self._clock() < self._serve_until:
                raise NotServing("this fileserver is not in contact with the metaserver; retry "
                                 "shortly (check `pfs status`)")
            if session is None:
                raise NotAdmitted("this call carries no session key; data calls need a "
                                  "session (pfs_initialize)")
            client_id, key = session
            known = self._keys.get(client_id)
            if known is None or not hmac.compare_digest(known, key):
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
