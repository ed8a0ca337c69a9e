"""The byte-range token manager: who may read or write which bytes of which file (SPEC §4).

Invariants this module keeps:
- Two clients never hold conflicting tokens at once: tokens conflict when they overlap and at
  least one is a WRITE token. A client's own tokens never conflict with each other.
- A conflicting request waits while only the overlapping part, [start, end) of the request, is
  revoked from each holder (dropped for a WRITE request, downgraded to READ for a READ request).
  The holder's table changes when it acknowledges, after writing back its dirty data.
- Requests of one file are served in arrival order among those that conflict (no starvation);
  requests that do not conflict with anything earlier proceed at once, in parallel.
- A grant is expanded up to the nearest conflicting token or conflicting waiting request of
  another client, so sequential access needs few round trips.
- Nothing blocks while holding the lock: waiting happens in Condition.wait, which releases it,
  and revocations are handed to `send_revoke`, which must only enqueue.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pfs.ranges import INFINITY, RangeMap

log = logging.getLogger("pfs.metaserver.tokens")

READ, WRITE = 1, 2
DROP = 0  # the level a WRITE request leaves other holders at


class SessionGone(Exception):
    """The requesting client's session ended while it waited."""


class RequestCancelled(Exception):
    """The requesting client closed the file while its request waited."""


@dataclass(frozen=True)
class Grant:
    start: int
    end: int
    mode: int
    grant_seq: int


@dataclass
class Revocation:
    revoke_id: int
    client_id: int
    file_id: int
    start: int
    end: int
    to_mode: int  # DROP or READ
    granted_upto: int
    issued_at: float
    done: bool = False


@dataclass(eq=False)
class _Request:
    client_id: int
    start: int
    end: int
    mode: int
    revocations: dict[int, Revocation] = field(default_factory=dict)  # holder -> outstanding
    cancelled: bool = False


@dataclass
class _FileTokens:
    holders: dict[int, RangeMap] = field(default_factory=dict)
    queue: list[_Request] = field(default_factory=list)


def _conflict(mode_a: int, mode_b: int) -> bool:
    return mode_a == WRITE or mode_b == WRITE


