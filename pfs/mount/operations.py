"""The FUSE operations of a mount over one thread-safe pfs.Client (libfuse's worker threads call
it directly). Every call goes to PFS, under its tokens, with nothing kept here but open files
(handles.py): the kernel keeps no data or attributes (daemon.py), so the mount is sequentially
consistent with every other PFS client. A failure is the OSError PFS raised, whose errno the
program sees.

Mode bits, owners and times are stored by the metaserver (Client.setattr); the kernel checks
permissions against them (daemon.py: default_permissions), but on root's own mount, where only
execute is checked. Unlink and rename work on files open
anywhere, as POSIX says (PFS keeps an unlinked open file until its last close). What PFS does
not store is refused as file systems without the feature do: hard links with EPERM, extended
attributes with ENOTSUP (mfusepy's default). Special files (FIFOs, sockets, devices) are names
and attributes in PFS; the kernel serves them (a FIFO's pipe is this machine's only).
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

from .handles import Handles, is_hidden

#: What files and directories whose mode was never set report (made by the API, say).
FILE_MODE, DIR_MODE = 0o644, 0o755
#: How long a statfs answer is reused (`df` in a loop would otherwise ask every fileserver).
STATFS_SECONDS = 2.0
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def pfs_path(path: str) -> str:
    """The PFS path of a mount's path ("/a/b" -> "a/b", "/" -> the root "")."""
    return path.lstrip("/")


def _or(value, default):
    """`value`, or `default` if it was never set (None)."""
    return default if value is None else value


