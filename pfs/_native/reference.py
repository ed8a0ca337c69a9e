"""Plain Python statements of what the C core computes, written to be obviously right, not fast.

Used ONLY by the tests (as the oracle the C results must match) and by bench/bench_native.py (as
the baseline). PFS never calls this at run time and never falls back to it: without the compiled
`pfs._native._core` the package does not import.

Python ints do not overflow, so the uint64 limits of the C core are not modelled here; the tests
state those separately.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pfs._native import EEXIST, EINVAL, EMISS, ENOSPC, NativeError


def locate(off: int, block_size: int, stripe_blocks: int, width: int) -> tuple[int, int]:
    """(server index, local offset) of the byte at file offset `off`: docs/design.md, word for word."""
    b = off // block_size
    u = b // stripe_blocks
    server = u % width
    local = (u // width) * stripe_blocks * block_size + off % (stripe_blocks * block_size)
    return server, local


def _check_layout(block_size: int, stripe_blocks: int, width: int) -> None:
    if block_size < 1 or stripe_blocks < 1 or width < 1:
        raise ValueError("block_size, stripe_blocks and width must be >= 1")


def stripe_segments(offset: int, length: int, block_size: int, stripe_blocks: int,
                    width: int) -> list[tuple[int, int, int, int]]:
    """(server, local_offset, file_offset, length) of each stripe unit the range touches, in file
    order: walk the range, cutting it at every unit boundary."""
    _check_layout(block_size, stripe_blocks, width)
    unit = block_size * stripe_blocks
    segments = []
    off, end = offset, offset + length
    while off < end:
        unit_end = (off // unit + 1) * unit
        n = min(unit_end, end) - off
        server, local = locate(off, block_size, stripe_blocks, width)
        segments.append((server, local, off, n))
        off += n
    return segments


def stripe_count(offset: int, length: int, block_size: int, stripe_blocks: int) -> int:
    """The number of stripe units the range touches."""
    return len(stripe_segments(offset, length, block_size, stripe_blocks, 1))


def stripe_extents(offset: int, length: int, block_size: int, stripe_blocks: int,
                   width: int) -> list[tuple[int, int]]:
    """(local_start, local_length) for every server index; (0, 0) for a server not touched. A
    server's extent starts at its first segment and adds up all of its segments."""
    extents = [(0, 0)] * width
    for server, local, _, n in stripe_segments(offset, length, block_size, stripe_blocks, width):
        start, size = extents[server]
        extents[server] = (local, n) if size == 0 else (start, size + n)
    return extents


def scatter(offset: int, length: int, block_size: int, stripe_blocks: int, width: int,
            src: Any) -> list[bytearray]:
    """One bytearray per touched server, in server order, holding that server's extent: every
    byte is put where `locate` says it lives."""
    extents = stripe_extents(offset, length, block_size, stripe_blocks, width)
    outs = {s: bytearray(size) for s, (_, size) in enumerate(extents) if size}
    data = memoryview(src).cast("B")
    for i in range(length):
        server, local = locate(offset + i, block_size, stripe_blocks, width)
        outs[server][local - extents[server][0]] = data[i]
    return [outs[s] for s in sorted(outs)]


def gather(offset: int, length: int, block_size: int, stripe_blocks: int, width: int,
           sources: list[Any]) -> bytearray:
    """The file bytes [offset, offset + length) read back, byte by byte, from per-server extent
    buffers given in server order (one per touched server)."""
    extents = stripe_extents(offset, length, block_size, stripe_blocks, width)
    touched = [s for s, (_, size) in enumerate(extents) if size]
    views = {s: memoryview(buf).cast("B") for s, buf in zip(touched, sources)}
    out = bytearray(length)
    for i in range(length):
        server, local = locate(offset + i, block_size, stripe_blocks, width)
        out[i] = views[server][local - extents[server][0]]
    return out


# CRC32C (Castagnoli): the register is 32 bits, least significant bit first ("reflected"), so
# bit 31 holds the coefficient of x^0 and bit 0 that of x^31. POLY is 0x1EDC6F41 reflected.

POLY = 0x82F63B78
P = 0x11EDC6F41  # the same polynomial in plain form, x^32 term included: bit i is x^i
ONES = 0xFFFFFFFF


def crc32c_step(state: int, byte: int) -> int:
    """The register after one more byte: eight one-bit shifts, dividing by the polynomial."""
    state ^= byte
    for _ in range(8):
        state = (state >> 1) ^ (POLY if state & 1 else 0)
    return state


