"""The client cache's block table (csrc/blocktable.c): which slot holds block (file, block),
which slot to evict next (least recently used), and the cache's hit path: a read or write of the
cached, ready blocks of a range in one C call."""
from __future__ import annotations

import threading
from typing import Any, NoReturn

from pfs._native import (EINVAL, ENOENT, ERANGE, U8_ARRAY, U64_MAX, NativeError, as_bytes, check,
                         unsigned)
from pfs._native._core import ffi, lib

I64_MAX = 2**63 - 1
# What BlockTable remembers of a buffer argument before any is seen: no caller holds this object.
_UNSEEN = (object(), ffi.NULL, 0, False)


def _flags(buf: Any, name: str, capacity: int, writable: bool) -> Any:
    """A `uint8_t[]` view of a per-slot byte array with at least `capacity` entries."""
    if buf.__class__ is not bytearray and memoryview(buf).itemsize != 1:
        raise TypeError(f"{name} must be a byte array, not items of {memoryview(buf).itemsize}")
    view = as_bytes(buf, name, writable)
    if len(view) < capacity:
        raise NativeError(EINVAL, f"{name} has {len(view)} entries for {capacity} slots")
    return view


def _io_error(capacity: int, offset: int, length: int, block_size: int, memory_len: int,
              caller_len: int, name: str) -> NoReturn:
    """Raises read/write's error for sizes that failed their check, in C's order: EINVAL for
    block_size 0, a memory shorter than capacity blocks or a caller buffer shorter than length;
    then ERANGE unless the range ends within uint64 and its byte count fits C's int64 result."""
    if block_size == 0:
        raise NativeError(EINVAL, "block_size is 0")
    if capacity * block_size > memory_len:
        raise NativeError(EINVAL, f"memory of {memory_len} bytes for {capacity} blocks of "
                                  f"{block_size}")
    if caller_len < length:
        raise NativeError(EINVAL, f"{name} of {caller_len} bytes for a range of {length}")
    raise NativeError(ERANGE, f"range [{offset}, {offset} + {length}) is past uint64")


