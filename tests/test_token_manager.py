"""The metaserver's byte-range token manager (docs/consistency.md), driven step by step by the test.

Conventions: token ranges are half-open [start, end). The documented "500–800" (inclusive) is
[500, 801) here, so "a holder of 500–800 asked to give up 600–700 keeps 500–599 and 701–800"
reads: a holder of [500, 801) asked to give up [600, 701) keeps [500, 600) and [701, 801).

The manager is a single-threaded state machine, so the harness needs no threads and no sleeps:
- `send_revoke` only records: every revocation lands in `h.sent` (all of them, in order) and in
  `h.inbox` (those not acknowledged yet).
- After each call the harness makes, the revocations of clients not in `hold` are acknowledged
  at once, as their clients would (their own tables are capped first); clients in `hold` keep
  theirs until the test calls `h.ack(revocation)` or `h.ack_all(client)`.
- A request is a `Pending`: it records what `on_done` was told, so `p.waiting` means the request
  is still queued and `p.result()` returns the grant (or raises the error) it received.
- Time is a fake clock the test advances; `overdue()` reads it.
- `h.tables[client, file]` is the client's own token table: grants raise it, the revocations it
  acknowledges cap it, closing the file clears it.
"""
from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfs.protocol.ranges import INFINITY, RangeMap
from pfs_servers.metaserver.tokens import (DROP, READ, WRITE, RequestCancelled, SessionGone,
                                           TokenManager)

SCRATCH = 999    # helper client used to carve exact tokens
CLIENTS = list(range(1, 21)) + [SCRATCH]
F = 7            # the file most tests use
TIMEOUT = 30.0   # revoke_timeout of every harness


# --- harness ----------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Pending:
    """One request; records every (grant, error) its on_done received."""

    def __init__(self, h: "Harness", client: int, file_id: int, start: int, end: int,
                 mode: int) -> None:
        self.h, self.client, self.file_id = h, client, file_id
        self.args = (client, file_id, start, end, mode)
        self.outcomes: list = []
        self.request = h.tm.request(client, file_id, start, end, mode, self._done)

    def _done(self, grant, error) -> None:  # called inside the manager: record only
        self.outcomes.append((grant, error))
        self.h.completed.append(self)
        if grant is not None:
            self.h.tables[self.client, self.file_id].raise_to(grant.start, grant.end, grant.mode)

    @property
    def waiting(self) -> bool:
        return not self.outcomes

    def result(self):
        assert len(self.outcomes) == 1, f"request {self.args}: on_done got {self.outcomes}"
        grant, error = self.outcomes[0]
        if error is not None:
            raise error
        return grant


class Harness:
    def __init__(self, hold=(), revoke_timeout: float = TIMEOUT) -> None:
        self.hold = set(hold)
        self.clock = Clock()
        self.sent: list = []
        self.inbox: list = []
        self.completed: list[Pending] = []  # in the order on_done was called
        self.pending: list[Pending] = []
        self.tables: dict = defaultdict(RangeMap)
        self.tm = TokenManager(self._send_revoke, revoke_timeout, clock=self.clock)
        for c in CLIENTS:
            self.tm.add_client(c)

    def _send_revoke(self, revocation) -> None:  # called inside the manager: record only
        self.sent.append(revocation)
        self.inbox.append(revocation)

    def _settle(self) -> None:
        """Acknowledges every revocation of a client that is not held, until none is left."""
        while auto := [r for r in self.inbox if r.client_id not in self.hold]:
            self._acknowledge(auto[0])

    def _acknowledge(self, revocation) -> bool:
        """What a client does: gives the range up in its own table, then acknowledges."""
        if revocation in self.inbox:
            self.inbox.remove(revocation)
        self.tables[revocation.client_id, revocation.file_id].cap(
            revocation.start, revocation.end, revocation.to_mode)
        return self.tm.acknowledge(revocation.client_id, revocation.revoke_id)

    # --- what the tests call ------------------------------------------------------------------
    def request(self, client, file_id, start, end, mode) -> Pending:
        p = Pending(self, client, file_id, start, end, mode)
        self.pending.append(p)
        self._settle()
        return p

    def acquire(self, client, file_id, start, end, mode):
        """A request that must be granted without waiting on a held client: returns the grant."""
        p = self.request(client, file_id, start, end, mode)
        assert not p.waiting, f"request {p.args} waits"
        return p.result()

    def ack(self, revocation) -> bool:
        ok = self._acknowledge(revocation)
        self._settle()
        return ok

    def ack_all(self, client: int) -> int:
        """The client acknowledges every revocation it was sent and has not acknowledged yet."""
        mine = [r for r in self.inbox if r.client_id == client]
        for r in mine:
            self.ack(r)
        return len(mine)

    def to(self, client: int) -> list:
        return [r for r in self.sent if r.client_id == client]

    def release(self, client: int, file_id: int) -> None:
        self.tables.pop((client, file_id), None)
        self.tm.release_file(client, file_id)
        self._settle()

    def remove(self, client: int) -> None:
        for key in [k for k in self.tables if k[0] == client]:
            del self.tables[key]
        self.tm.remove_client(client)
        self._settle()

    def cancel(self, p: Pending) -> None:
        self.tm.cancel(p.request)
        self._settle()

    def carve(self, file_id: int, pieces) -> None:
        """Makes each (client, start, end, mode) hold exactly that token: SCRATCH takes the
        whole file, each client takes its piece (revoking only that piece from SCRATCH, whose
        remaining tokens bound the grant), then SCRATCH closes the file. Pieces must not
        conflict with each other."""
        assert SCRATCH not in self.hold
        self.acquire(SCRATCH, file_id, 0, INFINITY, WRITE)
        for client, start, end, mode in pieces:
            g = self.acquire(client, file_id, start, end, mode)
            assert (g.start, g.end) == (start, end), g
        self.release(SCRATCH, file_id)
        for client, start, end, mode in pieces:
            assert (start, end, mode) in self.tm.holdings(client, file_id)

    def close(self) -> None:
        """Ends every session: then every request must have been answered exactly once."""
        for c in CLIENTS:
            self.remove(c)
        for p in self.pending:
            assert len(p.outcomes) == 1, f"request {p.args}: on_done got {p.outcomes}"


