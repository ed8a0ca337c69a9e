"""The client block cache: LRU, write-back, kept coherent by tokens (docs/consistency.md).

Rules, all of them here:
- A block enters the cache only while the caller says its tokens cover all of it (`cacheable`);
  bytes of a partly covered block that is not cached go straight to the fileservers, and so do
  the uncached blocks of an operation larger than half the cache. A cached block leaves only
  through this module (eviction, revocation, close), after its write-back.
- A write covering every existing byte of an uncached block does not read it first.
- A dirty block is written back when it is evicted (a writeback), when a revocation touches it
  (a writeback; then dropped for a write request (an invalidation) or kept clean for a read
  request), on fsync (kept, clean; not counted), and at close (a close writeback; every block
  of the file is then dropped, a close eviction).
- Counters count blocks, once per block and operation.
The block table and LRU order are the C core's; the block memory is ours, so a hit is one copy
straight into the caller's buffer. Not thread-safe: the client calls it under its lock.
"""
from __future__ import annotations

from typing import Callable, Protocol

from pfs._native import BlockTable

from .metadata import ExecStat


class CachedFile(Protocol):
    file_id: int
    block_size: int
    size: int  # everything below it exists (including this client's unwritten-back writes)


class Backing(Protocol):
    """Where blocks come from and go to: the fileservers."""
    def read(self, f: CachedFile, offset: int, length: int, dst: memoryview) -> None: ...
    def write(self, f: CachedFile, offset: int, src: memoryview) -> None: ...


Cacheable = Callable[[int, int], bool]  # (block start, block end) -> covered by our tokens?