class BlockTable:
    """A fixed number of slots (0..capacity-1) keyed by (file id, block number), in LRU order.

    Thread-safe: cffi releases the GIL inside every C call, so a lock keeps two threads from
    being inside the (unsynchronized) C table at once.

    The hit path (read, write, evictable) is called with the cache's same long-lived buffers
    every time, so the table remembers, for each of the arguments memory, ready, dirty and busy,
    the last buffer passed (by identity) and its cffi view, and reuses that view, whose length
    was checked when the buffer was first seen, while the same object comes again. Holding the
    view keeps that buffer exported, so it cannot be resized (nor a memoryview released) until
    another buffer is passed in its place or the table is collected; nor can its id be reused
    by another object while remembered. The caller's dst and src are converted on every call and
    not kept.
    """

    __slots__ = ("capacity", "_bt", "_lock", "_out", "_blocks", "_seen_memory", "_seen_ready",
                 "_seen_dirty", "_seen_busy")

    def __init__(self, capacity: int) -> None:
        self.capacity = unsigned(capacity, "capacity", lib.PFS_BT_MAX_CAPACITY)
        bt = lib.pfs_bt_new(self.capacity)
        if bt == ffi.NULL:
            raise MemoryError(f"block table of {self.capacity} slots")
        self._bt = ffi.gc(bt, lib.pfs_bt_free, size=self.capacity * 48)
        self._lock = threading.Lock()
        self._out = ffi.new("uint32_t[]", self.capacity)  # file_slots' result, used under the lock
        self._blocks = ffi.new("uint32_t *")  # read/write's block count, used under the lock
        # The last buffer of each argument: (buffer, view, and for memory its length in bytes and
        # whether the view is writable). Replaced whole, so a thread sees an old or a new one.
        self._seen_memory = self._seen_ready = self._seen_dirty = self._seen_busy = _UNSEEN

    @property
    def bt(self) -> Any:
        """The C table, for C routines that work on it (under `lock`)."""
        return self._bt

    @property
    def lock(self) -> threading.Lock:
        """Held by every call into the C table."""
        return self._lock

    def lookup(self, file_id: int, block: int, touch: bool = True) -> int | None:
        """The slot holding the block, or None; touch makes it the most recently used."""
        file_id, block = unsigned(file_id, "file_id"), unsigned(block, "block")
        with self._lock:
            slot = lib.pfs_bt_lookup(self._bt, file_id, block, 1 if touch else 0)
        return None if slot == ENOENT else check(slot, "block table lookup")

    def insert(self, file_id: int, block: int) -> int:
        """A free slot for the block, now the most recently used. NativeError EEXIST if the block
        is present, ENOSPC if the table is full (evict first)."""
        file_id, block = unsigned(file_id, "file_id"), unsigned(block, "block")
        with self._lock:
            slot = lib.pfs_bt_insert(self._bt, file_id, block)
        return check(slot, "block table insert")

    def remove(self, file_id: int, block: int) -> int | None:
        """Frees the block's slot and returns it, or None if the block is absent."""
        file_id, block = unsigned(file_id, "file_id"), unsigned(block, "block")
        with self._lock:
            slot = lib.pfs_bt_remove(self._bt, file_id, block)
        return None if slot == ENOENT else check(slot, "block table remove")

    def lru(self) -> int | None:
        """The least recently used slot (the one to evict), or None when empty."""
        with self._lock:
            slot = lib.pfs_bt_lru(self._bt)
        return None if slot == ENOENT else check(slot, "block table lru")

    def key(self, slot: int) -> tuple[int, int]:
        """(file_id, block) held in the slot. NativeError EINVAL for a slot out of range, ENOENT
        for a free slot."""
        slot = unsigned(slot, "slot", 2**32 - 1)
        file_id, block = ffi.new("uint64_t *"), ffi.new("uint64_t *")
        with self._lock:
            check(lib.pfs_bt_key(self._bt, slot, file_id, block), "block table key")
        return file_id[0], block[0]

    def file_slots(self, file_id: int) -> list[int]:
        """Every slot holding a block of the file, in no particular order."""
        file_id = unsigned(file_id, "file_id")
        n = ffi.new("size_t *")
        with self._lock:
            check(lib.pfs_bt_file_slots(self._bt, file_id, self._out, self.capacity, n),
                  "block table file_slots")
            return list(self._out[0:n[0]])

    def _see_memory(self, memory: Any, writable: bool) -> tuple[Any, Any, int, bool]:
        """Converts a memory buffer not seen last (or seen read-only when writable is asked)."""
        view = as_bytes(memory, "memory", writable)
        self._seen_memory = seen = (memory, view, len(view), writable)
        return seen

    def _see_flags(self, buf: Any, name: str, writable: bool) -> Any:
        """Converts and checks a per-slot flag array not seen last as argument `name`."""
        view = _flags(buf, name, self.capacity, writable)
        setattr(self, f"_seen_{name}", (buf, view))
        return view

    # A cached hit's cost is mostly Python's, so read and write check their arguments in one
    # helper, one test for all the integers and one for all the sizes, and spell out a failure
    # only when its test fails: TypeError or ERANGE for an integer (unsigned), TypeError or
    # BufferError for a buffer, EINVAL for a flag array too short (when first seen), then
    # _io_error's EINVALs and ERANGE. They take the lock with acquire/release, which costs half
    # of `with` here.

    def read(self, file_id: int, offset: int, length: int, memory: Any, block_size: int,
             ready: Any, dst: Any) -> tuple[int, int]:
        """Copies file bytes [offset, offset + length) from the cache into dst[0:length], block
        by block from the first, while each block is in the table and ready; each becomes the
        most recently used. Returns (bytes copied, blocks copied from): all of length when every
        block was there, less when it stopped at the first that is not. memory holds slot i's
        block at byte i * block_size; ready has a byte per slot."""
        file_id, offset, length, block_size, mem, ready_, out, _ = self._hit_args(
            file_id, offset, length, memory, block_size, ready, None, dst, into_cache=False)
        return self._copy(lib.pfs_bt_read, "block table read", file_id, offset, length, mem[1],
                          mem[2], block_size, ready_, out, len(out))

    def write(self, file_id: int, offset: int, length: int, memory: Any, block_size: int,
              ready: Any, dirty: Any, src: Any) -> tuple[int, int]:
        """Copies src[0:length] into the cached blocks of file bytes [offset, offset + length),
        block by block from the first, while each block is in the table and ready; each block
        written is marked dirty and becomes the most recently used. Returns (bytes copied,
        blocks written), as read does. dirty: a byte per slot."""
        file_id, offset, length, block_size, mem, ready_, in_, dirty_ = self._hit_args(
            file_id, offset, length, memory, block_size, ready, dirty, src, into_cache=True)
        return self._copy(lib.pfs_bt_write, "block table write", file_id, offset, length,
                          mem[1], mem[2], block_size, ready_, dirty_, in_, len(in_))

    def _copy(self, copy: Any, what: str, *args: Any) -> tuple[int, int]:
        """One C copy between the cache and a caller's buffer, under the table's lock:
        (bytes copied, blocks copied)."""
        lock = self._lock
        lock.acquire()
        try:
            return check(copy(self._bt, *args, self._blocks), what), self._blocks[0]
        finally:
            lock.release()

    def _hit_args(self, file_id: Any, offset: Any, length: Any, memory: Any, block_size: Any,
                  ready: Any, dirty: Any, caller: Any, into_cache: bool) -> tuple:
        """read's and write's checks: the integers; the cache's memory (writable for a write
        into the cache) and ready flags, converted once and remembered; the caller's buffer
        (dst, or src for a write into the cache), converted every time; a write's dirty flags;
        then the sizes."""
        if not (file_id.__class__ is offset.__class__ is length.__class__ is block_size.__class__
                is int and (file_id | offset | length | block_size) >> 64 == 0):
            file_id, offset = unsigned(file_id, "file_id"), unsigned(offset, "offset")
            length, block_size = unsigned(length, "length"), unsigned(block_size, "block_size")
        mem = self._seen_memory
        if mem[0] is not memory or (into_cache and not mem[3]):
            mem = self._see_memory(memory, writable=into_cache)
        seen = self._seen_ready
        ready_ = seen[1] if seen[0] is ready else self._see_flags(ready, "ready", False)
        name = "src" if into_cache else "dst"
        try:  # as_bytes, inline
            view = ffi.from_buffer(U8_ARRAY, caller, not into_cache)
        except TypeError:
            raise TypeError(f"{name} must be a buffer, not {type(caller).__name__}") from None
        dirty_ = None
        if into_cache:
            seen = self._seen_dirty
            dirty_ = seen[1] if seen[0] is dirty else self._see_flags(dirty, "dirty", True)
        if not (0 < block_size and self.capacity * block_size <= mem[2]
                and length <= len(view) and offset + length <= U64_MAX and length <= I64_MAX):
            _io_error(self.capacity, offset, length, block_size, mem[2], len(view), name)
        return file_id, offset, length, block_size, mem, ready_, view, dirty_

    def evictable(self, busy: Any) -> int | None:
        """The least recently used slot whose busy byte is 0, or None (empty, or all busy)."""
        seen = self._seen_busy
        busy_ = seen[1] if seen[0] is busy else self._see_flags(busy, "busy", False)
        with self._lock:
            slot = lib.pfs_bt_evictable(self._bt, busy_)
        return None if slot == ENOENT else check(slot, "block table evictable")

    def __len__(self) -> int:
        with self._lock:
            return lib.pfs_bt_count(self._bt)

    def __repr__(self) -> str:
        return f"BlockTable(capacity={self.capacity}, count={len(self)})"

