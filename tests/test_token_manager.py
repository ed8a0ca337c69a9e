"""The metaserver's byte-range token manager (SPEC §4), driven by threads playing clients.

Conventions: token ranges are half-open [start, end). The SPEC's "500–800" (inclusive) is
[500, 801) here, so "a holder of 500–800 asked to give up 600–700 keeps 500–599 and 701–800"
reads: a holder of [500, 801) asked to give up [600, 701) keeps [500, 600) and [701, 801).

`send_revoke` runs under the manager's lock, so the harness's recorder only records and
enqueues; acknowledgements come from a separate thread (auto-ack) or from the test itself
(for clients whose revocations are held). Every wait is bounded.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfs.ranges import INFINITY, RangeMap
from pfs_servers.metaserver.tokens import DROP, READ, WRITE, SessionGone, TokenManager

WAIT = 5.0       # bound for anything that is expected to happen
BLOCKED = 0.25   # how long a request must stay waiting to count as blocked
SCRATCH = 999    # helper client used to carve exact tokens
CLIENTS = list(range(1, 21)) + [SCRATCH]
F = 7            # the file most tests use


# --- harness ----------------------------------------------------------------------------------
class Revoker:
    """The send_revoke callback: records every revocation; acknowledges it from a worker thread
    (after `delay` seconds) unless its holder is in `hold`, in which case the test acks it."""

    def __init__(self, hold=(), delay: float = 0.0) -> None:
        self.tm: TokenManager | None = None
        self.hold = set(hold)
        self.delay = delay
        self.sent: list = []
        self.on_ack = None  # called with the revocation just before it is acknowledged
        self._cond = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, daemon=True, name="auto-ack")
        self._worker.start()

    def __call__(self, revocation) -> None:  # under the manager's lock: record and enqueue only
        with self._cond:
            self.sent.append(revocation)
            self._cond.notify_all()
        if revocation.client_id not in self.hold:
            self._queue.put(revocation)

    def _run(self) -> None:
        while (revocation := self._queue.get()) is not None:
            if self.delay:
                time.sleep(self.delay)
            self.ack(revocation)

    def ack(self, revocation) -> bool:
        if self.on_ack:
            self.on_ack(revocation)
        return self.tm.acknowledge(revocation.client_id, revocation.revoke_id)

    def to(self, client: int) -> list:
        with self._cond:
            return [r for r in self.sent if r.client_id == client]

    def wait_count(self, n: int, timeout: float = WAIT) -> list:
        """Waits until at least n revocations were sent; returns them all."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.sent) >= n, timeout), \
                f"expected {n} revocations, got {self.sent}"
            return list(self.sent)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(WAIT)


class Pending:
    """One acquire running in its own thread."""

    def __init__(self, h: "Harness", client: int, file_id: int, start: int, end: int,
                 mode: int, barrier: threading.Barrier | None = None) -> None:
        self.h, self.client, self.args = h, client, (client, file_id, start, end, mode)
        self.barrier = barrier
        self.grant = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.barrier is not None:
                self.barrier.wait(WAIT)
            self.grant = self.h.tm.acquire(*self.args)
        except BaseException as e:  # noqa: BLE001 - reported by result()
            self.error = e
        finally:
            self.done.set()

    def result(self, timeout: float = WAIT):
        assert self.done.wait(timeout), f"request {self.args} still waiting after {timeout}s"
        if self.error is not None:
            raise self.error
        return self.grant

    def waiting(self, for_: float = BLOCKED) -> bool:
        return not self.done.wait(for_)


