"""Byte ranges carrying a level: the token tables of the metaserver and of every client. Two
maps given the same operations in the same order are equal (ranges disjoint, equal neighbours
merged), so a client's view of its tokens is the metaserver's.

A RangeMap holds disjoint half-open ranges [start, end), each with an integer level (for tokens:
READ = 1 < WRITE = 2). Neighbouring ranges of equal level are merged, so two maps that received
the same operations in the same order are equal, which is what keeps a client's view of its
tokens identical to the metaserver's.
"""
from __future__ import annotations

import bisect
from typing import Iterator

#: The end of a range that reaches past any possible file offset.
INFINITY = (1 << 63) - 1


class RangeMap:
    """Disjoint ranges with levels; nothing stored means level 0 (no token)."""

    __slots__ = ("_starts", "_ends", "_levels")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._levels: list[int] = []

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(zip(self._starts, self._ends, self._levels))

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeMap) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"RangeMap({list(self)!r})"

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """The stored pieces that intersect [start, end), clipped to it, in order."""
        out = []
        i = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while i < len(self._starts) and self._starts[i] < end:
            s, e = max(self._starts[i], start), min(self._ends[i], end)
            if s < e:
                out.append((s, e, self._levels[i]))
            i += 1
        return out

    def covers(self, start: int, end: int, level: int) -> bool:
        """True when every byte of [start, end) is held at `level` or higher."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i >= 0 and end <= self._ends[i] and self._levels[i] >= level:
            return True  # one range holds it all (a cache hit's case), no list made
        pos = start
        for s, e, lvl in self.overlapping(start, end):
            if s > pos or lvl < level:
                return False
            pos = e
        return pos >= end

    def around(self, start: int, end: int, level: int) -> tuple[int, int] | None:
        """The largest range held at `level` or higher throughout that holds [start, end)
        (start < end), or None when [start, end) is not held so."""
        starts, ends, levels = self._starts, self._ends, self._levels
        i = j = bisect.bisect_right(starts, start) - 1
        if i < 0 or levels[i] < level:
            return None
        while i > 0 and ends[i - 1] == starts[i] and levels[i - 1] >= level:
            i -= 1
        while j + 1 < len(starts) and starts[j + 1] == ends[j] and levels[j + 1] >= level:
            j += 1
        return (starts[i], ends[j]) if start < ends[j] and end <= ends[j] else None

    def clear(self, start: int, end: int) -> None:
        self._assign(start, end, lambda _old: 0)

    def cap(self, start: int, end: int, level: int) -> None:
        """Lowers every piece of [start, end) to at most `level` (a downgrade or a drop)."""
        self._assign(start, end, lambda old: min(old, level))

    def raise_to(self, start: int, end: int, level: int) -> None:
        """Raises every byte of [start, end) to at least `level` (a grant)."""
        self._assign(start, end, lambda old: max(old, level))

    def _assign(self, start: int, end: int, new_level) -> None:
        if start >= end:
            return
        # Rebuild the pieces touching [start, end) (plus neighbours, for merging); the maps
        # stay small (a handful of ranges per client and file), so clarity wins over cleverness.
        lo = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while lo > 0 and self._ends[lo - 1] >= start:
            lo -= 1
        hi = lo
        while hi < len(self._starts) and self._starts[hi] <= end:
            hi += 1
        old = list(zip(self._starts[lo:hi], self._ends[lo:hi], self._levels[lo:hi]))
        points = sorted({start, end, *(p for s, e, _ in old for p in (s, e))})
        pieces: list[tuple[int, int, int]] = []
        for s, e in zip(points, points[1:]):
            level = next((lvl for os, oe, lvl in old if os <= s and e <= oe), 0)
            if start <= s and e <= end:
                level = new_level(level)
            if level == 0:
                continue
            if pieces and pieces[-1][1] == s and pieces[-1][2] == level:
                pieces[-1] = (pieces[-1][0], e, level)
            else:
                pieces.append((s, e, level))
        self._starts[lo:hi] = [p[0] for p in pieces]
        self._ends[lo:hi] = [p[1] for p in pieces]
        self._levels[lo:hi] = [p[2] for p in pieces]