class BlockCache:
    def __init__(self, capacity: int, backing: Backing) -> None:
        self.capacity = capacity
        self.stats = ExecStat()
        self._backing = backing
        self._table = BlockTable(capacity) if capacity > 0 else None
        self._memory: list[bytearray | None] = [None] * capacity
        self._dirty = [False] * capacity
        self._files: dict[int, CachedFile] = {}

    # --- reads and writes -------------------------------------------------------------------
    def read(self, f: CachedFile, offset: int, dst: memoryview, cacheable: Cacheable) -> None:
        """dst[:] = file bytes [offset, offset + len(dst)), all below f.size."""
        B, end = f.block_size, offset + len(dst)
        misses: list[int] = []
        for block, start, stop, slot in self._blocks(f, offset, end, cacheable, direct=(
                lambda s, e: self._backing.read(f, s, e - s, dst[s - offset:e - offset]))):
            if slot is None:
                misses.append(block)
            else:
                self.stats.num_read_hits += 1
                dst[start - offset:stop - offset] = self._memory[slot][start - block * B:stop - block * B]
        for first, last in _runs(misses):
            # One fetch for each run of missing blocks, then each block into its slot.
            run_start = first * B
            run = memoryview(bytearray(min((last + 1) * B, f.size) - run_start))
            self._backing.read(f, run_start, len(run), run)
            for block in range(first, last + 1):
                memory = self._memory[self._fill(f, block)]
                piece = run[block * B - run_start:(block + 1) * B - run_start]
                memory[:len(piece)] = piece
                start, stop = max(offset, block * B), min(end, (block + 1) * B)
                dst[start - offset:stop - offset] = memory[start - block * B:stop - block * B]

    def write(self, f: CachedFile, offset: int, src: memoryview, cacheable: Cacheable,
              old_size: int) -> None:
        """File bytes [offset, offset + len(src)) = src; f.size already includes them."""
        B, end = f.block_size, offset + len(src)
        for block, start, stop, slot in self._blocks(f, offset, end, cacheable, direct=(
                lambda s, e: self._backing.write(f, s, src[s - offset:e - offset]))):
            if slot is not None:
                self.stats.num_write_hits += 1
            else:
                slot = self._fill(f, block)
                existing = min((block + 1) * B, old_size) - block * B  # bytes the block had
                if (start > block * B and existing > 0) or stop - block * B < existing:
                    try:
                        self._backing.read(f, block * B, existing,
                                           memoryview(self._memory[slot])[:existing])
                    except OSError:
                        self._remove(f, [block])  # never leave a zeroed block looking valid
                        raise
            memory = self._memory[slot]
            memory[start - block * B:stop - block * B] = src[start - offset:stop - offset]
            self._dirty[slot] = True

    def _blocks(self, f: CachedFile, start: int, end: int, cacheable: Cacheable,
                direct: Callable[[int, int], None]):
        """Yields (block, start, stop, slot or None) for the blocks of [start, end) that are
        cached, or are to be; passes every maximal run of the other bytes to `direct`.

        A cached block is always used, even while a revocation touching it is pending: until
        that revocation writes it back, the cached copy is the newest, and the fileservers may
        hold older bytes. An operation over more blocks than half the cache goes around it for
        the blocks not cached: one striped transfer instead of filling the cache with blocks
        that evict each other (and are written back one by one)."""
        B = f.block_size
        first, last = start // B, (end - 1) // B
        admit = self._table is not None and last - first + 1 <= max(1, self.capacity // 2)
        run_start = None
        for block in range(first, last + 1):
            lo, hi = max(start, block * B), min(end, (block + 1) * B)
            slot = self._table.lookup(f.file_id, block) if self._table is not None else None
            if slot is not None or (admit and cacheable(block * B, (block + 1) * B)):
                if run_start is not None:
                    direct(run_start, lo)
                    run_start = None
                yield block, lo, hi, slot
            elif run_start is None:
                run_start = lo
        if run_start is not None:
            direct(run_start, end)

    def _fill(self, f: CachedFile, block: int) -> int:
        """A zeroed slot for the block, evicting the least recently used block if full."""
        while len(self._table) >= self.capacity:
            file_id, victim = self._table.key(self._table.lru())
            self.stats.num_writebacks += self._write_back(self._files[file_id], [victim])
            self._remove(self._files[file_id], [victim])
            self.stats.num_evictions += 1
        slot = self._table.insert(f.file_id, block)
        self._files[f.file_id] = f
        memory = self._memory[slot]
        if memory is None or len(memory) != f.block_size:
            memory = self._memory[slot] = bytearray(f.block_size)
        else:
            memory[:] = bytes(f.block_size)
        return slot

    # --- giving blocks up -------------------------------------------------------------------
    def revoke(self, f: CachedFile, start: int, end: int, drop: bool) -> None:
        """Before a token on [start, end) is given up: write back dirty blocks touching it, and
        drop them when the token is dropped (kept clean when it is downgraded to READ). If the
        write-back fails the blocks are dropped all the same: without the token, their bytes
        may no longer be written."""
        B = f.block_size
        blocks = [b for b in self._cached_blocks(f) if b * B < end and start < (b + 1) * B]
        try:
            self.stats.num_writebacks += self._write_back(f, blocks)
        except OSError:
            drop = True
            raise
        finally:
            if drop:
                self.stats.num_invalidations += len(blocks)
                self._remove(f, blocks)

    def flush(self, f: CachedFile) -> None:
        """Writes back the file's dirty blocks and keeps them, clean (fsync)."""
        self._write_back(f, self._cached_blocks(f))

    def close(self, f: CachedFile) -> None:
        """Writes back the file's dirty blocks and drops all of them (close); they are dropped
        even when the write-back fails, as the file's tokens are about to go."""
        blocks = self._cached_blocks(f)
        try:
            self.stats.num_close_writebacks += self._write_back(f, blocks)
        finally:
            self._remove(f, blocks)
            self.stats.num_close_evictions += len(blocks)
            self._files.pop(f.file_id, None)

    def truncate(self, f: CachedFile, size: int) -> None:
        """The file now ends at `size`: blocks past it are dropped, dirty or not (their bytes no
        longer exist), and the rest of the last block is zeroed (an extension reads zeros)."""
        B = f.block_size
        blocks = self._cached_blocks(f)
        self._remove(f, [b for b in blocks if b * B >= size])
        if size % B and size // B in blocks:
            memory = self._memory[self._slot(f, size // B)]
            memory[size % B:] = bytes(B - size % B)

    def drop_all(self) -> dict[int, int]:
        """Forgets every block without writing anything back (the session is gone, and with
        it the right to write); returns how many dirty blocks each file lost."""
        lost: dict[int, int] = {}
        for file_id, f in list(self._files.items()):
            blocks = self._cached_blocks(f)
            dirty = sum(self._dirty[self._slot(f, b)] for b in blocks)
            if dirty:
                lost[file_id] = dirty
            self._remove(f, blocks)
        self._files.clear()
        return lost

    def _cached_blocks(self, f: CachedFile) -> list[int]:
        if self._table is None:
            return []
        return sorted(self._table.key(slot)[1] for slot in self._table.file_slots(f.file_id))

    def _slot(self, f: CachedFile, block: int) -> int:
        return self._table.lookup(f.file_id, block, touch=False)

    def _write_back(self, f: CachedFile, blocks: list[int]) -> int:
        """Writes back the dirty blocks among `blocks` (ascending), each run of consecutive
        ones in one striped write, and marks them clean; returns how many were dirty."""
        B = f.block_size
        dirty = [b for b in blocks if self._dirty[self._slot(f, b)]]
        for first, last in _runs(dirty):
            length = min((last + 1) * B, f.size) - first * B  # nothing past the end of file
            if length > 0:
                pieces = [memoryview(self._memory[self._slot(f, b)]) for b in range(first, last + 1)]
                data = pieces[0] if len(pieces) == 1 else memoryview(b"".join(pieces))
                self._backing.write(f, first * B, data[:length])
            for b in range(first, last + 1):
                self._dirty[self._slot(f, b)] = False
        return len(dirty)

    def _remove(self, f: CachedFile, blocks: list[int]) -> None:
        for block in blocks:
            self._dirty[self._table.remove(f.file_id, block)] = False


def _runs(blocks: list[int]):
    """Maximal runs of consecutive numbers, as (first, last)."""
    first = last = None
    for block in blocks:
        if last is not None and block == last + 1:
            last = block
            continue
        if first is not None:
            yield first, last
        first = last = block
    if first is not None:
        yield first, last