class Harness:
    def __init__(self, hold=(), delay: float = 0.0, **kw) -> None:
        self.rv = Revoker(hold, delay)
        self.evicted: list[int] = []
        self.evict_event = threading.Event()
        self.tm = TokenManager(self.rv, evict=self._evict, **kw)
        self.rv.tm = self.tm
        for c in CLIENTS:
            self.tm.add_client(c)
        self.pending: list[Pending] = []

    def _evict(self, client: int) -> None:  # under the manager's lock: record only
        self.evicted.append((client, time.monotonic()))
        self.evict_event.set()

    def request(self, client, file_id, start, end, mode, barrier=None) -> Pending:
        p = Pending(self, client, file_id, start, end, mode, barrier)
        self.pending.append(p)
        return p

    def acquire(self, client, file_id, start, end, mode):
        """acquire in a thread, bounded: returns the grant."""
        return self.request(client, file_id, start, end, mode).result()

    def queued(self, file_id: int) -> int:
        # White-box: how many requests wait on the file. Used only to sequence tests (make sure a
        # request has arrived before the next one is made), never as the thing checked.
        with self.tm._lock:
            held = self.tm._files.get(file_id)
            return len(held.queue) if held else 0

    def wait_queued(self, file_id: int, n: int) -> None:
        deadline = time.monotonic() + WAIT
        while self.queued(file_id) < n:
            assert time.monotonic() < deadline, f"fewer than {n} requests queued"
            time.sleep(0.005)

    def carve(self, file_id: int, pieces) -> None:
        """Makes each (client, start, end, mode) hold exactly that token: SCRATCH takes the
        whole file, each client takes its piece (revoking only that piece from SCRATCH, whose
        remaining tokens bound the grant), then SCRATCH closes the file. Pieces must not
        conflict with each other; revocations to SCRATCH must be auto-acknowledged."""
        assert SCRATCH not in self.rv.hold
        self.acquire(SCRATCH, file_id, 0, INFINITY, WRITE)
        for client, start, end, mode in pieces:
            g = self.acquire(client, file_id, start, end, mode)
            assert (g.start, g.end) == (start, end), g
        self.tm.release_file(SCRATCH, file_id)
        for client, start, end, mode in pieces:
            assert (start, end, mode) in self.tm.holdings(client, file_id)

    def close(self) -> None:
        for c in CLIENTS:  # fail whatever still waits, so no thread outlives the test
            self.tm.remove_client(c)
        for p in self.pending:
            p.thread.join(WAIT)
            assert not p.thread.is_alive(), f"request {p.args} did not end"
        self.rv.close()


@pytest.fixture
def make():
    made: list[Harness] = []

    def factory(hold=(), delay: float = 0.0, **kw) -> Harness:
        h = Harness(hold, delay, **kw)
        made.append(h)
        return h
    yield factory
    for h in made:
        h.close()


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
    """With nobody else on the file, a grant covers [0, INFINITY) in the asked mode."""
    h = make()
    g = h.acquire(1, F, 100, 200, WRITE)
    assert (g.start, g.end, g.mode) == (0, INFINITY, WRITE)
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]
    assert h.rv.sent == []


def test_expansion_stops_at_other_clients_write_token(make):
    """Next to another client's WRITE token [1000, 2000), a READ for [0, 10) expands to
    [0, 1000) and a READ for [3000, 3010) to [2000, INFINITY), without revoking anything."""
    h = make()
    h.carve(F, [(2, 1000, 2000, WRITE)])
    sent = len(h.rv.sent)
    g1 = h.acquire(1, F, 0, 10, READ)
    assert (g1.start, g1.end, g1.mode) == (0, 1000, READ)
    g2 = h.acquire(1, F, 3000, 3010, READ)
    assert (g2.start, g2.end, g2.mode) == (2000, INFINITY, READ)
    assert len(h.rv.sent) == sent
    assert h.tm.holdings(1, F) == [(0, 1000, READ), (2000, INFINITY, READ)]
    assert h.tm.holdings(2, F) == [(1000, 2000, WRITE)]


def test_read_expands_over_other_readers(make):
    """Other clients' READ tokens do not limit a READ grant (they do not conflict), but do limit
    a WRITE grant."""
    h = make()
    h.carve(F, [(2, 1000, 2000, READ)])
    g = h.acquire(1, F, 0, 10, READ)
    assert (g.start, g.end) == (0, INFINITY)
    h.tm.release_file(1, F)
    g = h.acquire(3, F, 0, 10, WRITE)
    assert (g.start, g.end) == (0, 1000)


def test_own_tokens_never_conflict(make):
    """A client's requests never revoke its own tokens, and a READ grant over its own WRITE
    token leaves it WRITE."""
    h = make()
    h.acquire(1, F, 0, 10, WRITE)
    g = h.acquire(1, F, 50, 60, READ)
    assert h.rv.sent == []
    assert (g.start, g.end, g.mode) == (0, INFINITY, READ)
    assert h.tm.holdings(1, F) == [(0, INFINITY, WRITE)]


