"""pfs.Client: the C-like API (README) on one metaserver session, thread-safe; a front that checks
nothing itself and hands every call to the module whose one job it is.

    state.py      what the Client holds, under one lock; a lost session is final
    lifecycle.py  initialize, finish, reclaim after a metaserver restart; at exit
    openfiles.py  open files and fds, open and close
    lockcache.py  tokens kept unused after close, for a reopen
    tokens.py     every operation inside `holding`; how a revocation is answered
    readwrite.py  read, write, truncate, fsync: where a byte goes
    namespace.py  the metaserver's calls on paths, and paging, walks, makedirs
    args.py       argument checking, and the C-like form of every call

Leases: an operation runs only while the session's lease surely holds, and fails with ENOTCONN
(its result discarded) if the lease may have run out before it finished: by then the metaserver
may have given this client's tokens to another, so cached bytes may be stale. Metaserver
restarts: while the session recovers (leasing.py) operations wait, up to PFS_RETRY_SECONDS, and
the cache, tokens and unstored writes are kept; once it is back, `Lifecycle.reclaim` takes back
the open files and tokens, and an open file the metaserver does not give back fails with ESTALE.

Each method has two forms: `read(...)` raises OSError (the Pythonic layer uses these), and
`pfs_read(...)` returns -1 and records the error for `pfs_last_error()` instead.
"""
from __future__ import annotations

import stat
from typing import Any

from pfs.datapath.striped import DataPlane
from pfs.metadata import ClusterLayout, ExecStat, Metadata
from pfs.protocol.transport import Credentials, default_metaserver

from .args import c_like
from .lifecycle import Lifecycle
from .namespace import Namespace, new_attributes
from .openfiles import OpenFile, OpenFiles
from .readwrite import ReadWrite
from .session import MetaSession
from .state import ClientState
from .tokens import Tokens