@pytest.fixture
def make():
    made: list[Harness] = []

    def factory(hold=(), **kw) -> Harness:
        h = Harness(hold, **kw)
        made.append(h)
        return h
    yield factory
    for h in made:
        h.close()


def RangeMap_of(pieces) -> RangeMap:
    m = RangeMap()
    for s, e, lvl in pieces:
        m.raise_to(s, e, lvl)
    return m


def write_conflicts(holdings: dict[int, list]) -> list:
    """Pairs of tokens of different clients that overlap with at least one WRITE."""
    out = []
    for (a, ta), (b, tb) in itertools.combinations(holdings.items(), 2):
        for s1, e1, l1 in ta:
            for s2, e2, l2 in tb:
                if s1 < e2 and s2 < e1 and WRITE in (l1, l2):
                    out.append(((a, s1, e1, l1), (b, s2, e2, l2)))
    return out


# --- grants and expansion ---------------------------------------------------------------------
def test_lone_client_grant_expands_to_whole_file(make):
    """With nobody else on the file, a grant covers [0, INFINITY) in the asked mode, and it is
    answered inside request() itself, exactly once."""
    h = make()
    p = h.request(1, F, 100, 200, WRITE)
    assert p.request.finished and len(p.outcomes) == 1
    g = p.result()
    assert (g.start, g.end, g.mode) == (0, INFINITY, WRITE)
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]
    assert h.sent == []


def test_expansion_stops_at_other_clients_write_token(make):
    """Next to another client's WRITE token [1000, 2000), a READ for [0, 10) expands to
    [0, 1000) and a READ for [3000, 3010) to [2000, INFINITY), without revoking anything."""
    h = make()
    h.carve(F, [(2, 1000, 2000, WRITE)])
    sent = len(h.sent)
    g1 = h.acquire(1, F, 0, 10, READ)
    assert (g1.start, g1.end, g1.mode) == (0, 1000, READ)
    g2 = h.acquire(1, F, 3000, 3010, READ)
    assert (g2.start, g2.end, g2.mode) == (2000, INFINITY, READ)
    assert len(h.sent) == sent
    assert h.tm.holdings(1, F) == [(0, 1000, READ), (2000, INFINITY, READ)]
    assert h.tm.holdings(2, F) == [(1000, 2000, WRITE)]


def test_read_expands_over_other_readers(make):
    """Other clients' READ tokens do not limit a READ grant (they do not conflict), but do limit
    a WRITE grant."""
    h = make()
    h.carve(F, [(2, 1000, 2000, READ)])
    g = h.acquire(1, F, 0, 10, READ)
    assert (g.start, g.end) == (0, INFINITY)
    h.release(1, F)
    g = h.acquire(3, F, 0, 10, WRITE)
    assert (g.start, g.end) == (0, 1000)


def test_own_tokens_never_conflict(make):
    """A client's requests never revoke its own tokens, and a READ grant over its own WRITE
    token leaves it WRITE."""
    h = make()
    h.acquire(1, F, 0, 10, WRITE)
    g = h.acquire(1, F, 50, 60, READ)
    assert h.sent == []
    assert (g.start, g.end, g.mode) == (0, INFINITY, READ)
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]


def test_bad_requests_rejected(make):
    """Empty, inverted, out-of-range or unknown-mode requests raise ValueError at once; on_done
    is never called and nothing is held."""
    h = make()
    told = []
    for args in [(5, 5, READ), (6, 5, WRITE), (-1, 5, READ), (0, INFINITY + 1, READ),
                 (0, 10, 0), (0, 10, 3)]:
        with pytest.raises(ValueError):
            h.tm.request(1, F, *args, lambda g, e: told.append((g, e)))
    assert told == []
    assert h.tm.holdings(1, F) == []


