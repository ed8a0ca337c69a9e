"""A checker for histories of reads and writes on one file: is there one total order of all the
operations that respects each client's program order and real time, in which every read returns
exactly the bytes the writes before it left, and the final file is what the last writes left?

Such an order makes the history linearizable, hence sequentially consistent. The search is Wing
and Gong's: repeatedly pick an operation that no pending operation finished before, apply it to
the file, and backtrack when a read disagrees; failed (done set, file) pairs are remembered. (A
pending operation must also come before whatever begins after a later step of its client ended:
that matters once calls may never return, or return after their client's crash step.) An
observation (a read, fstat, EINVAL failure) that leaves the file as it is and fits is placed as
soon as it can be, without branching: that loses no order, and keeps long histories of many
clients tractable.

The file may grow: its state is its bytes, whose length is its size. A write needs its offset at
most at the end (no holes) and may extend the file; an append is a write at the end. A read of
`length` bytes at `offset` returns file[offset:offset + length], short near the end and empty at
it. A call that failed with EINVAL (offset beyond the end) is an observation too: it must be
placed where its offset was beyond the end. An fstat must be placed where the size was the one
it reported. Histories of a file whose size never changes (the only kind before files could
grow) are checked as before. Failed pairs are remembered by a digest of the file.

Faults (clients frozen or killed, fileservers restarted) are modelled, Jepsen-style, for files
whose size never changes (no fstat, EINVAL, nor writes past the end), in blocks of `block_size`
bytes, the clients' cache blocks:

- An operation's outcome is unknown when it failed with one of INDETERMINATE_ERRNOS, never
  returned (end None: its client died; it may be placed any time after its start), or is marked
  indeterminate. Such a read observed nothing: it is dropped. Such a write may have taken effect
  or not, and not atomically: each piece of it on one block takes effect or not, independently,
  at the write's one point in the order (its tokens kept conflicting operations out meanwhile).
- A client that lost its session (killed, or frozen past its lease and evicted) at one instant
  of a window given in `crashes` has a crash step there. In its program order the step follows
  its operations that began before the window and its successful ones; its others that began in
  the window (their outcome unknown) may come before the step or after it, those that began
  after the window come after it. An operation after the step did nothing: one whose outcome is
  unknown is ignored (it only bounds the step: the session was lost before it ended), a
  successful one cannot be explained. The cache was write-back: at the crash step each block the
  client wrote since the block's last flush point reverts to any version the block had since:
  the content before that client's first write since the flush point, or after any later change.
  A flush point is the start of the history, or a successful operation of another client that
  overlaps the block (its token request made the client write the block back first); a failed
  one is none, even if it took effect. Writes that went straight to the fileservers are covered
  too (that is permissive).

In this model the state is, per block, the set of its possible *worlds*: its content, and for
each client that may crash the versions the block had since that client's flush point (none
when the client's copy is clean). Pieces and crash reverts choose independently per block, so
per-block sets lose nothing. A write maps every world; an indeterminate write keeps each world
and adds it with its piece written; a read keeps the worlds it matches, and flushes the block
for the other clients; a crash step replaces each world by one per version. The final file must
be one world per block. A read is placed at once only when it keeps every world and flushes
nothing: one that narrows could rule out worlds that another, equally fitting read needed first,
and an early flush point forbids reverts a later one allows. Failed pairs are remembered by the
state itself: states share their unchanged blocks, so keeping them costs little.
"""
from __future__ import annotations

import errno as errnos
import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Callable, ClassVar

KINDS = ("read", "write", "fstat")
# Failures that leave the outcome unknown: the session was lost (ENOTCONN), or a fileserver was
# down (EHOSTDOWN, ETIMEDOUT, EIO). The call may have done some of its work, or all, or none.
INDETERMINATE_ERRNOS = frozenset({errnos.ENOTCONN, errnos.EHOSTDOWN, errnos.ETIMEDOUT, errnos.EIO})