def test_bad_requests_rejected(make):
    """Empty, inverted, out-of-range or unknown-mode requests raise ValueError."""
    h = make()
    for args in [(5, 5, READ), (6, 5, WRITE), (-1, 5, READ), (0, INFINITY + 1, READ),
                 (0, 10, 0), (0, 10, 3)]:
        with pytest.raises(ValueError):
            h.tm.acquire(1, F, *args)


# --- readers ----------------------------------------------------------------------------------
def test_readers_never_conflict(make):
    """Many clients reading overlapping ranges at once are all granted, without revocations."""
    h = make(hold=CLIENTS[:-1])
    reqs = [h.request(c, F, 10 * c, 10 * c + 500, READ) for c in range(1, 13)]
    for r in reqs:
        g = r.result()
        assert g.mode == READ and g.start <= 10 * r.client and 10 * r.client + 500 <= g.end
    assert h.rv.sent == []
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
    (rev,) = h.rv.wait_count(1)
    assert (rev.client_id, rev.file_id, rev.start, rev.end, rev.to_mode) == (1, F, 100, 200, DROP)
    assert req.waiting(), "granted before the holder acknowledged"
    assert h.tm.holdings(1, F) == [(0, INFINITY, held_mode)]  # changes only on the ack
    assert h.rv.ack(rev) is True
    g = req.result()
    assert (g.start, g.end, g.mode) == (100, 200, WRITE)
    assert h.tm.holdings(1, F) == [(0, 100, held_mode), (200, INFINITY, held_mode)]
    assert h.tm.holdings(2, F) == [(100, 200, WRITE)]


def test_read_waits_for_writer(make):
    """A READ request over another client's WRITE token waits for its acknowledgement."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 0, 10, READ)
    (rev,) = h.rv.wait_count(1)
    assert req.waiting()
    h.rv.ack(rev)
    assert req.result().mode == READ


def test_request_waits_for_every_holder(make):
    """A WRITE over several readers is granted only after all of them acknowledged."""
    h = make(hold=[1, 2, 3])
    for c in (1, 2, 3):
        h.acquire(c, F, 0, 100, READ)
    req = h.request(4, F, 0, 100, WRITE)
    revs = h.rv.wait_count(3)
    assert sorted(r.client_id for r in revs) == [1, 2, 3]
    for r in revs[:-1]:
        h.rv.ack(r)
        assert req.waiting(0.1)
    h.rv.ack(revs[-1])
    assert req.result().mode == WRITE
    assert write_conflicts({c: h.tm.holdings(c, F) for c in (1, 2, 3, 4)}) == []


def test_partial_revocation_keeps_the_rest(make):
    """SPEC: a holder of 500–800 asked for 600–700 keeps 500–599 and 701–800. Half-open: A
    holds WRITE [500, 801); B asks [600, 701); the revocation to A is exactly [600, 701) and
    after the ack A holds [500, 600) and [701, 801)."""
    h = make(hold=[1])
    h.carve(F, [(1, 500, 801, WRITE)])
    n0 = len(h.rv.sent)
    req = h.request(2, F, 600, 701, WRITE)
    rev = h.rv.wait_count(n0 + 1)[-1]
    assert (rev.client_id, rev.start, rev.end, rev.to_mode) == (1, 600, 701, DROP)
    assert req.waiting()
    h.rv.ack(rev)
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
    (rev,) = h.rv.wait_count(1)
    assert (rev.client_id, rev.start, rev.end, rev.to_mode) == (1, 100, 200, READ)
    assert req.waiting()
    h.rv.ack(rev)
    g = req.result()
    assert (g.start, g.end, g.mode) == (100, 200, READ)
    assert h.tm.holdings(1, F) == [(0, 100, WRITE), (100, 200, READ), (200, INFINITY, WRITE)]
    h.acquire(1, F, 120, 130, READ)
    assert len(h.rv.sent) == 1


def test_acknowledge_rejects_unknown_and_duplicate(make):
    """acknowledge is False (and changes nothing) for an unknown id or a second acknowledgement
    of the same revocation."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.rv.wait_count(1)
    assert h.tm.acknowledge(1, 10**6) is False
    assert req.waiting(0.1)
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
    (rev,) = h.rv.wait_count(1)
    assert h.tm.acknowledge(3, rev.revoke_id) is False   # someone else's id: ignored
    assert req.waiting(0.1)
    assert h.tm.acknowledge(1, rev.revoke_id) is True, "the holder's real ack was rejected"
    assert req.result(2.0).mode == WRITE


