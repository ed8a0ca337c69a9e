"""The client cache's block table (csrc/blocktable.c): which slot holds block (file, block), and
which slot to evict next (least recently used)."""
from __future__ import annotations

import threading

from pfs._native import ENOENT, check, unsigned
from pfs._native._core import ffi, lib


class BlockTable:
    """A fixed number of slots (0..capacity-1) keyed by (file id, block number), in LRU order.

    Thread-safe: cffi releases the GIL inside every C call, so a lock keeps two threads from
    being inside the (unsynchronized) C table at once.
    """

    __slots__ = ("capacity", "_bt", "_lock", "_out")

    def __init__(self, capacity: int) -> None:
        self.capacity = unsigned(capacity, "capacity", lib.PFS_BT_MAX_CAPACITY)
        bt = lib.pfs_bt_new(self.capacity)
        if bt == ffi.NULL:
            raise MemoryError(f"block table of {self.capacity} slots")
        self._bt = ffi.gc(bt, lib.pfs_bt_free, size=self.capacity * 48)
        self._lock = threading.Lock()
        self._out = ffi.new("uint32_t[]", self.capacity)  # file_slots' result, used under the lock

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

    def __len__(self) -> int:
        with self._lock:
            return lib.pfs_bt_count(self._bt)

    def __repr__(self) -> str:
        return f"BlockTable(capacity={self.capacity}, count={len(self)})"

