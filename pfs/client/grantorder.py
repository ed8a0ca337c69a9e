"""The order of grants and revocations: grants travel in Acquire replies, revocations on the
stream, so a revocation could overtake the grant it takes back. Each grant has a number; a
revocation says the highest number granted before it.

Invariant: a revocation is handed on only once every grant up to its number is in the client's
token table; until then it waits here, taking no thread.
"""
from __future__ import annotations

import threading
from typing import Any

from pfs._proto import metaserver_pb2 as pb


class GrantOrder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._applied_below = 1  # every grant numbered below this has been applied
        self._applied_ahead: set[int] = set()
        self._held: list[tuple[pb.Revoke, Any]] = []  # (revocation, what it came with)

    def admit(self, revoke: pb.Revoke, answer: Any) -> bool:
        """Whether the revocation may be handled now; if not, it is held, with `answer`, until
        `applied` hands it on."""
        with self._lock:
            if revoke.granted_upto >= self._applied_below:
                self._held.append((revoke, answer))
                return False
            return True

    def applied(self, grant_seq: int) -> list[tuple[pb.Revoke, Any]]:
        """Records that the grant numbered `grant_seq` is applied; the held revocations (with
        their answers) that no longer wait for any grant."""
        with self._lock:
            self._applied_ahead.add(grant_seq)
            while self._applied_below in self._applied_ahead:
                self._applied_ahead.remove(self._applied_below)
                self._applied_below += 1
            ready = [r for r in self._held if r[0].granted_upto < self._applied_below]
            self._held = [r for r in self._held if r[0].granted_upto >= self._applied_below]
        return ready

    def restart(self) -> None:
        """Forgets every grant and held revocation: the session is lost, or back on a restarted
        metaserver, which numbers grants afresh and forgot every revocation."""
        with self._lock:
            self._applied_below, self._applied_ahead, self._held = 1, set(), []