# --- non-conflicting requests run in parallel ---------------------------------------------------
def test_spec_three_disjoint_writers_run_together(make):
    """SPEC: three clients writing 300–500, 800–1100 and 200–250 of one file run at the same
    time. The first grant expands over the whole file, so later ones revoke only the unused
    part of it: no revocation ever touches a range its holder asked for, and all three finish
    quickly (in any arrival order)."""
    ranges = {1: (300, 501), 2: (800, 1101), 3: (200, 251)}
    for round_ in range(5):
        h = make()
        f = 100 + round_
        start = threading.Barrier(3)
        t0 = time.monotonic()
        reqs = [h.request(c, f, s, e, WRITE, barrier=start) for c, (s, e) in ranges.items()]
        for p in reqs:
            g = p.result()
            s, e = ranges[p.client]
            assert g.mode == WRITE and g.start <= s and e <= g.end
        assert time.monotonic() - t0 < 2.0
        for rev in h.rv.sent:
            s, e = ranges[rev.client_id]
            assert not (rev.start < e and s < rev.end), f"revoked a range in use: {rev}"
        held = {c: h.tm.holdings(c, f) for c in ranges}
        assert write_conflicts(held) == []
        for c, (s, e) in ranges.items():
            assert RangeMap_of(held[c]).covers(s, e, WRITE)


def RangeMap_of(pieces) -> RangeMap:
    m = RangeMap()
    for s, e, lvl in pieces:
        m.raise_to(s, e, lvl)
    return m


def test_disjoint_request_not_blocked_by_waiting_ones(make):
    """While B waits for A's revocation and C waits behind B (C overlaps B), a request D for a
    range that conflicts with none of them is granted at once, without any revocation; its
    expansion stops short of the waiting requests and A's token."""
    h = make(hold=[1, 2, 3, 4])
    h.carve(F, [(1, 0, 100, WRITE)])
    n0 = len(h.rv.sent)
    b = h.request(2, F, 10, 20, WRITE)
    rev_a = h.rv.wait_count(n0 + 1)[-1]
    assert (rev_a.client_id, rev_a.start, rev_a.end) == (1, 10, 20)
    h.wait_queued(F, 1)
    c = h.request(3, F, 15, 25, WRITE)
    h.wait_queued(F, 2)
    d = h.request(4, F, 500, 600, WRITE)
    g = d.result(1.0)
    assert (g.start, g.end) == (100, INFINITY)
    assert len(h.rv.sent) == n0 + 1, "C must not revoke anything while B, before it, waits"
    assert b.waiting(0.05) and c.waiting(0.05)
    h.rv.ack(rev_a)
    gb = b.result()
    assert (gb.start, gb.end) == (10, 20)  # bounded by A's rest and by C, still waiting
    revs = h.rv.wait_count(n0 + 3)  # C revokes [15, 25) from B and from A
    assert sorted((r.client_id, r.start, r.end) for r in revs[n0 + 1:]) == [(1, 15, 25),
                                                                            (2, 15, 25)]
    assert c.waiting(0.1)
    for r in revs[n0 + 1:]:
        h.rv.ack(r)
    assert c.result().mode == WRITE


def test_expansion_stops_at_waiting_request(make):
    """A grant does not expand over a conflicting request still waiting (it would only have to be
    revoked again): with A on [0, 100) and B waiting for [50, 150), D's request for [500, 600) is
    granted [150, INFINITY), and B then needs nothing from D."""
    h = make(hold=[1, 4])
    h.carve(F, [(1, 0, 100, WRITE)])
    n0 = len(h.rv.sent)
    b = h.request(2, F, 50, 150, WRITE)
    h.rv.wait_count(n0 + 1)
    h.wait_queued(F, 1)
    g = h.acquire(4, F, 500, 600, WRITE)
    assert (g.start, g.end) == (150, INFINITY)
    h.rv.ack(h.rv.to(1)[0])
    assert (b.result().start, b.result().end) == (50, 150)
    assert h.rv.to(4) == []