@dataclass(frozen=True)
class Op:
    client: int
    index: int          # position in its client's program order
    kind: str           # "read", "write" or "fstat"
    offset: int
    data: bytes         # written bytes, or the bytes the read returned (b"" for fstat)
    start: int          # monotonic ns when the call began
    end: int | None     # monotonic ns when it returned; None: it never did (its client died)
    length: int | None = None  # read: bytes asked for (default len(data)); fstat: the size seen
    error: int = 0      # the errno when the call failed (-1): EINVAL, or an INDETERMINATE_ERRNOS
    indeterminate: bool = False  # the outcome is unknown for a reason the errno does not tell

    @property
    def asked(self) -> int:
        return len(self.data) if self.length is None else self.length

    @property
    def unknown(self) -> bool:
        """Whether the operation may have taken effect, in part, or not at all."""
        return self.indeterminate or self.end is None or self.error in INDETERMINATE_ERRNOS


@dataclass(frozen=True)
class Crash:
    """The step at which `client` lost its session, at one instant in [start, end] (end None:
    any time after start); witness orders hold it among the operations."""
    client: int
    start: int
    end: int | None
    kind: ClassVar[str] = "crash"


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


def find_order(ops: list[Op], initial: bytes, final: bytes, block_size: int | None = None,
               crashes: dict[int, tuple[int, int | None]] | None = None) -> list | None:
    """A witness total order, or None when no order explains the history.

    With `block_size`, `crashes` ({client: (t_lo, t_hi)}: it lost its session at one instant in
    that window of monotonic ns, t_hi None for "any time after t_lo") or operations whose outcome
    is unknown, the file's size must never change (else ValueError), and faults are modelled (see
    the module's docstring): the witness then holds a Crash step per lost client, and leaves out
    the operations that surely did nothing (failed reads, a lost client's calls after its crash
    step)."""
    if block_size is None and not crashes and not any(op.unknown for op in ops):
        _validate(ops)
        return _search(_by_client(ops), initial, apply,
                       observes=lambda op: op.kind != "write" or op.error,
                       accepts=lambda state: state == final,
                       key=lambda progress, state: (
                           progress, hashlib.blake2b(state, digest_size=16).digest()))
    if block_size is None:
        raise ValueError("faults are modelled per cache block: find_order needs block_size")
    crashes = crashes or {}
    size = len(initial)
    _validate_fixed_size(ops, size, crashes)
    # An operation that could not have returned what it did in a file of this size, whatever the
    # order: no order explains it.
    if any(op.kind == "read" and not op.unknown
           and (op.offset > size or len(op.data) != min(op.asked, size - op.offset))
           for op in ops):
        return None
    steps = _by_client([op for op in ops if not (op.kind == "read" and op.unknown)])
    crash_from = {}
    for client, (t_lo, t_hi) in crashes.items():
        mine = steps.setdefault(client, [])
        before = [op for op in mine if t_hi is None or op.start <= t_hi]
        after = [op for op in mine if t_hi is not None and op.start > t_hi]
        if any(not op.unknown for op in after):
            return None  # it succeeded after its session was lost
        steps[client] = before + [Crash(client, t_lo, t_hi)]
        # From there on, only failed calls that began in the window remain before the crash
        # step: it may come before any of them.
        crash_from[client] = max((i + 1 for i, op in enumerate(before)
                                  if not op.unknown or op.start < t_lo), default=0)
    blocks = _Blocks(block_size, list(crashes))
    return _search(steps, blocks.initial(initial), blocks.apply,
                   observes=lambda op: op.kind == "read",
                   accepts=lambda state: len(final) == size and blocks.holds(state, final),
                   key=lambda progress, state: (progress, state), crash_from=crash_from)