def test_holds_reports_coverage_at_mode(make):
    """holds(c, f, start, end, mode) is true when every byte of [start, end) is held at `mode`
    or higher by that client: a WRITE token also holds READ, a partly held range does not
    count, nor does another client's token or an unknown file."""
    h = make()
    h.carve(F, [(1, 100, 200, WRITE), (2, 200, 300, READ)])
    assert h.tm.holds(1, F, 100, 200, WRITE) and h.tm.holds(1, F, 150, 160, READ)
    assert not h.tm.holds(1, F, 150, 250, READ)
    assert h.tm.holds(2, F, 200, 300, READ) and not h.tm.holds(2, F, 200, 300, WRITE)
    assert not h.tm.holds(3, F, 100, 200, READ)
    assert not h.tm.holds(1, F + 1, 100, 200, READ)


# --- readers ----------------------------------------------------------------------------------
def test_readers_never_conflict(make):
    """Many clients reading overlapping ranges at once are all granted, without revocations."""
    h = make(hold=CLIENTS[:-1])
    reqs = [h.request(c, F, 10 * c, 10 * c + 500, READ) for c in range(1, 13)]
    for r in reqs:
        g = r.result()
        assert g.mode == READ and g.start <= 10 * r.client and 10 * r.client + 500 <= g.end
    assert h.sent == []
    for c in range(1, 13):
        assert h.tm.holdings(c, F) == [(0, INFINITY, READ)]


# --- conflicts --------------------------------------------------------------------------------
@pytest.mark.parametrize("held_mode", [READ, WRITE])
def test_write_revokes_holder_and_waits_for_ack(make, held_mode):
    """A WRITE request over another client's READ or WRITE token revokes exactly the requested
    range (to DROP) and is granted only after the holder acknowledges."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, held_mode)  # [0, INFINITY)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.sent
    assert (rev.client_id, rev.file_id, rev.start, rev.end, rev.to_mode) == (1, F, 100, 200, DROP)
    assert req.waiting, "granted before the holder acknowledged"
    assert h.tm.holdings(1, F) == [(0, INFINITY, held_mode)]  # changes only on the ack
    assert h.ack(rev) is True
    g = req.result()
    assert (g.start, g.end, g.mode) == (100, 200, WRITE)
    assert h.tm.holdings(1, F) == [(0, 100, held_mode), (200, INFINITY, held_mode)]
    assert h.tm.holdings(2, F) == [(100, 200, WRITE)]


def test_read_waits_for_writer(make):
    """A READ request over another client's WRITE token waits for its acknowledgement."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 0, 10, READ)
    (rev,) = h.sent
    assert req.waiting
    h.ack(rev)
    assert req.result().mode == READ


def test_request_waits_for_every_holder(make):
    """A WRITE over several readers is granted only after all of them acknowledged."""
    h = make(hold=[1, 2, 3])
    for c in (1, 2, 3):
        h.acquire(c, F, 0, 100, READ)
    req = h.request(4, F, 0, 100, WRITE)
    revs = list(h.sent)
    assert sorted(r.client_id for r in revs) == [1, 2, 3]
    for r in revs[:-1]:
        h.ack(r)
        assert req.waiting
    h.ack(revs[-1])
    assert req.result().mode == WRITE
    assert write_conflicts({c: h.tm.holdings(c, F) for c in (1, 2, 3, 4)}) == []


def test_partial_revocation_keeps_the_rest(make):
    """Documented: a holder of 500–800 asked for 600–700 keeps 500–599 and 701–800. Half-open: A
    holds WRITE [500, 801); B asks [600, 701); the revocation to A is exactly [600, 701) and
    after the ack A holds [500, 600) and [701, 801)."""
    h = make(hold=[1])
    h.carve(F, [(1, 500, 801, WRITE)])
    n0 = len(h.sent)
    req = h.request(2, F, 600, 701, WRITE)
    (rev,) = h.sent[n0:]
    assert (rev.client_id, rev.start, rev.end, rev.to_mode) == (1, 600, 701, DROP)
    assert req.waiting
    h.ack(rev)
    g = req.result()
    assert (g.start, g.end) == (600, 701)  # bounded by what A kept
    assert h.tm.holdings(1, F) == [(500, 600, WRITE), (701, 801, WRITE)]
    assert h.tm.holdings(2, F) == [(600, 701, WRITE)]


def test_read_request_downgrades_writer(make):
    """A READ request over a WRITE token revokes it to READ only: the holder keeps a READ token
    there (and WRITE around it), and can then read it again without any revocation."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, READ)
    (rev,) = h.sent
    assert (rev.client_id, rev.start, rev.end, rev.to_mode) == (1, 100, 200, READ)
    assert req.waiting
    h.ack(rev)
    g = req.result()
    assert (g.start, g.end, g.mode) == (100, 200, READ)
    assert h.tm.holdings(1, F) == [(0, 100, WRITE), (100, 200, READ), (200, INFINITY, WRITE)]
    h.acquire(1, F, 120, 130, READ)
    assert len(h.sent) == 1


def test_acknowledge_rejects_unknown_and_duplicate(make):
    """acknowledge is False (and changes nothing) for an unknown id or a second acknowledgement
    of the same revocation."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.sent
    assert h.tm.acknowledge(1, 10**6) is False
    assert req.waiting
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]
    assert h.tm.acknowledge(1, rev.revoke_id) is True
    req.result()
    assert h.tm.acknowledge(1, rev.revoke_id) is False
    assert h.tm.holdings(1, F) == [(0, 100, WRITE), (200, INFINITY, WRITE)]