def test_write_behind_waiting_request_does_not_block_reader_elsewhere(make):
    """A queue of conflicting requests on [0, 100) does not delay a READ of [200, 300)."""
    h = make(hold=[1])
    h.carve(F, [(1, 0, 100, READ)])
    reqs = [h.request(c, F, 0, 100, WRITE) for c in (2, 3, 4)]
    h.wait_queued(F, 3)
    g = h.acquire(5, F, 200, 300, READ)
    assert g.mode == READ
    assert all(r.waiting(0.05) for r in reqs)


# --- fairness ---------------------------------------------------------------------------------
def test_waiting_write_not_starved_by_later_reads(make):
    """A WRITE request waiting for a reader's acknowledgement is served before READ requests
    that arrive later and overlap it, although those do not conflict with any token held: they
    queue behind it. A later READ that does not overlap it is served at once."""
    h = make(hold=[1])
    h.carve(F, [(1, 0, INFINITY, READ)])
    n0 = len(h.rv.sent)
    w = h.request(2, F, 0, 100, WRITE)
    n = len(h.rv.wait_count(n0 + 1))
    h.wait_queued(F, 1)
    readers = []  # each reads its own tenth of the writer's range
    for i, c in enumerate(range(10, 16)):
        readers.append(h.request(c, F, 10 * i, 10 * i + 10, READ))
        h.wait_queued(F, 2 + i)
    assert all(r.waiting(0.05) for r in readers), "a later read overtook the waiting write"
    assert w.waiting(0.05)
    assert len(h.rv.sent) == n, "readers must not revoke anything while the write waits"
    h.acquire(20, F, 5000, 5100, READ)  # disjoint: not held up
    h.rv.ack(h.rv.to(1)[0])
    g = w.result()
    assert (g.start, g.end, g.mode) == (0, 100, WRITE)
    for r in readers:
        assert r.result().mode == READ
    # each reader had to downgrade its part of the writer's token: all were served after it
    to_writer = h.rv.to(2)
    assert sorted((r.start, r.end, r.to_mode) for r in to_writer) == \
        [(10 * i, 10 * i + 10, READ) for i in range(len(readers))]


def test_conflicting_requests_served_in_arrival_order(make):
    """Writers queued on one range are granted in the order they asked."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    reqs = []
    for i, c in enumerate((2, 3, 4, 5)):
        reqs.append(h.request(c, F, 0, 10, WRITE))
        h.wait_queued(F, i + 1)
    h.rv.ack(h.rv.wait_count(1)[0])
    for r in reqs:
        r.result()
    # each was granted while its predecessor held the range: it revoked exactly that one
    assert [r.client_id for r in h.rv.sent] == [1, 2, 3, 4]


# --- release, removal, late acknowledgements ----------------------------------------------------
def test_release_file_frees_tokens_and_unblocks_waiter(make):
    """release_file drops the holder's tokens on that file only; a request waiting for its
    acknowledgement is granted without it, and the now-moot acknowledgement is ignored."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(1, F + 1, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.rv.wait_count(1)
    assert req.waiting()
    h.tm.release_file(1, F)
    g = req.result()
    assert (g.start, g.end) == (0, INFINITY)
    assert h.tm.holdings(1, F) == []
    assert h.tm.holdings(1, F + 1) == [(0, INFINITY, WRITE)]
    assert h.rv.ack(rev) is False
    assert h.tm.holdings(2, F) == [(0, INFINITY, WRITE)]


def test_late_ack_after_release_does_not_touch_new_tokens(make):
    """A revocation whose holder then closed the file is moot: acknowledging it after the holder
    was granted the range again changes nothing."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    req = h.request(2, F, 100, 200, WRITE)
    (stale,) = h.rv.wait_count(1)
    h.tm.release_file(1, F)
    req.result()
    g = h.acquire(1, F, 100, 200, WRITE)  # revokes from 2 (auto-acked)
    assert g.start <= 100 and 200 <= g.end
    before = h.tm.holdings(1, F)
    assert RangeMap_of(before).covers(100, 200, WRITE)
    assert h.rv.ack(stale) is False
    assert h.tm.holdings(1, F) == before


def test_remove_holder_unblocks_waiter(make):
    """remove_client drops all of a holder's tokens on every file; waiters are granted."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(1, F + 1, 0, 10, READ)
    req = h.request(2, F, 0, 10, READ)
    (rev,) = h.rv.wait_count(1)
    assert req.waiting()
    h.tm.remove_client(1)
    assert req.result().mode == READ
    assert h.tm.holdings(1, F) == [] and h.tm.holdings(1, F + 1) == []
    assert h.rv.ack(rev) is False
    assert h.tm.writers_beyond(F, 0) == []