def _validate_fixed_size(ops: list[Op], size: int,
                         crashes: dict[int, tuple[int, int | None]]) -> None:
    for op in ops:
        if op.kind not in ("read", "write"):
            raise ValueError(f"faults are modelled for reads and writes only: {op}")
        if op.error and op.error not in INDETERMINATE_ERRNOS:
            raise ValueError(f"only failures that leave the outcome unknown are modelled "
                             f"with faults: {op}")
        if op.kind == "write" and op.offset + len(op.data) > size:
            raise ValueError(f"faults are modelled for files whose size never changes: {op}")
        if op.kind == "read" and not op.unknown and len(op.data) > op.asked:
            raise ValueError(f"a read returned more than it asked for: {op}")
    for client, (t_lo, t_hi) in crashes.items():
        if t_hi is not None and t_hi < t_lo:
            raise ValueError(f"client {client} lost its session in an empty window")


def _by_client(ops: list[Op]) -> dict[int, list]:
    """Each client's operations in program order."""
    by_client: dict[int, list] = {}
    for op in sorted(ops, key=lambda o: (o.client, o.index)):
        by_client.setdefault(op.client, []).append(op)
    return by_client


def _deadlines(steps: list) -> list[float]:
    """For each step of one client, the earliest end among it and its client's later steps: it
    must come before whatever begins after that (a call that never returned still precedes its
    client's crash step, and a frozen call that returned late still precedes the crash)."""
    deadlines, earliest = [], math.inf
    for op in reversed(steps):
        earliest = min(earliest, math.inf if op.end is None else op.end)
        deadlines.append(earliest)
    return deadlines[::-1]


def _search(steps: dict[int, list], initial, apply: Callable, observes: Callable,
            accepts: Callable, key: Callable,
            crash_from: dict[int, int] | None = None) -> list | None:
    """Wing and Gong's search for an order of all `steps` (each client's, in program order) from
    the state `initial`: `apply(step, state)` is the next state or None, `accepts` judges the
    last state, and failed (progress, state) pairs are remembered by `key(progress, state)`.

    A client in `crash_from` has its crash step last; from that position on it may come at once
    instead, its operations in between then coming after it and doing nothing. They still
    bound it: it came before they ended, which their deadlines say."""
    lanes = [(mine, _deadlines(mine)) for mine in steps.values()]
    lane_of = {client: i for i, client in enumerate(steps)}
    early = [(lane_of[client], p) for client, p in (crash_from or {}).items()]
    done = tuple(len(mine) for mine in steps.values())
    failed: set = set()
    order: list = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * sum(done) + 100))

    def search(progress: tuple[int, ...], state) -> bool:
        if progress == done:
            return accepts(state)
        memo = key(progress, state)
        if memo in failed:
            return False
        pending = [(deadlines[p], mine[p])
                   for (mine, deadlines), p in zip(lanes, progress) if p < len(mine)]
        for i, first in early:
            mine, deadlines = lanes[i]
            if first <= progress[i] < len(mine) - 1:
                pending.append((deadlines[progress[i]], mine[-1]))
        pending.sort(key=_deadline)
        # Only a step that began before every pending one had to be done may come next.
        horizon = pending[0][0]
        candidates = [op for _, op in pending if op.start <= horizon]
        # An observation that fits now and leaves the state as it is may as well come now:
        # whatever could follow it later can follow it now. No branching.
        for op in candidates:
            if observes(op) and apply(op, state) is state:
                candidates = [op]
                break
        for op in candidates:
            new_state = apply(op, state)
            if new_state is None:
                continue
            i = lane_of[op.client]
            mine = lanes[i][0]
            # A crash step that came early ends its client's steps too.
            moved = len(mine) if op is mine[-1] else progress[i] + 1
            order.append(op)
            if search(progress[:i] + (moved,) + progress[i + 1:], new_state):
                return True
            order.pop()
        failed.add(memo)
        return False

    return list(order) if search(tuple(0 for _ in steps), initial) else None


def _deadline(pending: tuple[float, Op | Crash]) -> float:
    return pending[0]


CLEAN = frozenset()  # no versions: the client's copy of the block is clean