def crc32c(data: Any, crc: int = 0) -> int:
    """The CRC32C of data, continuing `crc` (the CRC of the bytes before; 0 to start): the register
    starts at all ones and the result is inverted, so crc32c(a + b) == crc32c(b, crc32c(a))."""
    state = crc ^ ONES
    for byte in memoryview(data).cast("B"):
        state = crc32c_step(state, byte)
    return state ^ ONES


def unit_pieces(length: int, unit: int, first_offset: int) -> list[tuple[int, int]]:
    """(start, length) of each piece of a buffer cut at unit boundaries, where byte 0 of the buffer
    lies first_offset bytes into its unit: the stripe segments of [first_offset, first_offset +
    length) when a stripe unit is one block of `unit` bytes."""
    return [(file_offset - first_offset, n)
            for _, _, file_offset, n in stripe_segments(first_offset, length, unit, 1, 1)]


def unit_crcs(data: Any, unit: int, first_offset: int) -> list[int]:
    """The CRC32C of each piece."""
    view = memoryview(data).cast("B")
    return [crc32c(view[s:s + n]) for s, n in unit_pieces(len(view), unit, first_offset)]


def verify_units(data: Any, unit: int, first_offset: int, expected: Any) -> int:
    """The index of the first piece whose CRC32C is not the expected one, or -1."""
    crcs = unit_crcs(data, unit, first_offset)
    if len(crcs) != len(expected):
        raise ValueError(f"{len(expected)} expected CRCs for {len(crcs)} pieces")
    return next((i for i, (a, b) in enumerate(zip(crcs, expected)) if a != b), -1)


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """crc32c(a + b) from crc1 = crc32c(a), crc2 = crc32c(b) and len2 = len(b): crc1 run through
    len2 zero bytes, then crc2 added. (a's final inversion, run through, cancels b's all-ones
    start; b's own final inversion is the one a + b ends with.) O(len2)."""
    state = crc1
    for _ in range(len2):
        state = crc32c_step(state, 0)
    return state ^ crc2


def _reflect32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def multmodp(a: int, b: int) -> int:
    """a * b modulo the polynomial, both in the register's reflected form: schoolbook carry-less
    multiplication and long division on the plain forms."""
    a, b = _reflect32(a), _reflect32(b)
    product = 0
    for i in range(32):
        if b >> i & 1:
            product ^= a << i
    for i in range(62, 31, -1):
        if product >> i & 1:
            product ^= P << (i - 32)
    return _reflect32(product)


def xpow(n: int) -> int:
    """x**n modulo the polynomial, in reflected form, by repeated squaring."""
    result, square = 1 << 31, 1 << 30  # x**0, x**1
    while n:
        if n & 1:
            result = multmodp(result, square)
        square = multmodp(square, square)
        n >>= 1
    return result