def _set_id(mode: int | None) -> int:
    """The set-ID bits of `mode` that a write by an unprivileged process clears (Linux's rule:
    set-group-ID only with group execute; without, it marks mandatory locking)."""
    mode = mode or 0
    return mode & (stat.S_ISUID | (stat.S_ISGID if mode & stat.S_IXGRP else 0))


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
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        """By fh when the kernel has one, or by libfuse's hidden name of an unlinked open file
        (fstat: the file has no name in PFS any more; its link count is 0)."""
        fd = self.handles.get(fh).fd if fh is not None else self.handles.hidden_fd(path)
        if fd is not None:
            return self._attributes(self.client.fstat(fd))
        return self._attributes(self.client.stat(pfs_path(path)))

    def _attributes(self, meta: Metadata) -> dict[str, Any]:
        if meta.symlink_target is not None:
            kind, size = stat.S_IFLNK | 0o777, len(os.fsencode(meta.symlink_target))
        elif meta.special is not None:
            kind, size = meta.special | _or(meta.mode, FILE_MODE), 0
        elif meta.is_dir:
            kind, size = stat.S_IFDIR | _or(meta.mode, DIR_MODE), 0
        else:
            kind, size = stat.S_IFREG | _or(meta.mode, FILE_MODE), meta.file_size
        mtime, ctime = round(meta.mtime * 1e9), round(meta.ctime * 1e9)
        atime = round(_or(meta.atime, meta.mtime) * 1e9)
        return dict(st_mode=kind, st_nlink=meta.nlink, st_size=size,
                    st_uid=_or(meta.uid, self._uid), st_gid=_or(meta.gid, self._gid),
                    st_blocks=(size + 511) // 512,
                    st_blksize=meta.recipe.block_size * meta.recipe.stripe_blocks or 4096,
                    st_mtime=mtime, st_atime=atime, st_ctime=ctime, st_rdev=meta.rdev or 0)

    def access(self, path: str, amode: int) -> None:
        """access(2) and chdir on a mount without default_permissions (root's alone: daemon.py),
        as for root anywhere: everything passes but executing a file without an execute bit."""
        mode = self.getattr(path)["st_mode"]
        if amode & os.X_OK and stat.S_ISREG(mode) and not mode & 0o111:
            raise error(errno.EACCES, f"{path} has no execute bit")

    def readlink(self, path: str) -> str:
        target = self.client.stat(pfs_path(path)).symlink_target
        if target is None:
            raise error(errno.EINVAL, f"{path} is not a symbolic link")
        return target

    @staticmethod
    def _owner() -> dict[str, int]:
        """The owner and group a new file gets: the calling process's."""
        uid, gid, _ = mfusepy.fuse_get_context()
        return dict(uid=uid, gid=gid)

    def readdir(self, path: str, fh: int) -> list[str]:
        names = [m.filename.rpartition("/")[2] for m in self.client.listdir(pfs_path(path))]
        return [".", "..", *names]

    def mkdir(self, path: str, mode: int) -> None:
        self.client.mkdir(pfs_path(path), stat.S_IMODE(mode), **self._owner())

    def mknod(self, path: str, mode: int, dev: int) -> None:
        """A FIFO, socket or device (a regular file if `mode` says so, as mknod(2) allows)."""
        if stat.S_ISREG(mode):
            self.client.create(pfs_path(path), self._width or None, mode=stat.S_IMODE(mode),
                               **self._owner())
        else:
            self.client.mknod(pfs_path(path), mode, dev, **self._owner())

    def symlink(self, target: str, source: str) -> None:
        """`ln -s source target`: a link at `target` holding `source`."""
        self.client.symlink(source, pfs_path(target), **self._owner())

    def rmdir(self, path: str) -> None:
        self.client.rmdir(pfs_path(path))

    def unlink(self, path: str) -> None:
        """POSIX: a file open anywhere loses its name now and goes at its last close. (The
        hidden name of a file unlinked while open here goes at its last close here: PFS
        reclaims the file at the close.)"""
        if not self.handles.unhide(path):
            self.client.delete(pfs_path(path), open_ok=True)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        old, new = pfs_path(old), pfs_path(new)
        if flags & ~RENAME_NOREPLACE:
            raise error(errno.EINVAL, "PFS renames do not exchange names (RENAME_EXCHANGE)")
        if flags & RENAME_NOREPLACE and self._exists(new):
            # Checked, then renamed: another client may create `new` in between.
            raise error(errno.EEXIST, f"{new!r} exists")
        if is_hidden(new) and self.handles.hide("/" + new, self.client.stat(old).file_id):
            # libfuse hides a file open here that is unlinked or renamed over, to reach it
            # again: PFS unlinks it (keeping it until its last close), the name stays here.
            try:
                self.client.delete(old, open_ok=True)
            except OSError:
                self.handles.unhide("/" + new)
                raise
            return
        self.client.rename(old, new, open_ok=True)

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
            self.client.create(name, self._width or None, mode=stat.S_IMODE(mode),
                               **self._owner())
        except FileExistsError:
            if flags & os.O_EXCL:
                raise  # else created by another client meanwhile: open it, as POSIX does
            return self.open(path, flags)
        return self.handles.open(name, append=bool(flags & os.O_APPEND))

    def open(self, path: str, flags: int) -> int:
        """O_TRUNC cuts the file here (libfuse passes it on: atomic_o_trunc)."""
        fh = self.handles.open(pfs_path(path), append=bool(flags & os.O_APPEND))
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            try:
                self.client.ftruncate(self.handles.get(fh).fd, 0)
            except OSError:
                self.handles.release(fh)
                raise
        return fh

    def read(self, path: str, buf: memoryview, offset: int, fh: int) -> int:
        """Fills `buf` (the kernel's reply buffer) in place; 0 bytes at or past the end."""
        return self.client.pread(self.handles.get(fh).fd, buf, len(buf), offset)

    def write(self, path: str, data: memoryview, offset: int, fh: int) -> int:
        handle = self.handles.get(fh)
        self._drop_set_id(handle.fd)
        if handle.append:  # the kernel's offset is its own idea of the end: the file's is PFS's
            self.client.append(handle.fd, data, len(data))
            return len(data)
        return self.client.pwrite(handle.fd, data, len(data), offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        if fh is not None:
            self._truncate(self.handles.get(fh).fd, length)
            return
        with self.handles.fd_of(pfs_path(path)) as fd:
            self._truncate(fd, length)

    def _truncate(self, fd: int, length: int) -> None:
        self._drop_set_id(fd)
        self.client.ftruncate(fd, length)

    def _drop_set_id(self, fd: int) -> None:
        """A write or truncate by a process other than root clears the file's set-ID bits, as
        the kernel does on local file systems (it leaves that to a FUSE file system doing
        direct I/O): the bits as the open found them say whether to look (no call), the
        file's mode now what to clear."""
        if _set_id(self.client.permissions(fd)) and mfusepy.fuse_get_context()[0] != 0:
            mode = self.client.fstat(fd).mode  # (which permissions() then tells too)
            if _set_id(mode):
                self.client.setattr(fd, mode=mode & ~_set_id(mode))

    def flush(self, path: str, fh: int) -> None:
        """close(): nothing to do; the last release writes the file back (close() returns
        before that: fsync() is what makes data durable, as on any file system)."""

    def release(self, path: str, fh: int) -> None:
        self.handles.release(fh)

    def fsync(self, path: str, datasync: int, fh: int) -> None:
        self.client.fsync(self.handles.get(fh).fd)

    # --- attributes -----------------------------------------------------------------------------
    def chmod(self, path: str, mode: int) -> None:
        self._setattr(path, mode=stat.S_IMODE(mode))

    def chown(self, path: str, uid: int, gid: int) -> None:
        """-1 leaves one unchanged; the kernel has checked that the caller may (root only)."""
        self._setattr(path, uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)

    def utimens(self, path: str, times: tuple[int | None, int | None]) -> None:
        """Times in nanoseconds, None: unchanged (binding.py). PFS also sets mtime itself at
        the close after a write, unless it was set while the file was open (cp -p)."""
        atime, mtime = (None if t is None else t / 1e9 for t in times)
        self._setattr(path, atime=atime, mtime=mtime)

    def _setattr(self, path: str, **changes) -> None:
        """By path, or by fd for libfuse's hidden name of an unlinked open file (fchmod,
        futimens: the file has no name in PFS any more)."""
        fd = self.handles.hidden_fd(path)
        self.client.setattr(pfs_path(path) if fd is None else fd, **changes)

    # --- what PFS does not store -----------------------------------------------------------------
    def link(self, target: str, source: str) -> None:
        raise _refused("hard links")