def test_ack_naming_another_clients_revocation_is_ignored(make):
    """An acknowledgement naming another client's revocation is ignored (False, nothing
    changes): the real holder's acknowledgement still lets the waiting request through.
    (Regression: acknowledge() once dropped the revocation before checking the client.)"""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.sent
    assert h.tm.acknowledge(3, rev.revoke_id) is False   # someone else's id: ignored
    assert req.waiting
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]
    assert h.tm.acknowledge(1, rev.revoke_id) is True, "the holder's real ack was rejected"
    assert req.result().mode == WRITE


# --- non-conflicting requests run in parallel ---------------------------------------------------
@pytest.mark.parametrize("order", list(itertools.permutations([1, 2, 3])))
def test_spec_three_disjoint_writers_run_together(make, order):
    """Documented: three clients writing 300–500, 800–1100 and 200–250 of one file run at the same
    time, in any arrival order. The first grant expands over the whole file, so later ones
    revoke only the unused part of it: no revocation ever touches a range its holder asked for,
    and each is granted as soon as those unused parts are given back."""
    ranges = {1: (300, 501), 2: (800, 1101), 3: (200, 251)}
    h = make()
    reqs = [h.request(c, F, *ranges[c], WRITE) for c in order]
    for p in reqs:
        g = p.result()
        s, e = ranges[p.client]
        assert g.mode == WRITE and g.start <= s and e <= g.end
    for rev in h.sent:
        s, e = ranges[rev.client_id]
        assert not (rev.start < e and s < rev.end), f"revoked a range in use: {rev}"
    held = {c: h.tm.holdings(c, F) for c in ranges}
    assert write_conflicts(held) == []
    for c, (s, e) in ranges.items():
        assert RangeMap_of(held[c]).covers(s, e, WRITE)


def test_disjoint_request_not_blocked_by_waiting_ones(make):
    """While B waits for A's revocation and C waits behind B (C overlaps B), a request D for a
    range that conflicts with none of them is granted at once, without any revocation; its
    expansion stops short of the waiting requests and A's token."""
    h = make(hold=[1, 2, 3, 4])
    h.carve(F, [(1, 0, 100, WRITE)])
    n0 = len(h.sent)
    b = h.request(2, F, 10, 20, WRITE)
    (rev_a,) = h.sent[n0:]
    assert (rev_a.client_id, rev_a.start, rev_a.end) == (1, 10, 20)
    c = h.request(3, F, 15, 25, WRITE)
    g = h.acquire(4, F, 500, 600, WRITE)
    assert (g.start, g.end) == (100, INFINITY)
    assert len(h.sent) == n0 + 1, "C must not revoke anything while B, before it, waits"
    assert b.waiting and c.waiting
    h.ack(rev_a)
    gb = b.result()
    assert (gb.start, gb.end) == (10, 20)  # bounded by A's rest and by C, still waiting
    revs = h.sent[n0 + 1:]  # C revokes [15, 25) from B and from A
    assert sorted((r.client_id, r.start, r.end) for r in revs) == [(1, 15, 25), (2, 15, 25)]
    assert c.waiting
    for r in revs:
        h.ack(r)
    assert c.result().mode == WRITE


def test_expansion_stops_at_waiting_request(make):
    """A grant does not expand over a conflicting request still waiting (it would only have to be
    revoked again): with A on [0, 100) and B waiting for [50, 150), D's request for [500, 600) is
    granted [150, INFINITY), and B then needs nothing from D."""
    h = make(hold=[1, 4])
    h.carve(F, [(1, 0, 100, WRITE)])
    b = h.request(2, F, 50, 150, WRITE)
    assert b.waiting
    g = h.acquire(4, F, 500, 600, WRITE)
    assert (g.start, g.end) == (150, INFINITY)
    h.ack_all(1)
    assert (b.result().start, b.result().end) == (50, 150)
    assert h.to(4) == []


def test_write_behind_waiting_request_does_not_block_reader_elsewhere(make):
    """A queue of conflicting requests on [0, 100) does not delay a READ of [200, 300)."""
    h = make(hold=[1])
    h.carve(F, [(1, 0, 100, READ)])
    reqs = [h.request(c, F, 0, 100, WRITE) for c in (2, 3, 4)]
    g = h.acquire(5, F, 200, 300, READ)
    assert g.mode == READ
    assert all(r.waiting for r in reqs)


