"""The cached-read fast path (csrc/fastread.c): the fds the Client lets read from its block cache
in one C call, each with the snapshot of its checks the Client took under its lock (file, size,
token range, where a sequential read would start) and one lease deadline for all. The Client
takes an fd's snapshot back before any change that would make its general path refuse a read
the snapshot allows; a read served here is served whole, or not at all (`read` returns -1)."""
from __future__ import annotations

from typing import Any

from pfs._native import ENOENT, U8_ARRAY, as_bytes, check
from pfs._native._core import ffi, lib
from pfs._native.blocktable import BlockTable

#: fd entries: fd n uses entry n % SLOTS, so a Client with more fds open than this may find
#: some of them off the fast path (their reads take the general one).
SLOTS = 1024


class FastReads:
    """Thread-safe: every call holds the block table's lock, as the table's own calls do (a
    read touches the table's LRU order)."""

    __slots__ = ("_fr", "_lock", "_keep", "_out", "read")

    def __init__(self, table: BlockTable, memory: Any, block_size: int, ready: Any) -> None:
        mem, ready_ = as_bytes(memory, "memory"), as_bytes(ready, "ready")
        fr = lib.pfs_fr_new(table.bt, mem, len(mem), block_size, ready_, len(ready_), SLOTS)
        if fr == ffi.NULL:
            raise ValueError(f"fast path over {table!r}: memory of {len(mem)} bytes or "
                             f"{len(ready_)} ready flags too short for blocks of {block_size}")
        self._fr = ffi.gc(fr, lib.pfs_fr_free, size=SLOTS * 56)
        self._lock = table.lock
        # The views stay exported while the C table points into them: nothing can resize them.
        self._keep = (table, mem, ready_)
        self._out = ffi.new("uint64_t *")  # deny's read_next, used under the lock
        self.read = self._reader()

    def _reader(self):
        """read(fd, buf, length, offset): the bytes read into buf, all of length, or -1 (a
        miss: nothing read, the general path decides). A closure, so that a hit costs the lock,
        cffi's view of buf and the C call."""
        fr, acquire, release = self._fr, self._lock.acquire, self._lock.release
        read, from_buffer = lib.pfs_fr_read, ffi.from_buffer

        def read_fast(fd: Any, buf: Any, length: Any, offset: Any) -> int:
            if not fd.__class__ is length.__class__ is offset.__class__ is int:
                return -1  # (a bool is no fd, nor a length)
            try:
                dst = from_buffer(U8_ARRAY, buf, True)
                acquire()
                try:
                    n = read(fr, fd, offset, length, dst, len(dst))
                finally:
                    release()
            except (TypeError, ValueError, OverflowError, BufferError):
                return -1  # not a writable buffer, or out of range: the general path says
            return n if n >= 0 else -1
        return read_fast

    def allow(self, fd: int, file_id: int, size: int, start: int, end: int,
              read_next: int) -> None:
        with self._lock:
            check(lib.pfs_fr_allow(self._fr, fd, file_id, size, start, end, read_next),
                  "fast path allow")

    def deny(self, fd: int) -> int | None:
        """Takes fd off the fast path; the read_next of its entry, None if it had none."""
        with self._lock:
            rc = lib.pfs_fr_deny(self._fr, fd, self._out)
            return None if rc == ENOENT else (check(rc, "fast path deny"), self._out[0])[1]

    def deny_all(self) -> None:
        with self._lock:
            lib.pfs_fr_deny_all(self._fr)

    def lease(self, deadline_ns: int) -> None:
        """Reads are served while the monotonic clock (time.monotonic_ns) is below deadline_ns."""
        with self._lock:
            lib.pfs_fr_lease(self._fr, deadline_ns)

    def take_hits(self) -> int:
        """The blocks read here since the last call."""
        with self._lock:
            return lib.pfs_fr_take_hits(self._fr)
