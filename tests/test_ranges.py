"""pfs.protocol.ranges.RangeMap (the token tables of the metaserver and of every client) against a
per-cell model.

The model universe is the points P = base + i*stride for i = 0..N, followed by INFINITY; cell i
is [P[i], P[i+1]), so the last cell reaches to INFINITY. Operations only use points of P as
boundaries, so every cell has one level and the map's exact pieces can be predicted: they are
the runs of equal non-zero level, merged. Queries may use offsets inside cells too.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pfs.protocol.ranges import INFINITY, RangeMap

READ, WRITE = 1, 2
N = 64
PROPERTY = settings(max_examples=200, deadline=None)

GEOMETRIES = [(0, 1), (2**40 - 7 * 4096, 4096), (INFINITY - 3 * N - 5, 3)]


def points(base: int, stride: int) -> list[int]:
    return [base + i * stride for i in range(N + 1)] + [INFINITY]


class Model:
    """One level per cell; cell i is [P[i], P[i+1])."""

    def __init__(self, pts: list[int]) -> None:
        self.pts = pts
        self.cells = [0] * (len(pts) - 1)

    def apply(self, op: str, a: int, b: int, level: int) -> None:
        for i in range(a, b):  # a >= b: nothing
            old = self.cells[i]
            self.cells[i] = {"raise_to": max(old, level), "cap": min(old, level), "clear": 0}[op]

    def pieces(self) -> list[tuple[int, int, int]]:
        out: list[tuple[int, int, int]] = []
        for i, level in enumerate(self.cells):
            if level == 0:
                continue
            s, e = self.pts[i], self.pts[i + 1]
            if out and out[-1][1] == s and out[-1][2] == level:
                out[-1] = (out[-1][0], e, level)
            else:
                out.append((s, e, level))
        return out

    def overlapping(self, qs: int, qe: int) -> list[tuple[int, int, int]]:
        return [(max(s, qs), min(e, qe), lvl) for s, e, lvl in self.pieces()
                if max(s, qs) < min(e, qe)]

    def covers(self, qs: int, qe: int, level: int) -> bool:
        return all(self.cells[i] >= level for i in range(len(self.cells))
                   if self.pts[i] < qe and qs < self.pts[i + 1])


def run(ops, pts) -> tuple[RangeMap, Model]:
    m, model = RangeMap(), Model(pts)
    for op, a, b, level in ops:
        if op == "clear":
            m.clear(pts[a], pts[b])
        else:
            getattr(m, op)(pts[a], pts[b], level)
        model.apply(op, a, b, level)
    return m, model


# an index into P (N + 1 is INFINITY); a few favourite points make ranges that touch or share
# boundaries (where merging happens) common
idx = st.one_of(st.sampled_from([0, 1, 2, 8, 9, 10, 16, 32, N - 1, N, N + 1]),
                st.integers(0, N + 1))
ops_st = st.lists(st.tuples(st.sampled_from(["raise_to", "raise_to", "cap", "clear"]),
                            idx, idx, st.integers(0, 3)), max_size=30)
geometry = st.sampled_from(GEOMETRIES)


@st.composite
def query(draw, pts):
    """[qs, qe) with qs < qe, ends either points of P or offsets inside cells."""
    def offset():
        i = draw(st.integers(0, N + 1))
        if i <= N and draw(st.booleans()):
            return pts[i] + draw(st.integers(0, min(pts[i + 1] - pts[i] - 1, 10**6)))
        return pts[i]
    a, b = sorted((offset(), offset()))
    if a == b:
        if a < INFINITY:
            b = a + 1
        else:
            a = b - 1
    return a, b


def pieces_are_canonical(m: RangeMap) -> None:
    pieces = list(m)
    for s, e, lvl in pieces:
        assert 0 <= s < e <= INFINITY and lvl > 0, pieces
    for (s1, e1, l1), (s2, e2, l2) in zip(pieces, pieces[1:]):
        assert e1 <= s2, f"pieces not sorted/disjoint: {pieces}"
        assert not (e1 == s2 and l1 == l2), f"adjacent equal pieces not merged: {pieces}"


@PROPERTY
@given(geometry, ops_st)
def test_pieces_match_model(geo, ops):
    """After any raise_to/cap/clear sequence, the stored pieces are exactly the model's runs
    of equal non-zero level: sorted, disjoint, no zero-level pieces, equal neighbours merged."""
    pts = points(*geo)
    m, model = run(ops, pts)
    pieces_are_canonical(m)
    assert list(m) == model.pieces()
    assert bool(m) == any(model.cells)


@PROPERTY
@given(geometry, ops_st, st.data())
def test_queries_match_model(geo, ops, data):
    """covers and overlapping agree with the model for arbitrary query ranges, including ranges
    that start or end inside a piece and ranges reaching INFINITY."""
    pts = points(*geo)
    m, model = run(ops, pts)
    for _ in range(5):
        qs, qe = data.draw(query(pts))
        assert m.overlapping(qs, qe) == model.overlapping(qs, qe), (qs, qe)
        for level in (READ, WRITE, 3):
            assert m.covers(qs, qe, level) == model.covers(qs, qe, level), (qs, qe, level)


@PROPERTY
@given(geometry, ops_st, st.randoms(use_true_random=False))
def test_representation_is_canonical(geo, ops, rnd):
    """Maps holding the same bytes at the same levels are equal however they were built (here:
    the ops vs. raising cell by cell in random order), so a client's table and the metaserver's
    compare equal when they received the same grants and revocations."""
    pts = points(*geo)
    m, model = run(ops, pts)
    other = RangeMap()
    cells = [i for i, lvl in enumerate(model.cells) if lvl]
    rnd.shuffle(cells)
    for i in cells:
        other.raise_to(pts[i], pts[i + 1], model.cells[i])
    assert m == other
    # and the equality is not vacuous: changing one cell makes them differ
    if cells:
        i = cells[0]
        other.cap(pts[i], pts[i + 1], model.cells[i] - 1)
        assert m != other


@PROPERTY
@given(ops_st, ops_st)
def test_same_ops_give_equal_maps_different_contents_unequal(ops1, ops2):
    """Equality is content equality: equal iff the per-cell models agree."""
    pts = points(0, 1)
    m1, model1 = run(ops1, pts)
    m2, model2 = run(ops2, pts)
    assert (m1 == m2) == (model1.cells == model2.cells)
    assert m1 == run(ops1, pts)[0]


def test_empty_and_inverted_ranges_are_no_ops():
    """An empty or inverted range changes nothing."""
    m = RangeMap()
    m.raise_to(10, 20, WRITE)
    for op in (m.clear, lambda s, e: m.raise_to(s, e, WRITE), lambda s, e: m.cap(s, e, 0)):
        op(15, 15)
        op(18, 12)
    assert list(m) == [(10, 20, WRITE)]
    m2 = RangeMap()
    m2.raise_to(5, 5, READ)
    assert not m2 and list(m2) == []


def test_infinity_whole_file_token():
    """A token up to INFINITY covers any offset; downgrading or clearing a tail keeps the head."""
    m = RangeMap()
    m.raise_to(0, INFINITY, WRITE)
    assert list(m) == [(0, INFINITY, WRITE)]
    assert m.covers(0, INFINITY, WRITE)
    assert m.covers(2**62, 2**62 + 1, WRITE)
    assert m.overlapping(INFINITY - 1, INFINITY) == [(INFINITY - 1, INFINITY, WRITE)]
    m.cap(1000, INFINITY, READ)
    assert list(m) == [(0, 1000, WRITE), (1000, INFINITY, READ)]
    assert not m.covers(0, INFINITY, WRITE) and m.covers(0, INFINITY, READ)
    m.clear(600, 701)
    assert list(m) == [(0, 600, WRITE), (701, 1000, WRITE), (1000, INFINITY, READ)]
    assert not m.covers(0, INFINITY, READ)
    m.clear(1000, INFINITY)
    assert list(m) == [(0, 600, WRITE), (701, 1000, WRITE)]
    assert m.overlapping(5000, INFINITY) == []
    m.raise_to(600, INFINITY, WRITE)
    assert list(m) == [(0, INFINITY, WRITE)]


def test_raise_does_not_lower_and_cap_does_not_raise():
    """raise_to never lowers a byte (a READ grant over a WRITE token keeps WRITE) and cap never
    raises one or fills gaps (downgrading a hole does not create a token)."""
    m = RangeMap()
    m.raise_to(100, 200, WRITE)
    m.raise_to(0, 300, READ)
    assert list(m) == [(0, 100, READ), (100, 200, WRITE), (200, 300, READ)]
    m.cap(250, 400, WRITE)
    m.cap(350, 500, READ)
    assert list(m) == [(0, 100, READ), (100, 200, WRITE), (200, 300, READ)]
    m.cap(0, INFINITY, READ)
    assert list(m) == [(0, 300, READ)]


def test_adjacent_grants_merge():
    """Grants that touch end to start become one piece; a gap of one byte keeps two."""
    m = RangeMap()
    m.raise_to(0, 10, WRITE)
    m.raise_to(20, 30, WRITE)
    m.raise_to(10, 19, WRITE)
    assert list(m) == [(0, 19, WRITE), (20, 30, WRITE)]
    m.raise_to(19, 20, WRITE)
    assert list(m) == [(0, 30, WRITE)]
    m.raise_to(30, 40, READ)
    assert list(m) == [(0, 30, WRITE), (30, 40, READ)]
    m.raise_to(30, 40, WRITE)  # the right neighbour becomes equal to its left one
    assert list(m) == [(0, 40, WRITE)]
    m.cap(0, 10, READ)
    m.raise_to(10, 20, READ)  # no change, but still canonical
    m.cap(10, 40, READ)
    assert list(m) == [(0, 40, READ)]
