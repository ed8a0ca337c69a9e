"""The client block cache: LRU, write-back, kept coherent by tokens (docs/consistency.md).

Rules, all of them here:
- A block enters the cache only while the caller says its tokens cover all of it (`cacheable`:
  READ tokens for a read, WRITE tokens for a write); bytes of a partly covered block that is not
  cached go straight to the fileservers, and so do
  the uncached blocks of an operation larger than half the cache or of STREAMING_BYTES or more
  (one striped transfer straight to or from the caller's buffer, rather than blocks that evict
  each other and cost a copy more). A cached block is always used while it is there: until a
  revocation writes it back, it is the newest copy. It leaves only through this module.
- A write covering every existing byte of an uncached block does not read it first. A write
  dirties a cached block only if WRITE tokens cover all of it (a dirty block is written back
  whole); into a clean cached block they cover only in part, it writes through: its bytes go to
  the fileservers and into the cached copy, which stays clean. A dirty block stays this
  client's, whole, until it is written back, and takes writes in place meanwhile.
- Write-back hands a run of consecutive dirty blocks of a file to the backing as one striped
  write, which returns once the bytes are copied into its requests (write-behind: the backing
  keeps them in flight, and readers of those bytes wait for them); the blocks are then clean.
  Once more than `max_dirty_bytes` are dirty, a write writes back the oldest dirty runs until
  half that is (the bound on dirty memory, as Lustre's max_dirty_mb). Eviction takes the least
  recently used block, writing it back first if it is dirty (a writeback).
- A revocation writes back the dirty blocks touching its range (writebacks) and drops them (a
  write request: invalidations) or keeps them clean (a read request); fsync writes back and
  keeps them (not counted); close writes back (close writebacks) and drops every block of the
  file (close evictions). Counters count blocks, once per block and operation.
- Sequential reads are read ahead: after a read that starts where the last one of the file
  ended, the next blocks (twice the read, or up to four times it where that fills a stripe; at
  most a quarter of the cache) are cached or being fetched in the background; a read of a
  whole stripe or more streams (one striped transfer keeps every fileserver busy) and reads
  nothing ahead.
- A small random read (not sequential, its checksum units spanning less than a block) fetches
  only the units that hold its bytes, straight into the caller's buffer, and caches nothing:
  a whole block would cost a transfer many times its size, for bytes a random reader may never
  ask for. A block missed that way twice among the last `capacity` such misses is fetched whole
  and cached on the second (a reader that comes back to it is worth the block). Nothing partly
  fetched is ever in the cache, so a cached block is always whole.

Memory: the cache's blocks are an anonymous mapping, whose pages the kernel provides when a block
is first used, so a Client costs memory for what it caches, not for its capacity; read-ahead runs
on threads shared by every cache of the process (pfs/runtime/holdings.py).

The caller's lock (its condition is given at construction) guards everything here, and data
operations are called with it held once. Fetches from the fileservers run with it released; a
block being filled is loading (busy, not ready), and whoever needs it waits until it is done.
"""
from __future__ import annotations

import contextlib
import mmap
import threading
from typing import Callable, Iterator, Protocol

from pfs._native import BlockTable, FastReads

from pfs.metadata import ExecStat
from pfs.protocol.ranges import INFINITY
from pfs.protocol.wire import CHECKSUM_UNIT
from pfs.runtime import holdings
from pfs.runtime.threads import Workers


class CachedFile(Protocol):
    fd: int  # the fd it is open as (its entry on the fast path)
    file_id: int
    block_size: int
    size: int  # everything below it exists (including this client's unwritten-back writes)
    read_next: int  # where a sequential read of the file would start next
    stripe_bytes: int  # one stripe unit on every column: what keeps every fileserver busy


class Backing(Protocol):
    """Where blocks come from and go to: the fileservers. `write` returns once the bytes are
    copied (the write goes on in the background); `read` waits for earlier writes it overlaps."""
    def read(self, f: CachedFile, offset: int, length: int, dst: memoryview) -> None: ...
    def write(self, f: CachedFile, offset: int, src: memoryview) -> None: ...


Cacheable = Callable[[int, int], bool]  # (block start, block end) -> covered by our tokens?
# The kinds of an operation's runs; THROUGH: cached blocks a write updates in place and sends on
CACHED, LOADING, DIRECT, THROUGH = "cached", "loading", "direct", "through"