class BlockTable:
    """The block table's contract on an OrderedDict (oldest first). Slot numbers are its own,
    unless `insert` is told which free slot to take (a test mirroring the C table's choice, so
    that per-slot memory and flags can be compared slot for slot)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slots: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._free = list(range(capacity))

    def lookup(self, file_id: int, block: int, touch: bool = True) -> int | None:
        slot = self._slots.get((file_id, block))
        if slot is not None and touch:
            self._slots.move_to_end((file_id, block))
        return slot

    def insert(self, file_id: int, block: int, slot: int | None = None) -> int:
        if (file_id, block) in self._slots:
            raise NativeError(EEXIST, "block table insert")
        if not self._free:
            raise NativeError(ENOSPC, "block table insert")
        if slot is None:
            slot = self._free.pop()
        else:
            self._free.remove(slot)  # ValueError: that slot is not free
        self._slots[(file_id, block)] = slot
        return slot

    def remove(self, file_id: int, block: int) -> int | None:
        slot = self._slots.pop((file_id, block), None)
        if slot is not None:
            self._free.append(slot)
        return slot

    def lru(self) -> int | None:
        return next(iter(self._slots.values()), None)

    def key(self, slot: int) -> tuple[int, int]:
        return next(k for k, s in self._slots.items() if s == slot)

    def file_slots(self, file_id: int) -> list[int]:
        return [s for (f, _), s in self._slots.items() if f == file_id]

    def __len__(self) -> int:
        return len(self._slots)

    # The hit path, one byte at a time: byte i of the range is file byte offset + i, in block
    # (offset + i) // block_size at (offset + i) % block_size, which lives in its slot's block at
    # slot * block_size. The walk stops at the first byte whose block is absent or not ready.

    def _hits(self, file_id: int, offset: int, length: int, block_size: int,
              ready: Any) -> tuple[list[tuple[int, int]], list[int]]:
        """(i, memory index) of every byte of the range before the first miss, and the slots
        those bytes are in, in file order."""
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        hits: list[tuple[int, int]] = []
        slots: list[int] = []
        for i in range(length):
            block, within = divmod(offset + i, block_size)
            slot = self._slots.get((file_id, block))
            if slot is None or not ready[slot]:
                break
            hits.append((i, slot * block_size + within))
            if not slots or slots[-1] != slot:
                slots.append(slot)
        return hits, slots

    def _touch(self, slots: list[int]) -> None:
        keys = {s: k for k, s in self._slots.items()}
        for slot in slots:
            self._slots.move_to_end(keys[slot])

    def read(self, file_id: int, offset: int, length: int, memory: Any, block_size: int,
             ready: Any, dst: Any) -> tuple[int, int]:
        hits, slots = self._hits(file_id, offset, length, block_size, ready)
        out, mem = memoryview(dst).cast("B"), memoryview(memory).cast("B")
        for i, at in hits:
            out[i] = mem[at]
        self._touch(slots)
        return len(hits), len(slots)

    def write(self, file_id: int, offset: int, length: int, memory: Any, block_size: int,
              ready: Any, dirty: Any, src: Any) -> tuple[int, int]:
        hits, slots = self._hits(file_id, offset, length, block_size, ready)
        data, mem = memoryview(src).cast("B"), memoryview(memory).cast("B")
        for i, at in hits:
            mem[at] = data[i]
        for slot in slots:
            dirty[slot] = 1
        self._touch(slots)
        return len(hits), len(slots)

    def evictable(self, busy: Any) -> int | None:
        return next((s for s in self._slots.values() if not busy[s]), None)


class FastReads:
    """The fast path's contract (csrc/fastread.h) over a reference BlockTable: an fd's entry
    lives in place fd % slots, and a read is served whole from ready blocks or not at all."""

    def __init__(self, table: BlockTable, memory: Any, block_size: int, ready: Any,
                 slots: int) -> None:
        self.table, self.memory, self.block_size, self.ready = table, memory, block_size, ready
        self.slots = slots
        self.entries: dict[int, dict[str, int]] = {}  # place -> fd's entry
        self.deadline = 0
        self.hits = 0

    def allow(self, fd: int, file_id: int, size: int, start: int, end: int,
              read_next: int) -> None:
        if fd < 0 or start > end:
            raise NativeError(EINVAL, "fast path allow")
        self.entries[fd % self.slots] = dict(fd=fd, file=file_id, size=size, start=start,
                                             end=end, read_next=read_next)

    def _entry(self, fd: int) -> dict[str, int] | None:
        e = self.entries.get(fd % self.slots) if fd >= 0 else None
        return e if e is not None and e["fd"] == fd else None

    def deny(self, fd: int) -> int | None:
        e = self._entry(fd)
        if e is None:
            return None
        del self.entries[fd % self.slots]
        return e["read_next"]

    def deny_all(self) -> None:
        self.entries.clear()

    def lease(self, deadline_ns: int) -> None:
        self.deadline = deadline_ns

    def take_hits(self) -> int:
        hits, self.hits = self.hits, 0
        return hits

    def read_at(self, now_ns: int, fd: int, offset: int, length: int, dst: Any) -> int:
        e = self._entry(fd)
        if len(dst) < length:
            return EINVAL
        end = offset + length
        if (e is None or length == 0 or not e["start"] <= offset < end <= e["end"]
                or end > e["size"] or offset == e["read_next"] or now_ns >= self.deadline):
            return EMISS
        B = self.block_size
        blocks = range(offset // B, (end - 1) // B + 1)
        slots = [self.table.lookup(e["file"], b, touch=False) for b in blocks]
        if any(s is None or not self.ready[s] for s in slots):
            return EMISS
        for b, slot in zip(blocks, slots):
            self.table.lookup(e["file"], b)  # touched, in file order
            lo, hi = max(offset, b * B), min(end, (b + 1) * B)
            dst[lo - offset:hi - offset] = self.memory[slot * B + lo - b * B:slot * B + hi - b * B]
        self.hits += len(slots)
        e["read_next"] = end
        return length
