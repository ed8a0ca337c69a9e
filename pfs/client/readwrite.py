"""Reads, writes, truncates and fsync of open files: where a byte goes on read and write.

Every operation runs inside `Tokens.holding` for its whole range and moves bytes through the
block cache (datapath/blockcache.py), which reaches the fileservers through the striped data
plane (datapath/striped.py). Sizes: a read or write that may reach past the size this client
knows holds a token up to infinity, so nobody else can grow the file meanwhile and the size that
came with the grant is exact. The C-like calls refuse a write past the end (the course's
contract); `write(..., hole=True)` (POSIX pwrite: the Pythonic layer, fsspec, the mount) first
extends the file with zeros under the same token, and `append` writes at the end as it is under
the tail token, so appends from several clients never overwrite each other.
"""
from __future__ import annotations

import errno
from typing import Any

from pfs._proto import metaserver_pb2 as pb
from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.errnos import error
from pfs.protocol.paths import brief
from pfs.protocol.ranges import INFINITY
from pfs.protocol.tokenmodes import READ, WRITE

from .args import PFS_READ_WRITE, buffer, int_arg
from .openfiles import OpenFile, OpenFiles
from .state import ClientState
from .tokens import Tokens


class ReadWrite:
    def __init__(self, state: ClientState, tokens: Tokens, files: OpenFiles) -> None:
        self._s, self._tokens, self._files = state, tokens, files

    def read(self, fd: int, buf: Any, num_bytes: int, offset: int, past_end: bool = False) -> int:
        """`past_end`: an offset past the end reads 0 bytes (POSIX pread), not EINVAL."""
        cache = self._s.cache  # (None before the first initialize)
        if cache is not None and cache.fast_read(fd, buf, num_bytes, offset) >= 0:
            return num_bytes
        if self._hit(fd, buf, num_bytes, offset, READ):
            return num_bytes
        f = self._files.open_file(fd)
        dst = buffer(buf, int_arg(num_bytes, "num_bytes"), writable=True)
        int_arg(offset, "offset")
        with self._tokens.holding(f, offset, offset + num_bytes, READ):
            if offset > f.size and not past_end:
                raise error(errno.EINVAL, f"offset {offset} is beyond the end of "
                                          f"{f.name!r} ({f.size} bytes)")
            n = max(0, min(num_bytes, f.size - offset))
            if n:
                self._s.cache.read(f, offset, dst[:n], self._tokens.cacheable(f, READ))
                self._allow_fast(f, offset, offset + n, running=1)
            return n

    def stored_checksum(self, fd: int) -> tuple[int, int | None]:
        """Under a READ token on the whole file (writers elsewhere give theirs back, storing
        what they wrote), once this client's own writes to it are stored."""
        f = self._files.open_file(fd)
        with self._tokens.holding(f, 0, INFINITY, READ):
            self._s.cache.flush(f)
            size = f.size
            with self._s.unlocked():
                self._s.dataplane.settle(f)
                return size, self._s.dataplane.checksum(f, size)

    def write(self, fd: int, buf: Any, num_bytes: int, offset: int, hole: bool = False) -> int:
        """`hole`: an offset past the end first extends the file with zeros, under the token
        of the write (POSIX pwrite), instead of failing with EINVAL."""
        if self._hit(fd, buf, num_bytes, offset, WRITE):
            return num_bytes
        f, src = self._write_args(fd, buf, num_bytes, offset)
        while True:  # the token runs from the end if that comes first: the hole is zeroed
            start = min(offset, f.size) if hole else offset
            with self._tokens.holding(f, start, offset + num_bytes, WRITE):
                if hole and f.size < start:
                    continue  # shorter than this client knew: from its real end, then
                if offset > f.size:
                    if not hole:
                        raise error(errno.EINVAL, f"offset {offset} is beyond the end of "
                                                  f"{f.name!r} ({f.size} bytes); PFS files "
                                                  "have no holes")
                    if num_bytes:
                        self._set_size(f, offset)
                return self._write_held(f, src, num_bytes, offset)

    def append(self, fd: int, buf: Any, num_bytes: int) -> int:
        """Writes at the end of the file as it is under the tail token (to infinity), which
        nobody else holds meanwhile: appends of several clients never overlap. The offset
        written at."""
        f, src = self._write_args(fd, buf, num_bytes, 0)
        while True:
            start = f.size
            with self._tokens.holding(f, start, INFINITY, WRITE):
                if f.size < start:
                    continue  # cut by another client meanwhile: from its real end, then
                offset = f.size
                if offset + num_bytes > MAX_FILE_SIZE:
                    raise error(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
                self._write_held(f, src, num_bytes, offset)
                return offset

    def _write_args(self, fd: int, buf: Any, num_bytes: int, offset: int) -> tuple[OpenFile, Any]:
        f = self._writable(fd)
        src = buffer(buf, int_arg(num_bytes, "num_bytes"), writable=False)
        int_arg(offset, "offset")
        if offset + num_bytes > MAX_FILE_SIZE:
            raise error(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes; this "
                                     f"write would end at {offset + num_bytes}")
        return f, src

    def _write_held(self, f: OpenFile, src: Any, num_bytes: int, offset: int) -> int:
        """The write itself, its token held and offset at most at the end."""
        if num_bytes:
            old_size = f.size
            f.size = max(f.size, offset + num_bytes)
            try:
                self._s.cache.write(f, offset, src, self._tokens.cacheable(f, WRITE), old_size)
            except OSError:
                f.size = old_size
                raise
            f.wrote, f.written_end = True, max(f.written_end, offset + num_bytes)
        return num_bytes

    def _writable(self, fd: int) -> OpenFile:
        f = self._files.open_file(fd)
        if f.mode != PFS_READ_WRITE:
            raise error(errno.EBADF, f"fd {fd} ({brief(f.name)}) was opened PFS_READ")
        return f

    def fsync(self, fd: int) -> None:
        s = self._s
        session = s.live_session()
        f = self._files.open_file(fd)
        if f.held.empty() and not f.closing:
            with self._tokens.holding(f, 0, 1, READ):  # a token, whose capabilities calls need
                pass
        self._tokens.renew_for_unstored(session, f)
        with s.lock:
            f = self._files.file(fd)
            s.cache.flush(f)
            stored_end = f.written_end
            with s.unlocked():
                s.dataplane.fsync(f)  # once the writes in flight are stored
        session.call("ReportSize", pb.ReportSizeRequest(
            file_id=f.file_id, size=stored_end,
            receipts=f.receipts.showing(f.recipe, stored_end)), f"fsync {brief(f.name)}")

    def resize(self, fd: int, size: int, cut: bool) -> None:
        """Cuts (`cut`) or extends the file to `size` bytes under a WRITE token from the new
        end, or the old one, whichever is first, to infinity."""
        f = self._writable(fd)
        if int_arg(size, "size") > MAX_FILE_SIZE:
            raise error(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
        while True:  # the token runs from the old end too: an extension zeroes from there
            start = min(size, f.size)
            with self._tokens.holding(f, start, INFINITY, WRITE):
                if f.size < start:
                    continue  # shorter than this client knew: from its real end, then
                if cut or f.size < size:
                    self._set_size(f, size)
                return

    def _set_size(self, f: OpenFile, size: int) -> None:
        """Cuts or extends the file to `size`, under a WRITE token from min(size, f.size) to
        infinity held by the caller; the extension reads as zeros (the fileservers store it
        sparsely)."""
        self._s.cache.truncate(f, size)
        session = self._s.session
        with self._s.unlocked():  # (the operation's span keeps others off the range)
            self._s.dataplane.truncate(f, size, f.size)
            epoch = session.call("Truncate", pb.TruncateRequest(
                file_id=f.file_id, size=size), f"truncate {brief(f.name)}").size_epoch
        f.size, f.size_epoch, f.wrote = size, epoch, True
        f.written_end = min(f.written_end, size)

    def _hit(self, fd: Any, buf: Any, num_bytes: Any, offset: Any, mode: int) -> bool:
        """The fast path of a read or write the cache can serve at once: tokens held, nothing
        else going on with the file, every block cached (for a write, within one block, and
        not extending the file). False, having done nothing, sends the call the general way
        (which checks and says what is wrong)."""
        s = self._s
        f = s.fds.get(fd) if type(fd) is int else None
        session = s.session
        if (f is None or session is None or type(num_bytes) is not int or type(offset) is not int
                or num_bytes <= 0 or offset < 0):
            return False
        end = offset + num_bytes
        with s.lock:
            if mode == READ:
                s.cache.deny(f)  # (its read position, which fast reads moved)
            if (f.closing or f.active or f.revoking or end > f.size or s.fds.get(fd) is not f
                    or (mode == WRITE and f.mode != PFS_READ_WRITE)
                    or not session.lease_valid() or not f.tokens.covers(offset, end, mode)
                    or not s.cache.hit(f, offset, num_bytes, buf,
                                       self._tokens.cacheable(f, mode), writing=mode == WRITE)):
                return False
            if mode == WRITE:
                f.wrote, f.written_end = True, max(f.written_end, end)
            else:
                self._allow_fast(f, offset, end, running=0)
            return session.lease_valid()  # else the general way fails it, lease run out

    def _allow_fast(self, f: OpenFile, start: int, end: int, running: int) -> None:
        """After a read of [start, end) that the Client's checks let through (the lock held,
        `running` operations on the file being the caller's own): lets the fd read on the
        cache's fast path (BlockCache.allow) within the READ-or-WRITE token range around it,
        while nothing else runs on the file and no revocation is pending. Each change that
        could make these checks fail takes it back first: an operation starting on the file
        (Tokens.holding), a revocation marked (Tokens.mark_revoking), a close (closing,
        forget), the lease in doubt (Leased.watch_lease), the session lost (drop_all)."""
        s = self._s
        session = s.session
        held = f.tokens.around(start, end, READ)
        if (held is None or len(f.active) != running or f.closing or f.refused
                or session is None or not session.lease_valid() or s.fds.get(f.fd) is not f):
            return
        with s.marks:  # a revocation marked after this denies after this allows
            if not f.revoking:
                s.cache.allow(f, *held)