class Client:
    """One client of a PFS cluster: a session, its open files, its tokens and its cache."""

    def __init__(self, metaserver: str | None = None, cache_blocks: int | None = None,
                 credentials: Credentials | None = None) -> None:
        self.metaserver = metaserver or default_metaserver()
        self._state = ClientState(self.metaserver, cache_blocks, credentials)
        self._tokens = Tokens(self._state)
        self._files = OpenFiles(self._state, self._tokens)
        self._life = Lifecycle(self._state, self._tokens, self._files)
        self._io = ReadWrite(self._state, self._tokens, self._files)
        self._names = Namespace(self._state)

    # What tests and tools look into: the session, the open files by fd, the data plane.
    @property
    def _session(self) -> MetaSession | None:
        return self._state.session

    @property
    def _fds(self) -> dict[int, OpenFile]:
        return self._state.fds

    @property
    def _dataplane(self) -> DataPlane | None:
        return self._state.dataplane

    # --- session ----------------------------------------------------------------------------
    def initialize(self) -> int:
        """Starts a session (or returns the current one's id); the client id."""
        return self._life.initialize()

    def finish(self, client_id: int) -> None:
        """Closes every open file (writing back), releases all tokens, ends the session. Bytes
        that cannot be stored by then are lost with the session, and the failure says so."""
        self._life.finish(client_id)

    def fileservers(self) -> dict[int, str]:
        """The cluster's fileservers (index -> address) as learned at initialize."""
        return self._life.fileservers()

    def layout(self) -> ClusterLayout:
        """Online fileservers and the block and stripe sizes new files get."""
        return self._life.layout()

    def execstat(self) -> ExecStat:
        """This client's cache counters."""
        self._state.live_session()
        with self._state.lock:
            stats = ExecStat()
            self._state.cache.stats.copy_into(stats)
            return stats

    # --- namespace --------------------------------------------------------------------------
    def create(self, path: str, stripe_width: int | None = None, replicas: int = 0,
               mode: int | None = None, uid: int | None = None, gid: int | None = None) -> None:
        """Creates an empty file, striped over `stripe_width` fileservers with `replicas`
        copies of each stripe unit; its parent directory must exist. What is not given
        (None, 0) comes from the nearest directory above with a layout (`pfs setstripe`),
        else the cluster's defaults (every fileserver; `--replicas`). `mode` (permission
        bits), `uid` and `gid` are stored for the mount (None: never set, see Metadata)."""
        self._names.create(path, stripe_width, replicas, new_attributes(mode, uid, gid))

    def set_layout(self, path: str, stripe_width: int = 0, stripe_blocks: int = 0,
                   replicas: int = 0) -> tuple[int, int]:
        """On a directory: the stripe width, blocks per stripe unit and replica count that
        files created below it get unless their create says otherwise (0: not set; all 0
        removes the layout). On a file: its replica count alone; copies are made or dropped
        in the background. (Copies made, copies dropped.)"""
        return self._names.set_layout(path, stripe_width, stripe_blocks, replicas)

    def mkdir(self, path: str, mode: int | None = None, uid: int | None = None,
              gid: int | None = None) -> None:
        """Creates a directory; its parent must exist."""
        self._names.mkdir(path, new_attributes(mode, uid, gid))

    def symlink(self, target: str, path: str, mode: int | None = None, uid: int | None = None,
                gid: int | None = None) -> None:
        """Creates a symbolic link at `path` holding `target`. PFS never follows it (opening
        it is ELOOP); the mount's kernel does."""
        self._names.symlink(target, path, new_attributes(mode, uid, gid))

    def mknod(self, path: str, mode: int, rdev: int = 0, uid: int | None = None,
              gid: int | None = None) -> None:
        """Creates a special file at `path`: `mode` is its type (stat.S_IFIFO, S_IFSOCK,
        S_IFCHR or S_IFBLK) and permission bits, `rdev` a device's number. PFS keeps its name
        and attributes; opening it through PFS is ENXIO, the mount's kernel serves it."""
        self._names.mknod(path, stat.S_IFMT(mode), rdev,
                          new_attributes(stat.S_IMODE(mode), uid, gid))

    def setattr(self, path: str | int, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, atime: float | None = None,
                mtime: float | None = None) -> Metadata:
        """Sets the given POSIX attributes of a file, directory or symlink (chmod, chown,
        utimens; times in POSIX seconds); ctime becomes now. An mtime set while the file is
        open stays after its close. `path` may be an open fd instead, as os.chmod's may
        (fchmod): the file may have been unlinked since it was opened. The new metadata."""
        changes = dict(mode=mode, uid=uid, gid=gid, atime=atime, mtime=mtime)
        if isinstance(path, int):
            f = self._files.open_file(path)
            return self._names.fsetattr(f.file_id, f.name, **changes)
        return self._names.setattr(path, **changes)

    def rmdir(self, path: str) -> None:
        """Removes an empty directory."""
        self._names.rmdir(path)

    def rename(self, old: str, new: str, open_ok: bool = False) -> None:
        """Moves a file or directory, atomically; replaces a file (or an empty directory, for a
        directory) at `new`, as POSIX rename does. Files open anywhere cannot be moved or
        replaced (EBUSY), unless `open_ok` (POSIX): then a replaced file stays readable and
        writable through the fds open on it until its last close anywhere."""
        self._names.rename(old, new, open_ok)

    def delete(self, path: str, open_ok: bool = False) -> None:
        """Removes a file (a directory: EISDIR, use rmdir); not while it is open anywhere
        (EBUSY), unless `open_ok` (POSIX unlink): then the name goes at once and the file is
        removed at its last close anywhere, a metaserver restart meanwhile included. A
        file whose close failed here because its bytes could not be stored (a full disk, say)
        is given up: those bytes are dropped, the close completed, and the file deleted."""
        self._names.delete(path, open_ok)

    def stat(self, path: str) -> Metadata:
        """Like fstat, by path, for a file (or directory) this client need not have open."""
        return self._names.stat(path)

    def fstat(self, fd: int) -> Metadata:
        """The file's most recent metadata, sizes still in other clients' caches included."""
        f = self._files.open_file(fd)
        return self._names.fstat(f.file_id, f.name)

    def listdir(self, path: str = "") -> list[Metadata]:
        """The entries of a directory (default: the root) with their metadata, by name; each
        entry's filename is its whole path."""
        return self._names.listdir(path)

    # --- files ------------------------------------------------------------------------------
    def open(self, path: str, mode: int) -> int:
        """Opens a file PFS_READ or PFS_READ_WRITE; its fd."""
        return self._files.open(path, mode)

    def file_id(self, fd: int) -> int:
        """The PFS id of the file open as `fd` (what tells files apart across renames)."""
        return self._files.open_file(fd).file_id

    def permissions(self, fd: int) -> int | None:
        """The mode bits of the file open as `fd` as this client last saw them (its open, or a
        stat, fstat or setattr since; None: never set), without a call: the mount's set-ID
        check."""
        return self._files.open_file(fd).permissions

    def close(self, fd: int) -> None:
        """Writes back the file's dirty blocks, drops its cached blocks, and releases its tokens
        or keeps them unused for a reopen (PFS_LOCK_CACHE_FILES files; another client that needs
        them has them revoked). If some bytes written through it cannot be stored, close fails, saying which, and the
        fd stays open for close and fsync only, its bytes and tokens kept: close again to try
        again. Close never succeeds while a byte written through the fd is not stored."""
        self._files.close(fd)

    def read(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """Reads up to num_bytes at offset into buf; the number read: short near the end, 0 at
        the end. An offset past the end is EINVAL, as the course's contract says (not 0)."""
        return self._io.read(fd, buf, num_bytes, offset)

    def write(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """Writes num_bytes of buf at offset (at most at the end: no holes); num_bytes."""
        return self._io.write(fd, buf, num_bytes, offset)

    def pread(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """As POSIX pread: `read`, but an offset at or past the end reads 0 bytes."""
        return self._io.read(fd, buf, num_bytes, offset, past_end=True)

    def pwrite(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """As POSIX pwrite: `write`, but an offset past the end leaves a hole that reads as
        zeros (the file is extended under the write's own token, so no other client's bytes
        in the gap are overwritten); num_bytes."""
        return self._io.write(fd, buf, num_bytes, offset, hole=True)

    def append(self, fd: int, buf: Any, num_bytes: int) -> int:
        """As a write to a file opened O_APPEND: writes num_bytes at the end of the file as it
        is, atomically with respect to every other client's writes and appends; the offset
        written at."""
        return self._io.append(fd, buf, num_bytes)

    def stored_checksum(self, fd: int) -> tuple[int, int | None]:
        """(the file's size, the CRC32C of its bytes) combined from the checksums the
        fileservers store beside them, reading no more than a last partial unit; the CRC is
        None where that cannot be done (a stripe unit that is not whole 4 KiB units, or a unit
        without a stored checksum): read the file to compute it."""
        return self._io.stored_checksum(fd)

    def fsync(self, fd: int) -> None:
        """Returns once every write so far to the file is on the fileservers' disks."""
        self._io.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        """Cuts the file to `size` bytes, or extends it with zeros, under a WRITE token from the
        new end to infinity; cached blocks past the new end are dropped."""
        self._io.resize(fd, size, cut=True)

    def extend(self, fd: int, size: int) -> None:
        """Extends the file with zeros to `size` bytes if it is shorter, and never cuts it: for
        writers that seek past the end, as Python's files allow (the size is checked under the
        token, so a concurrent extension by another client is never cut back)."""
        self._io.resize(fd, size, cut=False)

    # --- the C-like API: pfs_initialize, pfs_create, ... (made below the class) --------------
    @c_like
    def pfs_fstat(self, fd: int, meta: Metadata) -> None:
        """Fills meta (a pfs.Metadata) with the file's most recent metadata."""
        self.fstat(fd).copy_into(meta)

    @c_like
    def pfs_execstat(self, stats: ExecStat) -> None:
        """Fills stats (a pfs.ExecStat) with this client's cache counters."""
        self.execstat().copy_into(stats)


#: The calls whose C-like form is the raising method's, returning -1 instead.
C_LIKE = ("initialize", "create", "open", "read", "write", "close", "delete", "mkdir", "rmdir",
          "rename", "ftruncate", "fsync", "finish")
for _name in C_LIKE:
    setattr(Client, f"pfs_{_name}", c_like(getattr(Client, _name)))