#: Operations of at least this many bytes stream around the cache for the blocks it does not
#: hold (one striped transfer straight to or from the caller's buffer, with no extra copy).
STREAMING_BYTES = 1 << 20
#: Read-ahead fetches run on this many threads at most, shared by the caches of a process.
READAHEAD_THREADS = 4
#: Bytes of one write-back at most (it is one striped write).
MAX_RUN_BYTES = 8 << 20
#: Dirty bytes a cache holds at most: half the default cache (beyond it, writes hand the oldest
#: back; a smaller cache is bounded by eviction alone).
MAX_DIRTY_BYTES = 32 << 20


class BlockCache:
    def __init__(self, capacity: int, block_size: int, backing: Backing,
                 changed: threading.Condition, max_dirty_bytes: int = MAX_DIRTY_BYTES) -> None:
        self.capacity = capacity
        self._max_dirty = max(1, max_dirty_bytes // block_size)  # in blocks
        self.block_size = block_size  # of every slot; files with other blocks are not cached
        self._stats = ExecStat()
        self._backing = backing
        self._changed = changed  # its lock is the caller's
        self._table = BlockTable(capacity) if capacity > 0 else None
        # An anonymous private mapping: its pages become resident when a block is first used
        # (a bytearray is zeroed, and so resident, all at once) and go at stop().
        self._memory = mmap.mmap(-1, capacity * block_size, flags=mmap.MAP_PRIVATE) \
            if capacity else bytearray()
        self._view = memoryview(self._memory)
        self._ready = bytearray(capacity)   # the slot's bytes are valid
        self._dirty = bytearray(capacity)
        self._busy = bytearray(capacity)    # loading: not to be evicted
        self._dirty_order: dict[int, None] = {}  # dirty slots, oldest first
        self._loading: set[int] = set()
        self._files: dict[int, CachedFile] = {}
        self._missed: dict[tuple[int, int], None] = {}  # blocks small random reads went around
        self._generation = 0  # bumped by drop_all: fetches started before it must not fill
        self._holdings = holdings.Holdings()
        self._holdings.watch(self)
        self._readahead = self._holdings.hold(("read-ahead",), lambda: Workers(
            READAHEAD_THREADS, "pfs-ahead")) if capacity else None
        self._fast = FastReads(self._table, self._memory, block_size, self._ready) \
            if capacity else None
        #: fast_read(fd, buf, length, offset): the bytes of a read served from the cache in one
        #: C call (all of length), or -1: the caller takes the general path. See `allow`.
        self.fast_read = self._fast.read if capacity else _no_fast_read

    def stop(self) -> None:
        """Lets go of read-ahead and of the memory of cached blocks (once the cache has been
        dropped or closed: nothing is cached any more)."""
        self._holdings.release_all()
        if isinstance(self._memory, mmap.mmap):
            self._memory.madvise(mmap.MADV_DONTNEED)

    def _usable(self, f: CachedFile) -> bool:
        return self._table is not None and f.block_size == self.block_size

    @property
    def stats(self) -> ExecStat:
        """The counters, the fast path's hits included."""
        if self._fast is not None:
            self._stats.num_read_hits += self._fast.take_hits()
        return self._stats

    # --- the fast path ----------------------------------------------------------------------
    # The caller lets an fd read from the cache in one C call (fast_read) with a snapshot of
    # what its own checks found, `allow`, and takes it back, `deny`, before it changes anything
    # that would make them refuse a read the snapshot allows; evictions and invalidations are
    # seen by the C call itself (it reads the block table and ready flags under the table's
    # lock). The fd's read position moves on the fast path: the caller's path takes it from
    # there (deny) before it reads.
    def allow(self, f: CachedFile, start: int, end: int) -> None:
        """f.fd may read bytes of [start, end) below f.size from ready blocks on its own."""
        if self._fast is not None and self._usable(f):
            self._fast.allow(f.fd, f.file_id, f.size, start, end, f.read_next)

    def deny(self, f: CachedFile, keep_position: bool = True) -> None:
        """Takes f.fd off the fast path, and f.read_next from it unless `keep_position` is
        false (a caller without the cache's lock)."""
        if self._fast is not None:
            read_next = self._fast.deny(f.fd)
            if read_next is not None and keep_position:
                f.read_next = read_next

    def lease(self, deadline_ns: int) -> None:
        """The fast path serves reads before the monotonic time deadline_ns; 0 (the session
        may be lost) takes every fd off it."""
        if self._fast is not None:
            if not deadline_ns:
                self._fast.deny_all()
            self._fast.lease(deadline_ns)

    # --- reads and writes -------------------------------------------------------------------
    def hit(self, f: CachedFile, offset: int, length: int, buf, cacheable: Cacheable,
            writing: bool) -> bool:
        """The fast path: all of file bytes [offset, offset + length) read from cached, ready
        blocks into buf (or, for a write within one block, written into it) in one C call; or
        False, having changed nothing but the LRU order, when they are not all there (or buf
        is not a fit buffer): the caller then takes the general path."""
        if not self._usable(f):
            return False
        end = offset + length
        try:
            if writing:  # a block's bytes are copied all or none
                B = self.block_size
                if (end - 1) // B != offset // B or not cacheable(offset // B * B,
                                                                   (offset // B + 1) * B):
                    return False
                done, _ = self._table.write(f.file_id, offset, length, self._memory,
                                            self.block_size, self._ready, self._dirty, buf)
                if not done:
                    return False
                self._stats.num_write_hits += 1
                self._now_dirty(f, offset, done)
                self._write_back_excess()
                return True
            done, blocks = self._table.read(f.file_id, offset, length, self._memory,
                                            self.block_size, self._ready, buf)
        except (TypeError, BufferError, ValueError):
            return False
        if done < length:
            return False
        self._stats.num_read_hits += blocks
        sequential, f.read_next = f.read_next == offset, end
        if sequential:
            self._read_ahead_after(f, end, length, cacheable)
        return True

    def read(self, f: CachedFile, offset: int, dst: memoryview, cacheable: Cacheable) -> None:
        """dst[:] = file bytes [offset, offset + len(dst)), all below f.size."""
        end = offset + len(dst)
        sequential, f.read_next = f.read_next == offset, end
        done = 0
        if self._usable(f):
            done, blocks = self._table.read(f.file_id, offset, len(dst), self._memory,
                                            self.block_size, self._ready, dst)
            self._stats.num_read_hits += blocks
        if done < len(dst):
            units = -(-end // CHECKSUM_UNIT) * CHECKSUM_UNIT - offset // CHECKSUM_UNIT * \
                CHECKSUM_UNIT  # the bytes a fetch of this read's units moves
            self._read_slowly(f, offset + done, dst[done:], cacheable,
                              scattered=not sequential and units < f.block_size)
        if sequential and self._usable(f):
            self._read_ahead_after(f, end, len(dst), cacheable)

    def _read_ahead_after(self, f: CachedFile, end: int, length: int,
                          cacheable: Cacheable) -> None:
        """After a sequential read of `length` bytes up to `end`: keeps the next twice as
        much, or up to four times as much where that fills a stripe (every fileserver busy),
        cached or being fetched (at most a quarter of the cache), fetching what of it is not,
        unless the read covered a stripe itself (one striped transfer is as fast, without the
        cache's copy)."""
        B = self.block_size
        if length >= max(STREAMING_BYTES, f.stripe_bytes):
            return
        ahead = min(max(2 * max(length, B), min(f.stripe_bytes, 4 * length)),
                    self.capacity // 4 * B)
        stop = min(end + ahead, f.size)
        start = end
        while start < stop and self._table.lookup(f.file_id, start // B, touch=False) is not None:
            start = (start // B + 1) * B
        if start < stop:
            self._read_ahead(f, start, stop - start, cacheable)

    def _read_slowly(self, f: CachedFile, offset: int, dst: memoryview, cacheable: Cacheable,
                     scattered: bool) -> None:
        """The general read; `scattered`: a small random read, whose blocks are cached only
        when missed before (module docstring)."""
        B = f.block_size
        loads: list[tuple[int, int, list[int]]] = []  # whole blocks to fetch into slots
        direct: list[tuple[int, int]] = []  # bytes to fetch straight into dst
        for start, stop, kind, slots in self._plan(f, offset, offset + len(dst), cacheable,
                                                   reading=True, scattered=scattered):
            if kind == CACHED:
                _, blocks = self._table.read(f.file_id, start, stop - start, self._memory, B,
                                             self._ready, dst[start - offset:stop - offset])
                self._stats.num_read_hits += blocks
            elif kind == LOADING:
                loads.append((start // B * B, min((start // B + len(slots)) * B, f.size), slots))
            else:
                direct.append((start, stop))
        if not loads and not direct:
            return
        generation = self._generation
        fetched = [memoryview(bytearray(stop - start)) for start, stop, _ in loads]
        try:
            with self._unlocked():
                for (start, stop, _), buf in zip(loads, fetched):
                    self._backing.read(f, start, stop - start, buf)
                for start, stop in direct:
                    self._backing.read(f, start, stop - start, dst[start - offset:stop - offset])
        except OSError:
            if generation == self._generation:  # nobody may wait for these blocks forever
                for start, _, slots in loads:
                    self._forget(f, list(range(start // B, start // B + len(slots))))
            self._changed.notify_all()
            raise
        for (start, stop, slots), buf in zip(loads, fetched):
            self._fill(f, start, slots, buf, generation)
            lo, hi = max(offset, start), min(offset + len(dst), stop)
            dst[lo - offset:hi - offset] = buf[lo - start:hi - start]

    def write(self, f: CachedFile, offset: int, src: memoryview, cacheable: Cacheable,
              old_size: int) -> None:
        """File bytes [offset, offset + len(src)) = src; f.size already includes them."""
        done, B = 0, self.block_size
        if self._usable(f) and cacheable(offset // B * B, -(-(offset + len(src)) // B) * B):
            done, blocks = self._table.write(f.file_id, offset, len(src), self._memory,
                                             self.block_size, self._ready, self._dirty, src)
            self._stats.num_write_hits += blocks
            self._now_dirty(f, offset, done)
        if done < len(src):
            self._write_slowly(f, offset + done, src[done:], cacheable, old_size)
        self._write_back_excess()

    def _write_back_excess(self) -> None:
        """Once more than the bound is dirty, writes back the oldest runs until half of it is
        (not counted: neither an eviction nor a revocation). A write-back that cannot start (an
        earlier write it must follow is not stored) leaves its blocks dirty, to be written back
        later: the write that got here has its bytes cached, and fsync and close report the
        failure."""
        if len(self._dirty_order) > self._max_dirty:
            with contextlib.suppress(OSError):
                while len(self._dirty_order) > self._max_dirty // 2:
                    self._write_back(*self._oldest_run())

    def _write_slowly(self, f: CachedFile, offset: int, src: memoryview, cacheable: Cacheable,
                      old_size: int) -> None:
        direct: list[tuple[int, int]] = []
        for start, stop, kind, slots in self._plan(f, offset, offset + len(src), cacheable,
                                                   reading=False, old_size=old_size):
            if kind == THROUGH:  # the cached copy stays the newest, and clean
                B = f.block_size
                for block, slot in zip(range(start // B, (stop - 1) // B + 1), slots):
                    lo, hi = max(start, block * B), min(stop, (block + 1) * B)
                    at = slot * B - block * B
                    self._view[at + lo:at + hi] = src[lo - offset:hi - offset]
            if kind in (DIRECT, THROUGH):
                direct.append((start, stop))
                continue
            done, _ = self._table.write(f.file_id, start, stop - start, self._memory,
                                        f.block_size, self._ready, self._dirty,
                                        src[start - offset:stop - offset])
            self._now_dirty(f, start, done)
        if direct:
            with self._unlocked():
                for start, stop in direct:
                    self._backing.write(f, start, src[start - offset:stop - offset])

    def _plan(self, f: CachedFile, start: int, end: int, cacheable: Cacheable, reading: bool,
              old_size: int = 0, scattered: bool = False
              ) -> Iterator[tuple[int, int, str, list[int]]]:
        """Cuts [start, end) into runs of one kind: (run start, run end, kind, slots of its
        blocks): CACHED blocks (ready; for a write, also blocks admitted now), LOADING blocks
        admitted now for a read (to be fetched and filled), DIRECT bytes that go straight to
        the fileservers (no slots), or, for a write, cached blocks it may not dirty (THROUGH).
        Blocks being filled by someone else are waited for. A `scattered` read admits only
        blocks it missed before."""
        B = f.block_size
        usable = self._usable(f)
        admit = (usable and end - start < STREAMING_BYTES
                 and (end - 1) // B - start // B + 1 <= max(1, self.capacity // 2))
        run: tuple[int, int, str, list[int]] | None = None
        block = start // B
        while block * B < end:
            lo, hi = max(start, block * B), min(end, (block + 1) * B)
            slot = self._table.lookup(f.file_id, block) if usable else None
            if slot is not None and slot in self._loading:
                if run is not None:  # used before the lock is let go: it may be evicted then
                    yield run
                    run = None
                self._changed.wait()  # filled (or given up) meanwhile: look again
                continue
            if slot is not None and not reading:
                self._stats.num_write_hits += 1  # (a read's are counted as it copies them)
            kind = CACHED
            if (slot is not None and not reading and not self._dirty[slot]
                    and not cacheable(block * B, (block + 1) * B)):
                kind = THROUGH  # (a dirty block is ours, whole, until it is written back)
            if (slot is None and admit and cacheable(block * B, (block + 1) * B)
                    and not (scattered and self._first_miss(f, block))):
                if run is not None and run[2] == CACHED:  # used before an eviction can take it
                    yield run
                    run = None
                slot = self._admit(f, block, reading, lo, hi, old_size)
                kind = LOADING if reading else CACHED
            if slot is None:
                kind = DIRECT
            slots = [] if slot is None else [slot]
            if run is not None and run[2] == kind:
                run = (run[0], hi, kind, run[3] + slots)
            else:
                if run is not None:
                    yield run
                run = (lo, hi, kind, slots)
            block += 1
        if run is not None:
            yield run

    def _admit(self, f: CachedFile, block: int, reading: bool, lo: int, hi: int,
               old_size: int) -> int | None:
        """A slot for an uncached block: loading (to be fetched) for a read; for a write,
        ready, and holding the block's existing bytes when the write does not cover them all.
        None when no slot can be had now (the block then goes straight to the fileservers)."""
        B = f.block_size
        if not self._make_room(clean_only=False):
            return None
        slot = self._take_slot(f, block)
        if reading:
            return slot
        existing = min((block + 1) * B, old_size) - block * B  # bytes the block had
        if (lo > block * B and existing > 0) or hi - block * B < existing:
            generation = self._generation
            at = slot * B
            try:
                with self._unlocked():
                    self._backing.read(f, block * B, existing, self._view[at:at + existing])
            except OSError:
                if generation == self._generation:
                    self._forget(f, [block])  # never leave a zeroed block looking valid
                    self._changed.notify_all()
                raise
            if generation != self._generation:
                return None
        self._set_ready(slot)
        self._changed.notify_all()
        return slot

    def _set_ready(self, slot: int) -> None:
        """A loading slot's bytes are in: ready, under the table's lock, so that a fast read
        (which holds it) that sees the flag also sees the bytes."""
        self._loading.discard(slot)
        with self._table.lock:
            self._ready[slot], self._busy[slot] = 1, 0

    def _first_miss(self, f: CachedFile, block: int) -> bool:
        """Whether this is the block's first miss by a small random read among the last
        `capacity` of them (which are remembered); a second one forgets it: it is cached now."""
        key = (f.file_id, block)
        if key in self._missed:
            del self._missed[key]
            return False
        self._missed[key] = None
        if len(self._missed) > self.capacity:
            del self._missed[next(iter(self._missed))]
        return True

    def _take_slot(self, f: CachedFile, block: int) -> int:
        """Puts the block in a free slot, zeroed and loading (busy, not ready)."""
        slot = self._table.insert(f.file_id, block)
        self._files[f.file_id] = f
        self._view[slot * f.block_size:(slot + 1) * f.block_size] = bytes(f.block_size)
        self._loading.add(slot)
        self._busy[slot] = 1
        return slot

    def _make_room(self, clean_only: bool) -> bool:
        """Frees a slot if none is free: evicts the least recently used block not being
        filled, writing it back first when it is dirty (a writeback), unless `clean_only`.
        False if no slot can be freed now."""
        while len(self._table) >= self.capacity:
            victim = self._table.evictable(self._busy)
            if victim is None or (clean_only and self._dirty[victim]):
                return False
            file_id, block = self._table.key(victim)
            f = self._files[file_id]
            if self._dirty[victim]:
                self._stats.num_writebacks += self._write_back(f, [block])
            self._forget(f, [block])
            self._stats.num_evictions += 1
        return True

    # --- read-ahead -------------------------------------------------------------------------
    def _read_ahead(self, f: CachedFile, start: int, length: int, cacheable: Cacheable) -> None:
        """Starts fetching the uncached blocks from `start` on in the background, as many as
        there is clean room for; stops at the first one cached or not cacheable."""
        B = f.block_size
        end = min(start + length, f.size)
        first, slots = start // B, []
        block = first
        while block * B < end:
            if (self._table.lookup(f.file_id, block, touch=False) is not None
                    or not cacheable(block * B, (block + 1) * B)
                    or not self._make_room(clean_only=True)):
                break
            slots.append(self._take_slot(f, block))
            block += 1
        if slots:
            self._readahead.submit(self._fetch_ahead, f, first * B,
                                   min((first + len(slots)) * B, f.size), slots,
                                   self._generation)

    def _fetch_ahead(self, f: CachedFile, start: int, end: int, slots: list[int],
                     generation: int) -> None:
        buf = memoryview(bytearray(end - start))
        try:
            self._backing.read(f, start, end - start, buf)
        except OSError:
            with self._changed:  # readers fetch these blocks themselves
                if generation == self._generation:
                    B = f.block_size
                    self._forget(f, list(range(start // B, start // B + len(slots))))
                self._changed.notify_all()
            return
        with self._changed:
            self._fill(f, start, slots, buf, generation)

    def _fill(self, f: CachedFile, start: int, slots: list[int], data: memoryview,
              generation: int) -> None:
        """Puts fetched bytes (file bytes from `start`, a block boundary) into loading slots."""
        if generation == self._generation:
            B = f.block_size
            for k, slot in enumerate(slots):
                piece = data[k * B:(k + 1) * B]
                self._view[slot * B:slot * B + len(piece)] = piece
                self._set_ready(slot)
        self._changed.notify_all()

    # --- write-back -------------------------------------------------------------------------
    def _now_dirty(self, f: CachedFile, offset: int, length: int) -> None:
        """Bookkeeping for blocks the C core just wrote (it set their dirty flags)."""
        if length:
            B = f.block_size
            self._files[f.file_id] = f
            for block in range(offset // B, (offset + length - 1) // B + 1):
                self._mark_dirty(self._table.lookup(f.file_id, block, touch=False))

    def _mark_dirty(self, slot: int) -> None:
        self._dirty_order.setdefault(slot, None)

    def _oldest_run(self) -> tuple[CachedFile, list[int]]:
        """The oldest dirty block with its dirty neighbours (one write-back at most)."""
        file_id, block = self._table.key(next(iter(self._dirty_order)))
        f = self._files[file_id]

        def dirty(b: int) -> bool:
            s = self._table.lookup(file_id, b, touch=False)
            return s is not None and bool(self._dirty[s])
        first, most = block, max(1, MAX_RUN_BYTES // f.block_size)
        while first > 0 and block - first + 1 < most and dirty(first - 1):
            first -= 1
        last = block
        while last - first + 1 < most and dirty(last + 1):
            last += 1
        return f, list(range(first, last + 1))

    def _clean(self, slot: int) -> None:
        self._dirty[slot] = 0
        self._dirty_order.pop(slot, None)

    def _write_back(self, f: CachedFile, blocks: list[int]) -> int:
        """Writes back the dirty blocks among `blocks` (ascending), each run of consecutive
        ones in one striped write, and marks them clean; how many were dirty."""
        B = f.block_size
        slots = {b: self._table.lookup(f.file_id, b, touch=False) for b in blocks}
        dirty = [b for b in blocks if slots[b] is not None and self._dirty[slots[b]]]
        for first, last in _runs(dirty):
            length = min((last + 1) * B, f.size) - first * B  # nothing past the end of file
            if length > 0:
                data = b"".join(self._view[slots[b] * B:(slots[b] + 1) * B]
                                for b in range(first, last + 1))
                self._backing.write(f, first * B, memoryview(data)[:length])
            for b in range(first, last + 1):
                self._clean(slots[b])
        return len(dirty)

    def _wait_idle(self, f: CachedFile, blocks: list[int]) -> None:
        """Waits until none of the file's `blocks` is being filled."""
        def loading() -> bool:
            slots = (self._table.lookup(f.file_id, b, touch=False) for b in blocks)
            return any(s is not None and s in self._loading for s in slots)
        self._changed.wait_for(lambda: not loading())

    # --- giving blocks up -------------------------------------------------------------------
    def revoke(self, f: CachedFile, start: int, end: int, drop: bool) -> None:
        """Before a token on [start, end) is given up: write back dirty blocks touching it, and
        drop them when the token is dropped (kept clean when it is downgraded to READ). Giving
        up the tail (`end` INFINITY) writes back every dirty block of the file, so that the
        size reported with it is stored all the way; each counts as a writeback, being written
        back because of the revocation. If the write-back fails, every block stays as it was,
        dirty ones dirty: the token may not be given up before they are stored, so the caller
        tries again."""
        B = f.block_size
        cached = self._cached_blocks(f)
        blocks = [b for b in cached if b * B < end and start < (b + 1) * B]
        written = cached if end == INFINITY else blocks
        self._wait_idle(f, written)
        self._stats.num_writebacks += self._write_back(f, written)
        if drop:
            self._stats.num_invalidations += len(blocks)
            self._forget(f, blocks)

    def flush(self, f: CachedFile) -> None:
        """Writes back the file's dirty blocks and keeps them, clean (fsync)."""
        blocks = self._cached_blocks(f)
        self._wait_idle(f, blocks)
        self._write_back(f, blocks)

    def close(self, f: CachedFile) -> None:
        """Writes back the file's dirty blocks and drops all of them (close). If the write-back
        fails, the blocks stay, dirty ones dirty, for close to be tried again."""
        blocks = self._cached_blocks(f)
        self._wait_idle(f, blocks)
        self._stats.num_close_writebacks += self._write_back(f, blocks)
        self._forget(f, blocks)
        self._stats.num_close_evictions += len(blocks)
        self._files.pop(f.file_id, None)

    def truncate(self, f: CachedFile, size: int) -> None:
        """The file now ends at `size`: blocks past it are dropped, dirty or not (their bytes no
        longer exist), and the rest of the last block is zeroed (an extension reads zeros)."""
        B = f.block_size
        blocks = self._cached_blocks(f)
        self._wait_idle(f, blocks)
        self._forget(f, [b for b in blocks if b * B >= size])
        if size % B and size // B in blocks:
            slot = self._table.lookup(f.file_id, size // B, touch=False)
            self._view[slot * B + size % B:(slot + 1) * B] = bytes(B - size % B)

    def discard(self, f: CachedFile) -> int:
        """Forgets the file's blocks without writing anything back (the file is being deleted:
        its bytes that could not be stored are given up); how many were dirty."""
        self._wait_idle(f, self._cached_blocks(f))
        return self._drop(f)

    def drop_all(self) -> dict[int, int]:
        """Forgets every block without writing anything back (the session is gone, and with
        it the right to write); returns how many dirty blocks each file lost."""
        if self._fast is not None:
            self._fast.deny_all()
        lost = {file_id: dirty for file_id, f in list(self._files.items())
                if (dirty := self._drop(f))}
        self._loading.clear()
        self._generation += 1
        self._changed.notify_all()
        return lost

    def _drop(self, f: CachedFile) -> int:
        blocks = self._cached_blocks(f)
        dirty = sum(self._dirty[self._table.lookup(f.file_id, b, touch=False)] for b in blocks)
        self._forget(f, blocks)
        self._files.pop(f.file_id, None)
        return dirty

    def _cached_blocks(self, f: CachedFile) -> list[int]:
        if not self._usable(f):
            return []
        return sorted(self._table.key(slot)[1] for slot in self._table.file_slots(f.file_id))

    def _forget(self, f: CachedFile, blocks: list[int]) -> None:
        """Frees the blocks' slots, whatever they held."""
        for block in blocks:
            slot = self._table.remove(f.file_id, block)
            if slot is not None:
                self._ready[slot] = self._dirty[slot] = self._busy[slot] = 0
                self._dirty_order.pop(slot, None)
                self._loading.discard(slot)

    # --- helpers ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Releases the caller's lock (held once) around fileserver I/O."""
        self._changed.release()
        try:
            yield
        finally:
            self._changed.acquire()


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


def _no_fast_read(fd, buf, length, offset) -> int:
    return -1  # no cache: every read takes the general path