class TokenManager:
    """Grants, revokes and releases byte-range tokens; knows nothing of gRPC.

    `send_revoke(revocation)` delivers a revocation to its client. `evict(client)` is called when
    a holder fails to acknowledge within `revoke_timeout` seconds; the caller ends that session,
    which lands here as `remove_client`. Both are called with the lock held: they must only
    enqueue or signal, never call back into the manager.
    """

    def __init__(self, send_revoke: Callable[[Revocation], None],
                 evict: Callable[[int], None] = lambda client_id: None,
                 revoke_timeout: float = 30.0) -> None:
        self._send_revoke = send_revoke
        self._evict = evict
        self._revoke_timeout = revoke_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._files: dict[int, _FileTokens] = {}
        self._grant_seq: dict[int, int] = {}  # live clients -> last grant number
        self._revocations: dict[int, Revocation] = {}  # outstanding, by id
        self._revoke_ids = itertools.count(1)

    # --- sessions ---------------------------------------------------------------------------
    def add_client(self, client_id: int) -> None:
        with self._lock:
            self._grant_seq.setdefault(client_id, 0)

    def remove_client(self, client_id: int) -> None:
        """Drops every token of the client and fails its waiting requests."""
        with self._lock:
            self._grant_seq.pop(client_id, None)
            for file_id in list(self._files):
                self._release_locked(client_id, file_id)
                self._forget_if_idle(file_id)
            self._changed.notify_all()

    # --- tokens -----------------------------------------------------------------------------
    def acquire(self, client_id: int, file_id: int, start: int, end: int, mode: int) -> Grant:
        """Blocks until [start, end) is held by the client in `mode`; returns the grant."""
        if mode not in (READ, WRITE) or not 0 <= start < end <= INFINITY:
            raise ValueError(f"bad token request [{start}, {end}) mode {mode}")
        with self._lock:
            if client_id not in self._grant_seq:
                raise SessionGone(client_id)
            tokens = self._files.setdefault(file_id, _FileTokens())
            request = _Request(client_id, start, end, mode)
            tokens.queue.append(request)
            try:
                while True:
                    if client_id not in self._grant_seq:
                        raise SessionGone(client_id)
                    if request.cancelled:
                        raise RequestCancelled(f"client {client_id} closed file {file_id}")
                    if not self._blocked_by_earlier(tokens, request):
                        holders = self._conflicting_holders(tokens, request)
                        if not holders:
                            return self._grant_locked(tokens, request)
                        for holder in holders - request.revocations.keys():
                            self._revoke_locked(file_id, holder, request)
                    self._changed.wait(timeout=self._wait_slice(request))
                    self._evict_silent_holders(request)
            finally:
                tokens.queue.remove(request)
                self._cancel_revocations(request)
                self._forget_if_idle(file_id)
                self._changed.notify_all()

    def acknowledge(self, client_id: int, revoke_id: int) -> bool:
        """Applies an acknowledged revocation; False for an unknown or stale one (ignored)."""
        with self._lock:
            revocation = self._revocations.get(revoke_id)
            if revocation is None or revocation.client_id != client_id:
                return False
            del self._revocations[revoke_id]
            revocation.done = True
            held = self._files.get(revocation.file_id)
            if held and client_id in held.holders:
                held.holders[client_id].cap(revocation.start, revocation.end, revocation.to_mode)
                if not held.holders[client_id]:
                    del held.holders[client_id]
            self._changed.notify_all()
            return True

    def release_file(self, client_id: int, file_id: int) -> None:
        """Drops all of the client's tokens on the file (its close), and fails its requests
        still waiting on it: granted after the close, their tokens would have no owner."""
        with self._lock:
            held = self._files.get(file_id)
            for request in held.queue if held else ():
                request.cancelled |= request.client_id == client_id
            self._release_locked(client_id, file_id)
            self._forget_if_idle(file_id)
            self._changed.notify_all()

    # --- queries ----------------------------------------------------------------------------
    def holdings(self, client_id: int, file_id: int) -> list[tuple[int, int, int]]:
        with self._lock:
            held = self._files.get(file_id)
            return list(held.holders.get(client_id, ())) if held else []

    def writers_beyond(self, file_id: int, offset: int) -> list[int]:
        """Clients holding a WRITE token on some byte at or after `offset` (they may have grown
        the file without telling anyone yet)."""
        with self._lock:
            held = self._files.get(file_id)
            if not held:
                return []
            return [client for client, ranges in held.holders.items()
                    if any(level == WRITE for _, _, level in ranges.overlapping(offset, INFINITY))]

    # --- internals (lock held) --------------------------------------------------------------
    def _blocked_by_earlier(self, tokens: _FileTokens, request: _Request) -> bool:
        for earlier in tokens.queue:
            if earlier is request:
                return False
            if (earlier.client_id != request.client_id and earlier.start < request.end
                    and request.start < earlier.end and _conflict(earlier.mode, request.mode)):
                return True
        return False

    def _conflicting_holders(self, tokens: _FileTokens, request: _Request) -> set[int]:
        return {holder for holder, ranges in tokens.holders.items()
                if holder != request.client_id
                and any(_conflict(level, request.mode)
                        for _, _, level in ranges.overlapping(request.start, request.end))}

    def _revoke_locked(self, file_id: int, holder: int, request: _Request) -> None:
        revocation = Revocation(
            revoke_id=next(self._revoke_ids), client_id=holder, file_id=file_id,
            start=request.start, end=request.end,
            to_mode=READ if request.mode == READ else DROP,
            granted_upto=self._grant_seq.get(holder, 0), issued_at=time.monotonic())
        request.revocations[holder] = revocation
        self._revocations[revocation.revoke_id] = revocation
        log.debug("revoke #%d: client %d gives up [%d, %d) of file %d for client %d",
                  revocation.revoke_id, holder, request.start, request.end, file_id,
                  request.client_id)
        self._send_revoke(revocation)

    def _grant_locked(self, tokens: _FileTokens, request: _Request) -> Grant:
        lo, hi = 0, INFINITY
        blockers = [(s, e) for holder, ranges in tokens.holders.items()
                    if holder != request.client_id
                    for s, e, level in ranges if _conflict(level, request.mode)]
        blockers += [(q.start, q.end) for q in tokens.queue
                     if q.client_id != request.client_id and _conflict(q.mode, request.mode)]
        for s, e in blockers:
            if s < request.start:
                lo = max(lo, min(e, request.start))
            if e > request.end:
                hi = min(hi, max(s, request.end))
        tokens.holders.setdefault(request.client_id, RangeMap()).raise_to(lo, hi, request.mode)
        seq = self._grant_seq[request.client_id] + 1
        self._grant_seq[request.client_id] = seq
        return Grant(lo, hi, request.mode, seq)

    def _release_locked(self, client_id: int, file_id: int) -> None:
        held = self._files.get(file_id)
        if held:
            held.holders.pop(client_id, None)
        # Its revocations on the file are moot; a late acknowledgement must not touch tokens
        # the client may be granted again.
        for revoke_id, revocation in list(self._revocations.items()):
            if revocation.client_id == client_id and revocation.file_id == file_id:
                revocation.done = True
                del self._revocations[revoke_id]
        if held:
            for request in held.queue:
                if request.revocations.get(client_id) and request.revocations[client_id].done:
                    del request.revocations[client_id]

    def _cancel_revocations(self, request: _Request) -> None:
        """A request that leaves without its grant (its client is gone) takes its unanswered
        revocations along: applied later, their acknowledgements could take back bytes granted
        to the holder in the meantime, which the holder's client would then still use."""
        for revocation in request.revocations.values():
            if not revocation.done:
                revocation.done = True
                self._revocations.pop(revocation.revoke_id, None)
        request.revocations.clear()

    def _forget_if_idle(self, file_id: int) -> None:
        held = self._files.get(file_id)
        if held is not None and not held.holders and not held.queue:
            del self._files[file_id]

    def _wait_slice(self, request: _Request) -> float:
        outstanding = [r for r in request.revocations.values() if not r.done]
        if not outstanding:
            return self._revoke_timeout
        oldest = min(r.issued_at for r in outstanding)
        return max(0.01, oldest + self._revoke_timeout - time.monotonic())

    def _evict_silent_holders(self, request: _Request) -> None:
        now = time.monotonic()
        for holder, revocation in list(request.revocations.items()):
            if revocation.done:
                del request.revocations[holder]
            elif now - revocation.issued_at >= self._revoke_timeout:
                log.warning("client %d did not acknowledge revocation #%d within %.0fs; "
                            "evicting it", holder, revocation.revoke_id, self._revoke_timeout)
                revocation.issued_at = now  # evict once per timeout, not on every wake-up
                self._evict(holder)
