"""A checker for histories of reads and writes on one file: is there one total order of all the
operations that respects each client's program order and real time, in which every read returns
exactly the bytes the writes before it left, and the final file is what the last writes left?

Such an order makes the history linearizable, hence sequentially consistent. The search is Wing
and Gong's: repeatedly pick an operation that no pending operation finished before, apply it to
the file, and backtrack when a read disagrees; failed (done set, file) pairs are remembered.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    client: int
    index: int          # position in its client's program order
    kind: str           # "read" or "write"
    offset: int
    data: bytes         # written bytes, or the bytes the read returned
    start: int          # monotonic ns when the call began
    end: int            # monotonic ns when it returned


def find_order(ops: list[Op], initial: bytes, final: bytes) -> list[Op] | None:
    """A witness total order, or None when no order explains the history."""
    ops = sorted(ops, key=lambda o: (o.start, o.client, o.index))
    by_client: dict[int, list[Op]] = {}
    for op in sorted(ops, key=lambda o: (o.client, o.index)):
        by_client.setdefault(op.client, []).append(op)
    failed: set[tuple[tuple[int, ...], bytes]] = set()
    order: list[Op] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(ops) + 100))

    def search(progress: tuple[int, ...], state: bytes) -> bool:
        if all(p == len(by_client[c]) for c, p in zip(by_client, progress)):
            return state == final
        if (progress, state) in failed:
            return False
        pending = [by_client[c][p] for c, p in zip(by_client, progress) if p < len(by_client[c])]
        # Only an operation that began before every pending one finished may come next.
        horizon = min(op.end for op in pending)
        for op in pending:
            if op.start > horizon:
                continue
            if op.kind == "read":
                if state[op.offset:op.offset + len(op.data)] != op.data:
                    continue
                new_state = state
            else:
                new_state = state[:op.offset] + op.data + state[op.offset + len(op.data):]
            nxt = tuple(p + (c == op.client) for c, p in zip(by_client, progress))
            order.append(op)
            if search(nxt, new_state):
                return True
            order.pop()
        failed.add((progress, state))
        return False

    return list(order) if search(tuple(0 for _ in by_client), initial) else None
