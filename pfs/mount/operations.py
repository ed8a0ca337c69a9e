"""The FUSE operations of a mount over one thread-safe pfs.Client (libfuse's worker threads call
it directly). Every call goes to PFS, under its tokens, with nothing kept here but open files
(handles.py): the kernel keeps no data or attributes (daemon.py), so the mount is sequentially
consistent with every other PFS client. A failure is the OSError PFS raised, whose errno the
program sees.

What PFS cannot store yet is refused with EPERM, as file systems without the feature do: hard
links, symlinks, special files, and chmod/chown/utimens that would change what getattr reports.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
import time
from typing import Any

from .binding import mfusepy

from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_pb_grpc
from pfs.client import Client
from pfs.metadata import Metadata
from pfs.protocol.errnos import error
from pfs.protocol.transport import Credentials

from .handles import Handles

#: What files and directories report (PFS stores no mode bits yet: chmod to another is EPERM).
FILE_MODE, DIR_MODE = 0o644, 0o755
#: How long a statfs answer is reused (`df` in a loop would otherwise ask every fileserver).
STATFS_SECONDS = 2.0
#: How long unlink and rename wait for the kernel's late releases of files just closed.
RELEASE_WAIT_SECONDS = 2.0
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def pfs_path(path: str) -> str:
    """The PFS path of a mount's path ("/a/b" -> "a/b", "/" -> the root "")."""
    return path.lstrip("/")


def _refused(what: str) -> OSError:
    return error(errno.EPERM, f"PFS does not store {what} (see the README, \"Mounting\")")