# --- fairness ---------------------------------------------------------------------------------
def test_waiting_write_not_starved_by_later_reads(make):
    """A WRITE request waiting for a reader's acknowledgement is served before READ requests
    that arrive later and overlap it, although those do not conflict with any token held: they
    queue behind it. A later READ that does not overlap it is served at once."""
    h = make(hold=[1])
    h.carve(F, [(1, 0, INFINITY, READ)])
    w = h.request(2, F, 0, 100, WRITE)
    n = len(h.sent)
    readers = [h.request(c, F, 10 * i, 10 * i + 10, READ)  # each reads a tenth of w's range
               for i, c in enumerate(range(10, 16))]
    assert all(r.waiting for r in readers), "a later read overtook the waiting write"
    assert w.waiting
    assert len(h.sent) == n, "readers must not revoke anything while the write waits"
    h.acquire(20, F, 5000, 5100, READ)  # disjoint: not held up
    h.ack_all(1)
    g = w.result()
    assert (g.start, g.end, g.mode) == (0, 100, WRITE)
    for r in readers:
        assert r.result().mode == READ
    # each reader had to downgrade its part of the writer's token: all were served after it
    assert sorted((r.start, r.end, r.to_mode) for r in h.to(2)) == \
        [(10 * i, 10 * i + 10, READ) for i in range(len(readers))]


def test_conflicting_requests_served_in_arrival_order(make):
    """Writers queued on one range are granted in the order they asked."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    reqs = [h.request(c, F, 0, 10, WRITE) for c in (2, 3, 4, 5)]
    assert all(r.waiting for r in reqs)
    h.ack_all(1)
    assert [r.client for r in h.completed[1:]] == [2, 3, 4, 5]
    for r in reqs:
        r.result()
    # each was granted while its predecessor held the range: it revoked exactly that one
    assert [r.client_id for r in h.sent] == [1, 2, 3, 4]


# --- release, cancel, removal, late acknowledgements --------------------------------------------
def test_release_file_frees_tokens_and_unblocks_waiter(make):
    """release_file drops the holder's tokens on that file only; a request waiting for its
    acknowledgement is granted without it, and the now-moot acknowledgement is ignored."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(1, F + 1, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.sent
    assert req.waiting
    h.release(1, F)
    g = req.result()
    assert (g.start, g.end) == (0, INFINITY)
    assert h.tm.holdings(1, F) == []
    assert h.tm.holdings(1, F + 1) == [(0, INFINITY, WRITE)]
    assert h.ack(rev) is False
    assert h.tm.holdings(2, F) == [(0, INFINITY, WRITE)]


def test_release_file_fails_own_waiting_requests(make):
    """Closing a file fails the closer's requests still waiting on it with RequestCancelled
    (granted after the close, their tokens would have no owner); its requests on other files
    and other clients' requests keep waiting."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(1, F + 1, 0, 10, WRITE)
    mine = h.request(2, F, 0, 10, WRITE)
    mine_elsewhere = h.request(2, F + 1, 0, 10, WRITE)
    other = h.request(3, F, 0, 10, WRITE)
    h.release(2, F)
    with pytest.raises(RequestCancelled):
        mine.result()
    assert mine_elsewhere.waiting and other.waiting
    h.ack_all(1)
    assert other.result().mode == WRITE and mine_elsewhere.result().mode == WRITE


def test_cancelled_request_takes_its_revocations_along(make):
    """cancel() fails a waiting request with RequestCancelled; its revocations are withdrawn
    (a late acknowledgement is ignored, the holder keeps its tokens), requests queued behind it
    go ahead, and cancelling an answered request changes nothing."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    b = h.request(2, F, 100, 200, WRITE)
    c = h.request(3, F, 150, 250, WRITE)
    (rev_b,) = h.sent
    h.cancel(b)
    with pytest.raises(RequestCancelled):
        b.result()
    (rev_c,) = h.sent[1:]  # C, no longer behind B, asks A itself
    assert (rev_c.client_id, rev_c.start, rev_c.end) == (1, 150, 250)
    assert h.ack(rev_b) is False
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]
    assert c.waiting
    h.ack(rev_c)
    assert c.result().mode == WRITE
    h.cancel(b)
    h.cancel(c)
    assert len(b.outcomes) == 1 and len(c.outcomes) == 1
    assert h.tm.holdings(3, F) == [(150, 250, WRITE)]


def test_late_ack_after_release_does_not_touch_new_tokens(make):
    """A revocation whose holder then closed the file is moot: acknowledging it after the holder
    was granted the range again changes nothing."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (stale,) = h.sent
    h.release(1, F)
    req.result()
    g = h.acquire(1, F, 100, 200, WRITE)  # revokes from 2 (acknowledged at once)
    assert g.start <= 100 and 200 <= g.end
    before = h.tm.holdings(1, F)
    assert RangeMap_of(before).covers(100, 200, WRITE)
    assert h.tm.acknowledge(1, stale.revoke_id) is False
    assert h.tm.holdings(1, F) == before


def test_remove_holder_unblocks_waiter(make):
    """remove_client drops all of a holder's tokens on every file; waiters are granted."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(1, F + 1, 0, 10, READ)
    req = h.request(2, F, 0, 10, READ)
    (rev,) = h.sent
    assert req.waiting
    h.remove(1)
    assert req.result().mode == READ
    assert h.tm.holdings(1, F) == [] and h.tm.holdings(1, F + 1) == []
    assert h.ack(rev) is False
    assert h.tm.writers_beyond(F, 0) == []