def test_removed_client_requests_fail(make):
    """A waiting request of a removed client raises SessionGone and stops holding up requests
    queued behind it; new requests of a removed (or never added) client fail at once."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)
    b = h.request(2, F, 0, 10, WRITE)
    h.rv.wait_count(1)
    h.wait_queued(F, 1)
    c = h.request(3, F, 0, 10, WRITE)
    h.wait_queued(F, 2)
    h.tm.remove_client(2)
    with pytest.raises(SessionGone):
        b.result()
    rev_c = h.rv.wait_count(2)[1]  # C, no longer behind B, now asks A itself
    assert (rev_c.client_id, rev_c.start, rev_c.end) == (1, 0, 10)
    assert c.waiting(0.1)  # still needs A
    h.rv.ack(rev_c)
    assert c.result().mode == WRITE
    assert h.tm.holdings(2, F) == []
    with pytest.raises(SessionGone):
        h.tm.acquire(2, F, 0, 10, READ)
    with pytest.raises(SessionGone):
        h.tm.acquire(12345, F, 0, 10, READ)
    h.tm.add_client(2)  # a new session may use the id again
    assert h.acquire(2, F + 1, 0, 10, READ).grant_seq == 1


def test_orphaned_revocation_ack_never_takes_back_a_later_grant(make):
    """(Regression.) B's session ends while B waits for A's revocation R of [100, 200). A (e.g. an operation running while A writes back for R) asks
    for [100, 200) again and is granted it at once (grant 2, after R's granted_upto 1). When A
    then acknowledges R, the manager caps A's table over [100, 200), undoing grant 2. A client
    that applied grant 2 after handling R (its operation waits for the client lock that R's
    write-back holds) believes it holds WRITE [100, 200) while the manager does not: C is then
    granted WRITE on the same bytes with no revocation to A, i.e. two writers. Expected: an
    acknowledgement never removes bytes granted after its revocation was sent, so C's request
    must revoke from A."""
    h = make(hold=[1])
    h.acquire(1, F, 0, 10, WRITE)                  # A: WRITE [0, INFINITY), grant 1
    b = h.request(2, F, 100, 200, WRITE)
    (rev,) = h.rv.wait_count(1)                    # R to A: [100, 200), granted_upto 1
    h.tm.remove_client(2)
    with pytest.raises(SessionGone):
        b.result()
    g = h.acquire(1, F, 100, 200, WRITE)           # nothing conflicts any more: granted at once
    assert g.grant_seq == 2 > rev.granted_upto and g.start <= 100 and 200 <= g.end
    h.rv.ack(rev)                                  # A finishes handling R
    c = h.request(3, F, 100, 200, WRITE)
    assert c.waiting(), "C was granted A's grant-2 bytes without any revocation to A"
    assert RangeMap_of(h.tm.holdings(1, F)).covers(100, 200, WRITE)


# --- eviction ---------------------------------------------------------------------------------
def test_silent_holder_is_evicted(make):
    """A holder that does not acknowledge within revoke_timeout is passed to evict; the waiter
    is granted once the caller ends that session (remove_client), not before."""
    h = make(hold=[1], revoke_timeout=0.3)
    h.acquire(1, F, 0, 10, WRITE)
    t0 = time.monotonic()
    req = h.request(2, F, 0, 10, WRITE)
    h.rv.wait_count(1)
    assert h.evict_event.wait(WAIT), "silent holder was never evicted"
    client, at = h.evicted[0]
    assert client == 1
    assert at - t0 >= 0.25
    assert req.waiting(0.1), "granted while the evicted holder still held the token"
    h.tm.remove_client(1)
    assert req.result().mode == WRITE
    assert {c for c, _ in h.evicted} == {1}


def test_prompt_holder_is_not_evicted(make):
    """A holder acknowledging within revoke_timeout is not evicted."""
    h = make(delay=0.1, revoke_timeout=0.6)
    h.acquire(1, F, 0, 10, WRITE)
    h.acquire(2, F, 0, 10, WRITE)
    h.acquire(1, F, 0, 10, READ)
    time.sleep(0.7)
    assert h.evicted == []


# --- grant numbers ----------------------------------------------------------------------------
def test_grant_seq_per_client_and_granted_upto(make):
    """grant_seq counts each client's grants 1, 2, 3... across files; a revocation carries the
    holder's last grant number at the time it was sent."""
    h = make(hold=[1])
    assert [h.acquire(1, f, 0, 10, READ).grant_seq for f in (1, 2, 3)] == [1, 2, 3]
    assert h.acquire(3, 9, 0, 10, READ).grant_seq == 1
    req = h.request(2, 1, 0, 10, WRITE)
    (rev,) = h.rv.wait_count(1)
    assert (rev.client_id, rev.granted_upto) == (1, 3)
    assert h.acquire(1, 4, 0, 10, READ).grant_seq == 4
    req2 = h.request(4, 2, 0, 10, WRITE)
    rev2 = h.rv.wait_count(2)[1]
    assert (rev2.client_id, rev2.granted_upto) == (1, 4)
    h.rv.ack(rev)
    h.rv.ack(rev2)
    assert req.result().grant_seq == 1 and req2.result().grant_seq == 1
    assert h.acquire(1, 5, 0, 10, WRITE).grant_seq == 5
    assert len({r.revoke_id for r in h.rv.sent}) == len(h.rv.sent)


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
ops_st = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 40), st.integers(1, 40),
                            st.sampled_from([READ, WRITE]), st.integers(0, 9)),
                  min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(ops_st)