class _Blocks:
    """The fault model's states: per block, a frozenset of worlds (content, versions since the
    flush point for each client that may crash, in `crashable`'s order)."""

    def __init__(self, block_size: int, crashable: list[int]):
        self.block_size = block_size
        self.slot = {client: 1 + i for i, client in enumerate(crashable)}  # its world index
        self.pieces_of: dict[Op, list[tuple[int, int, int, bytes]]] = {}

    def initial(self, data: bytes) -> tuple[frozenset, ...]:
        clean = (CLEAN,) * len(self.slot)
        return tuple(frozenset({(data[at:at + self.block_size], *clean)})
                     for at in range(0, len(data), self.block_size))

    def holds(self, state: tuple[frozenset, ...], data: bytes) -> bool:
        """Whether one world per block makes the file `data`."""
        return all(any(world[0] == data[b * self.block_size:(b + 1) * self.block_size]
                       for world in worlds) for b, worlds in enumerate(state))

    def pieces(self, op: Op) -> list[tuple[int, int, int, bytes]]:
        """(block, start, end inside the block, bytes) of each block the operation touches."""
        if op not in self.pieces_of:
            size, first, last = self.block_size, op.offset, op.offset + len(op.data)
            self.pieces_of[op] = [
                (b, max(first, b * size) - b * size, min(last, (b + 1) * size) - b * size,
                 op.data[max(first, b * size) - first:min(last, (b + 1) * size) - first])
                for b in range(first // size, -(-last // size))]
        return self.pieces_of[op]

    def apply(self, op: Op | Crash, state: tuple[frozenset, ...]) -> tuple[frozenset, ...] | None:
        """The state after `op`, None when it cannot fit; `state` itself when nothing changed."""
        if isinstance(op, Crash):
            slot = self.slot[op.client]
            changed = {b: frozenset(new for world in worlds for new in _crashed(world, slot))
                       for b, worlds in enumerate(state) if any(world[slot] for world in worlds)}
        else:
            mine = self.slot.get(op.client, 0)  # 0: its writes never revert
            changed = {}
            for b, lo, hi, piece in self.pieces(op):
                worlds = state[b]
                if op.kind == "read":
                    new = frozenset(_flushed(world, mine) for world in worlds
                                    if world[0][lo:hi] == piece)
                    if not new:
                        return None
                elif op.unknown:
                    new = worlds | {_written(world, lo, hi, piece, mine, flush=False)
                                    for world in worlds}
                else:
                    new = frozenset(_written(world, lo, hi, piece, mine, flush=True)
                                    for world in worlds)
                if new != worlds:
                    changed[b] = new
        if not changed:
            return state
        return tuple(changed.get(b, worlds) for b, worlds in enumerate(state))


def _flushed(world: tuple, keep: int) -> tuple:
    """`world` after a successful operation on its block by the client in slot `keep`: the other
    clients wrote their copies of the block back first."""
    return (world[0], *(versions if j == keep else CLEAN
                        for j, versions in enumerate(world[1:], 1)))


def _written(world: tuple, lo: int, hi: int, piece: bytes, mine: int, flush: bool) -> tuple:
    """`world` with `piece` written at [lo, hi) by the client in slot `mine`; `flush` when the
    write succeeded (a flush point for the others)."""
    old = world[0]
    new = old[:lo] + piece + old[hi:]
    history = []
    for j, versions in enumerate(world[1:], 1):
        if j == mine:  # dirty since this write, if not before: its crash may undo it
            versions = (versions or frozenset({old})) | {new}
        elif flush:
            versions = CLEAN
        elif versions:  # a failed write is no flush point: the dirty copy may still revert
            versions = versions | {new}
        history.append(versions)
    return (new, *history)


def _crashed(world: tuple, slot: int):
    """The worlds after the client in `slot` lost its session: the block reverts to any version
    it had since the client's flush point (a clean block keeps its content)."""
    for content in world[slot] or (world[0],):
        yield (content, *(CLEAN if j == slot else versions | {content} if versions else versions
                          for j, versions in enumerate(world[1:], 1)))
