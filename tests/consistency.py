"""A checker for histories of reads and writes on one file: is there one total order of all the
operations that respects each client's program order and real time, in which every read returns
exactly the bytes the writes before it left, and the final file is what the last writes left?

Such an order makes the history linearizable, hence sequentially consistent. The search is Wing
and Gong's: repeatedly pick an operation that no pending operation finished before, apply it to
the file, and backtrack when a read disagrees; failed (done set, file) pairs are remembered (by a
digest of the file). Operations that leave the file as it is (reads, fstats, failures) are placed
as soon as they fit, without branching: that loses no order, and keeps long histories of many
clients tractable.

The file may grow: its state is its bytes, whose length is its size. A write needs its offset at
most at the end (no holes) and may extend the file; an append is a write at the end. A read of
`length` bytes at `offset` returns file[offset:offset + length], short near the end and empty at
it. A call that failed with EINVAL (offset beyond the end) is an observation too: it must be
placed where its offset was beyond the end. An fstat must be placed where the size was the one
it reported. Histories of a file whose size never changes (the only kind before files could
grow) are checked as before.
"""
from __future__ import annotations

import errno as errnos
import hashlib
import sys
from dataclasses import dataclass

KINDS = ("read", "write", "fstat")


@dataclass(frozen=True)
class Op:
    client: int
    index: int          # position in its client's program order
    kind: str           # "read", "write" or "fstat"
    offset: int
    data: bytes         # written bytes, or the bytes the read returned (b"" for fstat)
    start: int          # monotonic ns when the call began
    end: int            # monotonic ns when it returned
    length: int | None = None  # read: bytes asked for (default len(data)); fstat: the size seen
    error: int = 0      # the errno when the call failed (-1); only EINVAL can be explained

    @property
    def asked(self) -> int:
        return len(self.data) if self.length is None else self.length


def apply(op: Op, state: bytes) -> bytes | None:
    """The file after `op` on the file `state`, or None when `op` could not have done what it
    did there."""
    size = len(state)
    if op.error:  # EINVAL: the offset was beyond the end (no holes)
        return state if op.offset > size else None
    if op.kind == "fstat":
        return state if op.length == size else None
    if op.offset > size:  # it succeeded, so the offset was at most the end
        return None
    if op.kind == "read":
        return state if state[op.offset:op.offset + op.asked] == op.data else None
    return state[:op.offset] + op.data + state[op.offset + len(op.data):]


def _validate(ops: list[Op]) -> None:
    for op in ops:
        if op.kind not in KINDS:
            raise ValueError(f"unknown kind of operation {op}")
        if op.error and op.error != errnos.EINVAL:
            raise ValueError(f"only EINVAL failures can be explained by the file's size: {op}")
        if op.kind == "fstat" and op.length is None:
            raise ValueError(f"an fstat needs the size it saw (length): {op}")
        if op.kind == "read" and not op.error and len(op.data) > op.asked:
            raise ValueError(f"a read returned more than it asked for: {op}")


def find_order(ops: list[Op], initial: bytes, final: bytes) -> list[Op] | None:
    """A witness total order, or None when no order explains the history."""
    _validate(ops)
    ops = sorted(ops, key=lambda o: (o.start, o.client, o.index))
    by_client: dict[int, list[Op]] = {}
    for op in sorted(ops, key=lambda o: (o.client, o.index)):
        by_client.setdefault(op.client, []).append(op)
    failed: set[tuple[tuple[int, ...], bytes]] = set()  # (progress, digest of the file)
    order: list[Op] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(ops) + 100))

    def search(progress: tuple[int, ...], state: bytes) -> bool:
        if all(p == len(by_client[c]) for c, p in zip(by_client, progress)):
            return state == final
        key = (progress, hashlib.blake2b(state, digest_size=16).digest())
        if key in failed:
            return False
        pending = [by_client[c][p] for c, p in zip(by_client, progress) if p < len(by_client[c])]
        # Only an operation that began before every pending one finished may come next.
        horizon = min(op.end for op in pending)
        candidates = sorted((op for op in pending if op.start <= horizon), key=lambda o: o.end)
        # An observation (read, fstat, failure) that fits now may as well come now: it leaves the
        # file as it is, and whatever could follow it later can follow it now. No branching.
        for op in candidates:
            if op.kind != "write" or op.error:
                if apply(op, state) is not None:
                    candidates = [op]
                    break
        for op in candidates:
            new_state = apply(op, state)
            if new_state is None:
                continue
            nxt = tuple(p + (c == op.client) for c, p in zip(by_client, progress))
            order.append(op)
            if search(nxt, new_state):
                return True
            order.pop()
        failed.add(key)
        return False

    return list(order) if search(tuple(0 for _ in by_client), initial) else None
