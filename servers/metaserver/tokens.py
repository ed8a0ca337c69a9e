"""The byte-range token manager: who may read or write which bytes of which file (docs/consistency.md).

Invariants this module keeps:
- Two clients never hold conflicting tokens at once: tokens conflict when they overlap and at
  least one is a WRITE token. A client's own tokens never conflict with each other.
- A conflicting request waits while only the overlapping part, [start, end) of the request, is
  revoked from each holder (dropped for a WRITE request, downgraded to READ for a READ request).
  The holder's table changes when it acknowledges, after writing back its dirty data.
- Requests of one file are served in arrival order among those that conflict (no starvation);
  requests that do not conflict with anything earlier are granted at once, in parallel.
- A grant is expanded up to the nearest conflicting token or conflicting waiting request of
  another client, so sequential access needs few round trips.

The manager is a state machine driven from one thread (the metaserver's event loop): nothing in
it waits. A request is answered through its `on_done` callback, at once or from a later call
(an acknowledgement, a release); `send_revoke` delivers revocations. Both are called from inside
the manager and must only record or enqueue, never call back into it.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pfs.protocol.ranges import INFINITY, RangeMap
from pfs.protocol.tokenmodes import READ, WRITE

log = logging.getLogger("pfs.metaserver.tokens")

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


# on_done(grant, None) once granted, or on_done(None, error) when the request fails.
Done = Callable[["Grant | None", "Exception | None"], None]


@dataclass(eq=False)
class Request:
    client_id: int
    file_id: int
    start: int
    end: int
    mode: int
    on_done: Done
    revocations: dict[int, Revocation] = field(default_factory=dict)  # holder -> outstanding
    finished: bool = False


@dataclass
class _FileTokens:
    holders: dict[int, RangeMap] = field(default_factory=dict)
    # The holders of some WRITE token: all that a READ request can conflict with, so that a file
    # read by thousands of clients costs a READ request no look at each of them.
    writers: set[int] = field(default_factory=set)
    queue: list[Request] = field(default_factory=list)

    def candidates(self, mode: int):
        """(holder, ranges) of the holders whose tokens may conflict with a request in `mode`."""
        if mode == WRITE:
            return self.holders.items()
        return ((holder, self.holders[holder]) for holder in self.writers)

    def changed(self, client_id: int) -> None:
        """After the client's tokens on the file changed: forgets it if it holds none, and keeps
        `writers` up to date."""
        ranges = self.holders.get(client_id)
        if ranges is not None and not ranges:
            del self.holders[client_id]
        if ranges and any(level == WRITE for _, _, level in ranges):
            self.writers.add(client_id)
        else:
            self.writers.discard(client_id)


def _conflict(mode_a: int, mode_b: int) -> bool:
    return mode_a == WRITE or mode_b == WRITE


class TokenManager:
    """Grants, revokes and releases byte-range tokens; knows nothing of gRPC or threads.

    A holder that does not acknowledge a revocation within `revoke_timeout` seconds is reported
    by `overdue()`; the caller ends that session, which lands here as `remove_client`."""

    def __init__(self, send_revoke: Callable[[Revocation], None], revoke_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send_revoke = send_revoke
        self._revoke_timeout = revoke_timeout
        self._clock = clock
        self._files: dict[int, _FileTokens] = {}
        self._grant_seq: dict[int, int] = {}  # live clients -> last grant number
        self._revocations: dict[int, Revocation] = {}  # outstanding, by id
        self._revoke_ids = itertools.count(1)

    # --- sessions ---------------------------------------------------------------------------
    def add_client(self, client_id: int) -> None:
        self._grant_seq.setdefault(client_id, 0)

    def remove_client(self, client_id: int) -> None:
        """Drops every token of the client and fails its waiting requests."""
        self._grant_seq.pop(client_id, None)
        for file_id in list(self._files):
            tokens = self._files[file_id]
            for request in [r for r in tokens.queue if r.client_id == client_id]:
                self._finish(tokens, request, error=SessionGone(client_id))
            self._release(client_id, file_id)
            self._advance(file_id)

    # --- tokens -----------------------------------------------------------------------------
    def request(self, client_id: int, file_id: int, start: int, end: int, mode: int,
                on_done: Done) -> Request:
        """Asks for [start, end) in `mode`; `on_done` is told the grant, now or later."""
        if not 0 <= start < end <= INFINITY:
            raise ValueError(f"token range [{start}, {end}) is empty or beyond {INFINITY}")
        if mode not in (READ, WRITE):
            raise ValueError(f"token mode must be READ or WRITE, not {mode}")
        if client_id not in self._grant_seq:
            raise SessionGone(client_id)
        request = Request(client_id, file_id, start, end, mode, on_done)
        self._files.setdefault(file_id, _FileTokens()).queue.append(request)
        self._advance(file_id)
        return request

    def grant_if_free(self, client_id: int, file_id: int, start: int, end: int,
                      mode: int) -> Grant | None:
        """[start, end) in `mode` now if no other client holds or waits for a conflicting
        token on the file, else None: nobody is asked to give anything up (an open's grant,
        which nobody waits for)."""
        if client_id not in self._grant_seq:
            raise SessionGone(client_id)
        request = Request(client_id, file_id, start, end, mode, lambda grant, error: None)
        tokens = self._files.setdefault(file_id, _FileTokens())
        if self._conflicting_holders(tokens, request) or any(
                q.client_id != client_id and q.start < end and start < q.end
                and _conflict(q.mode, mode) for q in tokens.queue):
            self._advance(file_id)  # (forgets the entry made above if nobody holds anything)
            return None
        return self._grant(tokens, request)

    def take_kept(self, client_id: int, file_id: int, mode: int,
                  openers: list[int]) -> Grant | None:
        """The whole file in `mode` for an open, if only tokens of clients that do not have the
        file open (kept unused after a close, pfs/client/lockcache.py) are in the way and no
        request waits for it: those are taken (dropped, or downgraded for READ) without a
        revocation, as nothing is cached or written under them, and their clients use none
        of them again unasked (a reopen's reply says what they still hold). Else None."""
        tokens = self._files.get(file_id)
        if tokens is None or any(q.client_id != client_id and _conflict(q.mode, mode)
                                 for q in tokens.queue):
            return None
        request = Request(client_id, file_id, 0, INFINITY, mode, lambda grant, error: None)
        holders = self._conflicting_holders(tokens, request)
        if not holders or not holders.isdisjoint(openers):
            return None
        for holder in holders:
            tokens.holders[holder].cap(0, INFINITY, READ if mode == READ else DROP)
            tokens.changed(holder)
        grant = self._grant(tokens, request)
        self._advance(file_id)  # (requests that waited for those tokens)
        return grant

    def restore(self, client_id: int, file_id: int,
                claims: list[tuple[int, int, int]]) -> int | None:
        """Gives the client the tokens it claims to hold after a metaserver restart
        (recovery.py): all of them, or none if one conflicts with another client's; then that
        client is returned. The claims must be valid ranges and modes."""
        tokens = self._files.get(file_id)
        if tokens is not None:
            for holder, ranges in tokens.holders.items():
                if holder != client_id and any(
                        _conflict(level, mode) for start, end, mode in claims
                        for _, _, level in ranges.overlapping(start, end)):
                    return holder
        if claims:
            tokens = self._files.setdefault(file_id, _FileTokens())
            mine = tokens.holders.setdefault(client_id, RangeMap())
            for start, end, mode in claims:
                mine.raise_to(start, end, mode)
            tokens.changed(client_id)
        return None

    def cancel(self, request: Request) -> None:
        """The requester went away (its call was cancelled): forget the request."""
        if not request.finished:
            tokens = self._files[request.file_id]
            self._finish(tokens, request, error=RequestCancelled("the request was cancelled"))
            self._advance(request.file_id)

    def acknowledge(self, client_id: int, revoke_id: int) -> bool:
        """Applies an acknowledged revocation; False for an unknown or stale one (ignored)."""
        revocation = self._revocations.get(revoke_id)
        if revocation is None or revocation.client_id != client_id:
            return False
        del self._revocations[revoke_id]
        revocation.done = True
        held = self._files.get(revocation.file_id)
        if held and client_id in held.holders:
            held.holders[client_id].cap(revocation.start, revocation.end, revocation.to_mode)
            held.changed(client_id)
        self._advance(revocation.file_id)
        return True

    def release_file(self, client_id: int, file_id: int, keep: bool = False) -> None:
        """Drops all of the client's tokens on the file (its close), unless it `keep`s them
        (unused, pfs/client/lockcache.py), and fails its requests still waiting on it: granted
        after the close, their tokens would have no owner."""
        tokens = self._files.get(file_id)
        if tokens is None:
            return
        for request in [r for r in tokens.queue if r.client_id == client_id]:
            self._finish(tokens, request, error=RequestCancelled(
                f"client {client_id} closed file {file_id}"))
        if not keep:
            self._release(client_id, file_id)
        self._advance(file_id)

    def overdue(self) -> set[int]:
        """Holders that left a revocation unanswered for revoke_timeout seconds (each reported
        once per timeout)."""
        now, late = self._clock(), set()
        for revocation in self._revocations.values():
            if now - revocation.issued_at >= self._revoke_timeout:
                log.warning("client %d did not acknowledge revocation #%d within %.0fs",
                            revocation.client_id, revocation.revoke_id, self._revoke_timeout)
                revocation.issued_at = now
                late.add(revocation.client_id)
        return late

    # --- queries ----------------------------------------------------------------------------
    def holdings(self, client_id: int, file_id: int) -> list[tuple[int, int, int]]:
        held = self._files.get(file_id)
        return list(held.holders.get(client_id, ())) if held else []

    def holds(self, client_id: int, file_id: int, start: int, end: int, mode: int) -> bool:
        """Whether the client holds every byte of [start, end) at `mode` or higher."""
        held = self._files.get(file_id)
        ranges = held.holders.get(client_id) if held else None
        return ranges is not None and ranges.covers(start, end, mode)

    def writers_beyond(self, file_id: int, offset: int) -> list[int]:
        """Clients holding a WRITE token on some byte at or after `offset` (they may have grown
        the file without telling anyone yet)."""
        held = self._files.get(file_id)
        if not held:
            return []
        return [client for client, ranges in held.candidates(READ)
                if any(level == WRITE for _, _, level in ranges.overlapping(offset, INFINITY))]

    # --- internals --------------------------------------------------------------------------
    def _advance(self, file_id: int) -> None:
        """Grants every request that can be granted now, in order, and revokes for the others."""
        tokens = self._files.get(file_id)
        if tokens is None:
            return
        progress = True
        while progress:
            progress = False
            for request in list(tokens.queue):
                if self._blocked_by_earlier(tokens, request):
                    continue
                holders = self._conflicting_holders(tokens, request)
                for holder in [h for h, r in request.revocations.items() if r.done]:
                    del request.revocations[holder]  # answered: a holder still in the way is asked again
                if not holders:
                    self._finish(tokens, request, grant=self._grant(tokens, request))
                    progress = True
                    break
                for holder in holders - request.revocations.keys():
                    self._revoke(file_id, holder, request)
        if not tokens.holders and not tokens.queue:
            del self._files[file_id]

    def _finish(self, tokens: _FileTokens, request: Request, grant: Grant | None = None,
                error: Exception | None = None) -> None:
        tokens.queue.remove(request)
        request.finished = True
        self._cancel_revocations(request)
        request.on_done(grant, error)

    def _blocked_by_earlier(self, tokens: _FileTokens, request: Request) -> bool:
        for earlier in tokens.queue:
            if earlier is request:
                return False
            if (earlier.client_id != request.client_id and earlier.start < request.end
                    and request.start < earlier.end and _conflict(earlier.mode, request.mode)):
                return True
        return False

    def _conflicting_holders(self, tokens: _FileTokens, request: Request) -> set[int]:
        return {holder for holder, ranges in tokens.candidates(request.mode)
                if holder != request.client_id
                and any(_conflict(level, request.mode)
                        for _, _, level in ranges.overlapping(request.start, request.end))}

    def _revoke(self, file_id: int, holder: int, request: Request) -> None:
        revocation = Revocation(
            revoke_id=next(self._revoke_ids), client_id=holder, file_id=file_id,
            start=request.start, end=request.end,
            to_mode=READ if request.mode == READ else DROP,
            granted_upto=self._grant_seq.get(holder, 0), issued_at=self._clock())
        request.revocations[holder] = revocation
        self._revocations[revocation.revoke_id] = revocation
        log.debug("revoke #%d: client %d gives up [%d, %d) of file %d for client %d",
                  revocation.revoke_id, holder, request.start, request.end, file_id,
                  request.client_id)
        self._send_revoke(revocation)

    def _grant(self, tokens: _FileTokens, request: Request) -> Grant:
        lo, hi = 0, INFINITY
        blockers = [(s, e) for holder, ranges in tokens.candidates(request.mode)
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
        tokens.changed(request.client_id)
        seq = self._grant_seq[request.client_id] + 1
        self._grant_seq[request.client_id] = seq
        log.debug("grant: client %d holds [%d, %d) of file %d in mode %d", request.client_id,
                  lo, hi, request.file_id, request.mode)  # (the failover test reads these)
        return Grant(lo, hi, request.mode, seq)

    def _release(self, client_id: int, file_id: int) -> None:
        tokens = self._files.get(file_id)
        if tokens is None:
            return
        tokens.holders.pop(client_id, None)
        tokens.changed(client_id)
        # Its revocations on the file are moot; a late acknowledgement must not touch tokens
        # the client may be granted again.
        for revoke_id, revocation in list(self._revocations.items()):
            if revocation.client_id == client_id and revocation.file_id == file_id:
                revocation.done = True
                del self._revocations[revoke_id]
        for request in tokens.queue:
            request.revocations.pop(client_id, None)

    def _cancel_revocations(self, request: Request) -> None:
        """A request that leaves (granted, because other acknowledgements made room, or not)
        takes its unanswered revocations along: applied later, their acknowledgements could
        take back bytes granted to the holder in the meantime, which the holder's client would
        then still use; and nobody waits for them."""
        for revocation in request.revocations.values():
            if not revocation.done:
                revocation.done = True
                self._revocations.pop(revocation.revoke_id, None)
        request.revocations.clear()