def test_sequential_random_requests_keep_tokens_consistent(ops):
    """Random requests of 4 clients (one at a time, acks from the auto-ack thread) and random
    closes: each grant covers its request, no two clients ever hold conflicting tokens, each
    revocation covers only the request's range, and a client that applies its grants and the
    revocations it acknowledged has exactly the manager's table."""
    h = Harness()
    mirrors = {c: RangeMap() for c in range(1, 5)}
    lock = threading.Lock()

    def on_ack(rev):
        with lock:
            mirrors[rev.client_id].cap(rev.start, rev.end, rev.to_mode)
    h.rv.on_ack = on_ack
    try:
        for client, start, length, mode, close in ops:
            if close == 0:
                h.tm.release_file(client, F)
                mirrors[client] = RangeMap()
                continue
            end = start + length
            n = len(h.rv.sent)
            g = h.acquire(client, F, start, end, mode)
            assert g.mode == mode and g.start <= start and end <= g.end
            for rev in h.rv.sent[n:]:
                assert (rev.start, rev.end) == (start, end) and rev.client_id != client
                assert rev.to_mode == (READ if mode == READ else DROP)
            with lock:
                mirrors[client].raise_to(g.start, g.end, g.mode)
            held = {c: h.tm.holdings(c, F) for c in mirrors}
            assert write_conflicts(held) == []
            assert RangeMap_of(held[client]).covers(start, end, mode)
            with lock:
                assert {c: list(m) for c, m in mirrors.items()} == held
    finally:
        h.close()


@pytest.mark.timeout(60)
def test_concurrent_random_requests_all_complete(make):
    """Liveness under contention: 6 client threads making random overlapping READ/WRITE requests
    (acks arrive after a short delay) all finish, and the final tables are conflict-free."""
    import random
    h = make(delay=0.002)
    errors: list = []

    def client(c: int) -> None:
        rnd = random.Random(c)
        try:
            for _ in range(25):
                s = rnd.randrange(0, 200)
                e = s + rnd.randrange(1, 60)
                mode = rnd.choice([READ, WRITE])
                g = h.tm.acquire(c, F, s, e, mode)
                assert g.start <= s and e <= g.end and g.mode == mode
                if rnd.random() < 0.1:
                    h.tm.release_file(c, F)
        except BaseException as ex:  # noqa: BLE001
            errors.append(ex)
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads), "a request never completed (deadlock?)"
    assert errors == []
    assert write_conflicts({c: h.tm.holdings(c, F) for c in range(1, 7)}) == []