def test_removed_client_requests_fail(make):
    """A waiting request of a removed client fails with SessionGone and stops holding up
    requests queued behind it; new requests of a removed (or never added) client fail at once."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    b = h.request(2, F, 0, 10, WRITE)
    c = h.request(3, F, 0, 10, WRITE)
    assert len(h.sent) == 1 and c.waiting
    h.remove(2)
    with pytest.raises(SessionGone):
        b.result()
    rev_c = h.sent[1]  # C, no longer behind B, now asks A itself
    assert (rev_c.client_id, rev_c.start, rev_c.end) == (1, 0, 10)
    assert c.waiting  # still needs A
    h.ack(rev_c)
    assert c.result().mode == WRITE
    assert h.tm.holdings(2, F) == []
    told = []
    for client in (2, 12345):
        with pytest.raises(SessionGone):
            h.tm.request(client, F, 0, 10, READ, lambda g, e: told.append((g, e)))
    assert told == []
    h.tm.add_client(2)  # a new session may use the id again
    assert h.acquire(2, F + 1, 0, 10, READ).grant_seq == 1


def test_orphaned_revocation_ack_never_takes_back_a_later_grant(make):
    """(Regression.) B's session ends while B waits for A's revocation R of [100, 200). A (e.g.
    an operation running while A writes back for R) asks for [100, 200) again and is granted it
    at once (grant 2, after R's granted_upto 1). A client that applied grant 2 after handling R
    believes it holds WRITE [100, 200); if the manager applied R's acknowledgement now it would
    cap A's table there, and C would be granted WRITE on the same bytes with no revocation to
    A, i.e. two writers. Expected: an acknowledgement never removes bytes granted after its
    revocation was sent, so C's request must revoke from A."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)                  # A: WRITE [0, INFINITY), grant 1
    b = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.sent                                # R to A: [100, 200), granted_upto 1
    h.remove(2)
    with pytest.raises(SessionGone):
        b.result()
    g = h.acquire(1, F, 100, 200, WRITE)           # nothing conflicts any more: granted at once
    assert g.grant_seq == 2 > rev.granted_upto and g.start <= 100 and 200 <= g.end
    h.tm.acknowledge(1, rev.revoke_id)             # A finishes handling R
    c = h.request(3, F, 100, 200, WRITE)
    assert c.waiting, "C was granted A's grant-2 bytes without any revocation to A"
    assert RangeMap_of(h.tm.holdings(1, F)).covers(100, 200, WRITE)


def _two_readers_granted_by_one_ack(h: Harness):
    """A holds WRITE [0, INFINITY) (grant 1); B asks READ [0, 200) and C READ [0, 100), which
    do not conflict with each other, so each revokes from A. A acknowledges B's revocation
    only: that downgrade also covers C, so both are granted, and C's revocation R is left
    unanswered with nobody waiting for it. Returns R."""
    h.acquire(1, F, 0, 10, WRITE)
    b = h.request(2, F, 0, 200, READ)
    c = h.request(3, F, 0, 100, READ)
    rev_b, rev_c = h.sent
    assert (rev_b.client_id, rev_c.client_id) == (1, 1)
    assert (rev_c.start, rev_c.end, rev_c.to_mode, rev_c.granted_upto) == (0, 100, READ, 1)
    h.ack(rev_b)
    assert b.result().mode == READ and c.result().mode == READ
    return rev_c


def test_ack_of_revocation_outlived_by_its_request_never_takes_back_a_later_grant(make):
    """Same hazard as the orphaned revocation above, reached through a grant instead of a
    session end: once C is granted, its revocation R to A is moot. B and C close the file; A
    asks WRITE [0, 100) again and is granted it at once (grant 2 > R's granted_upto 1). A's
    client handles R before applying grant 2, so it believes it holds WRITE [0, 100); R's
    acknowledgement must not cap that in the manager, or D's READ is granted with no
    revocation to A while A writes."""
    h = make(hold=[1])
    rev_c = _two_readers_granted_by_one_ack(h)
    h.release(2, F)
    h.release(3, F)
    g = h.acquire(1, F, 0, 100, WRITE)
    assert g.grant_seq == 2 > rev_c.granted_upto
    h.tm.acknowledge(1, rev_c.revoke_id)           # A finishes handling R
    assert RangeMap_of(h.tm.holdings(1, F)).covers(0, 100, WRITE), \
        "a moot revocation's acknowledgement took back grant 2"
    d = h.request(4, F, 0, 100, READ)
    assert d.waiting, "D was granted READ over A's WRITE bytes without any revocation to A"


# --- overdue holders --------------------------------------------------------------------------
def test_silent_holder_is_reported_overdue(make):
    """A holder that does not acknowledge within revoke_timeout is reported by overdue() (not
    before, and once per timeout period); the waiter is granted once the caller ends that
    session (remove_client), not before, and then nobody is overdue."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 0, 10, WRITE)
    h.clock.advance(TIMEOUT - 0.1)
    assert h.tm.overdue() == set()
    h.clock.advance(0.1)
    assert h.tm.overdue() == {1}
    assert h.tm.overdue() == set(), "reported twice in one timeout period"
    assert req.waiting, "granted while the overdue holder still held the token"
    h.clock.advance(TIMEOUT)
    assert h.tm.overdue() == {1}
    h.remove(1)
    assert req.result().mode == WRITE
    h.clock.advance(10 * TIMEOUT)
    assert h.tm.overdue() == set()


def test_prompt_holder_is_not_reported_overdue(make):
    """Holders acknowledging within revoke_timeout (timed from each revocation's sending) are
    never reported."""
    h = make(hold=[1, 2])
    h.acquire(1, F, 0, 10, WRITE)
    r2 = h.request(2, F, 0, 10, WRITE)
    h.clock.advance(TIMEOUT - 1)
    assert h.tm.overdue() == set()
    h.ack_all(1)
    r2.result()
    r1 = h.request(1, F, 0, 10, READ)   # revokes from 2, sent now
    h.clock.advance(TIMEOUT - 1)
    assert h.tm.overdue() == set()
    h.ack_all(2)
    r1.result()
    h.clock.advance(10 * TIMEOUT)
    assert h.tm.overdue() == set()


def test_holder_not_overdue_for_revocation_nobody_waits_for(make):
    """A holder is reported overdue only for a revocation some request still waits for: once
    C is granted (by A's answer to B), leaving C's own revocation unanswered must not get A's
    session ended."""
    h = make(hold=[1])
    _two_readers_granted_by_one_ack(h)
    h.clock.advance(2 * TIMEOUT)
    assert h.tm.overdue() == set()


# --- grant numbers ----------------------------------------------------------------------------
def test_grant_seq_per_client_and_granted_upto(make):
    """grant_seq counts each client's grants 1, 2, 3... across files; a revocation carries the
    holder's last grant number at the time it was sent."""
    h = make(hold=[1])
    assert [h.acquire(1, f, 0, 10, READ).grant_seq for f in (1, 2, 3)] == [1, 2, 3]
    assert h.acquire(3, 9, 0, 10, READ).grant_seq == 1
    req = h.request(2, 1, 0, 10, WRITE)
    (rev,) = h.sent
    assert (rev.client_id, rev.granted_upto) == (1, 3)
    assert h.acquire(1, 4, 0, 10, READ).grant_seq == 4
    req2 = h.request(4, 2, 0, 10, WRITE)
    rev2 = h.sent[1]
    assert (rev2.client_id, rev2.granted_upto) == (1, 4)
    h.ack(rev)
    h.ack(rev2)
    assert req.result().grant_seq == 1 and req2.result().grant_seq == 1
    assert h.acquire(1, 5, 0, 10, WRITE).grant_seq == 5
    assert len({r.revoke_id for r in h.sent}) == len(h.sent)


# --- writers_beyond ---------------------------------------------------------------------------
def test_writers_beyond(make):
    """writers_beyond(file, off) lists the clients holding a WRITE token on a byte >= off;
    READ tokens do not count, and nothing is reported for an unknown file."""
    h = make()
    h.carve(F, [(1, 1000, 2000, WRITE), (2, 0, 500, WRITE), (3, 3000, 4000, READ)])
    assert sorted(h.tm.writers_beyond(F, 0)) == [1, 2]
    assert sorted(h.tm.writers_beyond(F, 499)) == [1, 2]  # 2 holds byte 499
    assert h.tm.writers_beyond(F, 500) == [1]
    assert h.tm.writers_beyond(F, 1999) == [1]
    assert h.tm.writers_beyond(F, 2000) == []
    assert h.tm.writers_beyond(F, 10**12) == []
    assert h.tm.writers_beyond(F + 1, 0) == []
    h.acquire(4, F, 5000, 5001, WRITE)  # expands to [4000, INFINITY)
    assert h.tm.writers_beyond(F, 10**12) == [4]


# --- randomized -------------------------------------------------------------------------------
RANDOM_CLIENTS = (1, 2, 3, 4)
ops_st = st.lists(st.tuples(st.sampled_from(RANDOM_CLIENTS), st.integers(0, 40),
                            st.integers(1, 40), st.sampled_from([READ, WRITE]),
                            st.integers(0, 9)),
                  min_size=1, max_size=25)


def tables_of(h: Harness) -> dict[int, list]:
    return {c: h.tm.holdings(c, F) for c in RANDOM_CLIENTS}


@settings(max_examples=60, deadline=None)
@given(ops_st)
def test_sequential_random_requests_keep_tokens_consistent(ops):
    """Random requests of 4 clients (one at a time, revocations acknowledged at once) and random
    closes: each grant covers its request, no two clients ever hold conflicting tokens, each
    revocation covers only the request's range, and a client that applies its grants and the
    revocations it acknowledged has exactly the manager's table."""
    h = Harness()
    try:
        for client, start, length, mode, close in ops:
            if close == 0:
                h.release(client, F)
                continue
            end = start + length
            n = len(h.sent)
            g = h.acquire(client, F, start, end, mode)
            assert g.mode == mode and g.start <= start and end <= g.end
            for rev in h.sent[n:]:
                assert (rev.start, rev.end) == (start, end) and rev.client_id != client
                assert rev.to_mode == (READ if mode == READ else DROP)
            held = tables_of(h)
            assert write_conflicts(held) == []
            assert RangeMap_of(held[client]).covers(start, end, mode)
            assert {c: list(h.tables[c, F]) for c in RANDOM_CLIENTS} == held
    finally:
        h.close()


def conflicts_with(a: tuple, b: tuple) -> bool:
    """Whether token/request (start, end, mode) a conflicts with b."""
    return a[0] < b[1] and b[0] < a[1] and WRITE in (a[2], b[2])


interleaved_st = st.lists(st.one_of(
    st.tuples(st.just("request"), st.sampled_from(RANDOM_CLIENTS), st.integers(0, 40),
              st.integers(1, 40), st.sampled_from([READ, WRITE])),
    st.tuples(st.just("ack"), st.integers(0, 50)),
    st.tuples(st.just("close"), st.sampled_from(RANDOM_CLIENTS)),
    st.tuples(st.just("cancel"), st.integers(0, 50)),
), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(interleaved_st)
def test_concurrent_random_requests_all_complete(ops):
    """Liveness and safety under contention: 4 clients with many requests outstanding at once,
    revocations acknowledged late and in any order, random closes and cancels. At every step no
    two clients hold conflicting tokens, the manager never believes a client holds less than
    the client does, and a request waits exactly when it conflicts with another client's token
    or an earlier waiting request. Once every revocation is acknowledged, every request has
    completed: granted (covering its range) or failed because it was cancelled or its file
    closed."""
    h = Harness(hold=CLIENTS)
    given_up: set[int] = set()  # ids of Pendings cancelled or closed while waiting
    try:
        for op in ops:
            if op[0] == "request":
                _, client, start, length, mode = op
                end = start + length
                mine = (start, end, mode)
                blocked = any(conflicts_with(mine, (s, e, lvl))
                              for c in RANDOM_CLIENTS if c != client
                              for s, e, lvl in h.tm.holdings(c, F))
                blocked |= any(conflicts_with(mine, p.args[2:]) for p in h.pending
                               if p.waiting and p.client != client)
                p = h.request(client, F, start, end, mode)
                assert p.waiting == blocked, f"{p.args} waiting={p.waiting}, conflicts={blocked}"
            elif op[0] == "ack" and h.inbox:
                h.ack(h.inbox[op[1] % len(h.inbox)])
            elif op[0] == "close":
                given_up |= {id(p) for p in h.pending if p.waiting and p.client == op[1]}
                h.release(op[1], F)
            elif op[0] == "cancel" and h.pending:
                p = h.pending[op[1] % len(h.pending)]
                given_up |= {id(p)} if p.waiting else set()
                h.cancel(p)
            held = tables_of(h)
            assert write_conflicts(held) == []
            for c in RANDOM_CLIENTS:
                for s, e, lvl in h.tables[c, F]:
                    assert RangeMap_of(held[c]).covers(s, e, lvl), \
                        f"client {c} holds {(s, e, lvl)} the manager does not know of"
        for _ in range(1000):
            if not h.inbox:
                break
            h.ack(h.inbox[0])
        assert h.inbox == []
        for p in h.pending:
            assert len(p.outcomes) == 1, f"request {p.args} never completed"
            grant, error = p.outcomes[0]
            if id(p) in given_up:
                assert isinstance(error, RequestCancelled)
            else:
                assert error is None and grant.start <= p.args[2] and p.args[3] <= grant.end
        assert write_conflicts(tables_of(h)) == []
    finally:
        h.close()


# --- an open's grant past tokens kept after a close (TokenManager.take_kept) ------------------
def test_an_open_takes_tokens_kept_by_clients_without_the_file_open():
    revocations = []
    manager = TokenManager(revocations.append)
    for client in (1, 2, 3):
        manager.add_client(client)
    assert manager.grant_if_free(1, F, 0, INFINITY, WRITE) is not None
    assert manager.take_kept(2, F, READ, openers=[1, 2]) is None  # 1 has it open: in use
    assert manager.holds(1, F, 0, INFINITY, WRITE)
    grant = manager.take_kept(2, F, READ, openers=[2])            # 1 closed it, keeping them
    assert (grant.start, grant.end, grant.mode) == (0, INFINITY, READ)
    assert manager.holds(1, F, 0, INFINITY, READ) and not manager.holds(1, F, 0, 1, WRITE)
    assert revocations == []                                      # nobody was asked
    assert manager.take_kept(3, F, WRITE, openers=[3]) is not None
    assert not manager.holdings(1, F) and not manager.holdings(2, F)
    manager.request(1, F, 0, 10, WRITE, lambda grant, error: None)  # a request waits: no
    assert manager.take_kept(2, F, READ, openers=[2]) is None