class Operations(mfusepy.Operations):
    use_ns = True  # times in integer nanoseconds

    def __init__(self, client: Client, stripe_width: int = 0) -> None:
        self.client = client
        self.handles = Handles(client)
        self._width = stripe_width
        self._uid, self._gid = os.getuid(), os.getgid()
        self._statfs: tuple[float, dict[str, int]] | None = None
        self._statfs_lock = threading.Lock()

    # --- attributes and directories ------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        return self._attributes(self.client.stat(pfs_path(path)))

    def _attributes(self, meta: Metadata) -> dict[str, Any]:
        size = meta.file_size
        kind = (stat.S_IFDIR | DIR_MODE) if meta.is_dir else (stat.S_IFREG | FILE_MODE)
        mtime, ctime = int(meta.mtime * 1e9), int(meta.ctime * 1e9)
        return dict(st_mode=kind, st_nlink=2 if meta.is_dir else 1, st_size=size,
                    st_uid=self._uid, st_gid=self._gid, st_blocks=(size + 511) // 512,
                    st_blksize=meta.recipe.block_size * meta.recipe.stripe_blocks or 4096,
                    st_mtime=mtime, st_atime=mtime, st_ctime=max(ctime, mtime))

    def readdir(self, path: str, fh: int) -> list[str]:
        names = [m.filename.rpartition("/")[2] for m in self.client.listdir(pfs_path(path))]
        return [".", "..", *names]

    def mkdir(self, path: str, mode: int) -> None:
        self.client.mkdir(pfs_path(path))

    def rmdir(self, path: str) -> None:
        self.client.rmdir(pfs_path(path))

    def unlink(self, path: str) -> None:
        self._busy_retried(self.client.delete, pfs_path(path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        old, new = pfs_path(old), pfs_path(new)
        if flags & ~RENAME_NOREPLACE:
            raise error(errno.EINVAL, "PFS renames do not exchange names (RENAME_EXCHANGE)")
        if flags & RENAME_NOREPLACE and self._exists(new):
            # Checked, then renamed: another client may create `new` in between.
            raise error(errno.EEXIST, f"{new!r} exists")
        self._busy_retried(self.client.rename, old, new)

    def _busy_retried(self, call, *paths: str) -> None:
        """`call(*paths)`, again once the mount's own releases of those paths have come in if
        PFS found one of them open (EBUSY)."""
        try:
            call(*paths)
        except OSError as e:
            if (e.errno != errno.EBUSY
                    or not any(self.handles.is_open(p) for p in paths)
                    or not self.handles.wait_released(paths, RELEASE_WAIT_SECONDS)):
                raise
            call(*paths)

    def _exists(self, path: str) -> bool:
        try:
            self.client.stat(path)
            return True
        except FileNotFoundError:
            return False

    def statfs(self, path: str) -> dict[str, int]:
        with self._statfs_lock:
            if self._statfs is None or time.monotonic() - self._statfs[0] > STATFS_SECONDS:
                self._statfs = (time.monotonic(), self._space())
            return self._statfs[1]

    def _space(self) -> dict[str, int]:
        """The fileservers' disks, each counted once (those of one host with the same size
        are taken to be one disk: `pfs up` puts all its fileservers on one)."""
        disks: dict[tuple[str, int], int] = {}
        credentials = Credentials()
        for address in self.client.fileservers().values():
            with credentials.channel(address) as channel:
                health = fs_pb_grpc.FileServerStub(channel).Health(fs_pb.HealthRequest(),
                                                                   timeout=5)
            disks[(address.rpartition(":")[0], health.disk_total_bytes)] = health.disk_free_bytes
        unit = 4096
        total = sum(size for _, size in disks) // unit
        free = sum(disks.values()) // unit
        return dict(f_bsize=unit, f_frsize=unit, f_blocks=total, f_bfree=free, f_bavail=free,
                    f_namemax=255)

    # --- files ---------------------------------------------------------------------------------
    def create(self, path: str, mode: int, flags: int) -> int:
        name = pfs_path(path)
        try:
            self.client.create(name, self._width or None)
        except FileExistsError:
            if flags & os.O_EXCL:
                raise  # else created by another client meanwhile: open it, as POSIX does
        return self.handles.open(name, append=bool(flags & os.O_APPEND))

    def open(self, path: str, flags: int) -> int:
        return self.handles.open(pfs_path(path), append=bool(flags & os.O_APPEND))

    def read(self, path: str, buf: memoryview, offset: int, fh: int) -> int:
        """Fills `buf` (the kernel's reply buffer) in place; 0 bytes at or past the end."""
        return self.client.pread(self.handles.get(fh).fd, buf, len(buf), offset)

    def write(self, path: str, data: memoryview, offset: int, fh: int) -> int:
        handle = self.handles.get(fh)
        if handle.append:  # the kernel's offset is its own idea of the end: the file's is PFS's
            self.client.append(handle.fd, data, len(data))
            return len(data)
        return self.client.pwrite(handle.fd, data, len(data), offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if fh is not None:
            self.client.ftruncate(self.handles.get(fh).fd, length)
            return
        with self.handles.fd_of(pfs_path(path)) as fd:
            self.client.ftruncate(fd, length)

    def flush(self, path: str, fh: int) -> None:
        """close(): nothing to do; the last release writes the file back (close() returns
        before that: fsync() is what makes data durable, as on any file system)."""

    def release(self, path: str, fh: int) -> None:
        self.handles.release(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self.client.fsync(self.handles.get(fh).fd)

    # --- what PFS does not store (yet) ---------------------------------------------------------
    def chmod(self, path: str, mode: int) -> None:
        if stat.S_IMODE(mode) != stat.S_IMODE(self.getattr(path)["st_mode"]):
            raise _refused("mode bits")

    def chown(self, path: str, uid: int, gid: int) -> None:
        if uid not in (-1, self._uid) or gid not in (-1, self._gid):
            raise _refused("owners and groups")

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        """Setting the times to now (touch) is taken: PFS sets mtime itself at the next close
        after a write. Any other time is refused."""
        self.getattr(path)  # ENOENT as POSIX
        if times is not None:
            raise _refused("times other than its own")

    def link(self, target: str, source: str) -> None:
        raise _refused("hard links")

    def symlink(self, target: str, source: str) -> None:
        raise _refused("symbolic links")

    def mknod(self, path: str, mode: int, dev: int) -> None:
        raise _refused("special files (devices, FIFOs, sockets)")
