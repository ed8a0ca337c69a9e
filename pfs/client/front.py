"""pfs.Client: the C-like API (README) on one metaserver session, thread-safe.

Every data operation first holds tokens for its whole range, then works under the client's lock;
it never waits for a token while holding the lock or another token, so clients cannot deadlock,
and a revocation (which takes the same lock) waits only for operations already running.

Leases: an operation runs only while the session's lease surely holds, and fails with ENOTCONN
(its result discarded) if the lease may have run out before it finished: by then the metaserver
may have given this client's tokens to another, so cached bytes may be stale. A lost session
drops the cache without writing it back (the fileservers would refuse it anyway).

Metaserver restarts: while the session recovers (its stream broke, or its lease ran out: the
metaserver may be gone; pfs/client/session.py) operations wait, up to PFS_RETRY_SECONDS, and the cache,
tokens and unstored writes are kept; a revocation waits for the metaserver's word. Once the
session is back on a restarted metaserver, `_reclaim` tells it the open files and tokens and
takes back their capabilities; an open file it does not give back has its unstored writes
dropped, and its fd fails with ESTALE.

Sizes: a read or write that may reach past the size this client knows asks for a token up to
infinity. Nobody else can then grow the file, and whoever held it reported its size when giving
it up, so the size that comes with the grant is exact. Extending writes therefore always hold the
tail of the file, and the metaserver knows whom to ask about sizes not yet reported.

Each method has two forms: `read(...)` raises OSError (the Pythonic layer uses these), and
`pfs_read(...)` returns -1 and records the error for `pfs_last_error()` instead.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import itertools
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from pfs._proto import metaserver_pb2 as pb

from pfs.datapath.blockcache import BlockCache
from pfs.datapath.striped import DataPlane
from pfs.metadata import MAX_FILE_SIZE, ClusterLayout, ExecStat, Metadata, Recipe
from pfs.protocol import errnos as errors
from pfs.protocol.capability import Held
from pfs.protocol.paths import brief, canonical
from pfs.protocol.ranges import INFINITY, RangeMap
from pfs.protocol.tokenmodes import READ, WRITE
from pfs.protocol.transport import Credentials

from . import lasterror
from .session import MetaSession

log = logging.getLogger("pfs.client")

PFS_READ = 1
PFS_READ_WRITE = 2

DEFAULT_METASERVER = "127.0.0.1:50050"
#: Default cache capacity in blocks (with the default 64 KiB blocks, 64 MiB).
DEFAULT_CACHE_BLOCKS = 1024
#: Seconds a data call keeps retrying an unreachable fileserver (one restarting, say).
DEFAULT_RETRY_SECONDS = 10.0
#: Bytes of writes a client keeps in flight to the fileservers at most (write-behind).
WRITE_BEHIND_BYTES = 64 << 20
#: The widest stripe the protocol can name (the metaserver allows its fileservers' number).
MAX_STRIPE_WIDTH = (1 << 32) - 1


def default_metaserver() -> str:
    """Where the metaserver is unless a caller says: PFS_METASERVER, else the default."""
    return os.environ.get("PFS_METASERVER") or DEFAULT_METASERVER


@dataclass(eq=False)
class _OpenFile:
    fd: int
    file_id: int
    name: str
    mode: int
    recipe: Recipe
    size: int  # the newest size this client knows of, its own cached writes included
    size_epoch: int  # the truncates of the file that `size` takes into account
    written_end: int = 0  # the end of the bytes this client wrote (what it reports as stored)
    tokens: RangeMap = field(default_factory=RangeMap)
    held: Held = field(default_factory=Held)  # the tokens' capabilities, for the fileservers
    stale: set[int] = field(default_factory=set)  # fileservers with a stale copy: not read
    revoking: list[tuple[int, int]] = field(default_factory=list)  # revocations not yet done
    wrote: bool = False
    closing: bool = False  # a close failed half-way: only close may be retried
    read_next: int = 0  # where a sequential read would start (read-ahead)
    active: list[tuple[int, int]] = field(default_factory=list)  # operations running on it
    refused: str | None = None  # why a restarted metaserver did not give it back

    @property
    def block_size(self) -> int:
        return self.recipe.block_size


def _c_like(method: Callable[..., Any]) -> Callable[..., int]:
    """The C-like form of a raising method: its int result, or -1 with the error recorded."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            result = method(*args, **kwargs)
        except OSError as e:
            lasterror.set_last_error(e)
            return -1
        return 0 if result is None else result
    return wrapper


def _int_arg(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.error(errno.EINVAL, f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise errors.error(errno.EINVAL, f"{what} must not be negative (got {value})")
    return value


def _setting(name: str, kind: type, default):
    """A number from the environment; EINVAL, saying so, when it is not one."""
    text = os.environ.get(name)
    try:
        return default if text is None else kind(text)
    except ValueError:
        raise errors.error(errno.EINVAL, f"{name} must be a number, not {text!r}") from None


def _buffer(buf: Any, num_bytes: int, writable: bool) -> memoryview:
    """The first num_bytes of the caller's buffer as bytes, without copying."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise errors.error(errno.EINVAL, f"buf must support the buffer protocol "
                                         f"(bytearray, memoryview, numpy array), not "
                                         f"{type(buf).__name__}") from None
    if writable and view.readonly:
        raise errors.error(errno.EINVAL, "buf is read-only; pass a bytearray or writable array")
    if not view.c_contiguous:
        raise errors.error(errno.EINVAL, "buf must be C-contiguous")
    view = view.cast("B")
    if len(view) < num_bytes:
        raise errors.error(errno.EINVAL, f"buf holds {len(view)} bytes, fewer than num_bytes "
                                         f"({num_bytes})")
    return view[:num_bytes]


#: What a lost session's calls say when it held nothing unstored.
NOTHING_LOST = "No unwritten data was lost. "
#: Clients with a session, finished at interpreter exit.
_live_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


@atexit.register
def _finish_at_exit() -> None:
    """A program that exits without pfs_finish keeps what it wrote, as with POSIX files: each
    client's open files are closed (written back) and its session ended. This must run before
    the interpreter's final teardown, when gRPC can no longer start the threads it needs."""
    for client in list(_live_clients):
        session = client._session
        if session is not None and session.recovering:
            client._lost(f"the process exited while the metaserver was unreachable "
                         f"({session.recovering})")
            (log.info if client._loss == NOTHING_LOST else log.warning)(
                "client %d exits without its metaserver: %s", session.client_id, client._loss)
        elif session is not None and not session.lost:
            try:
                client.finish(session.client_id)
            except OSError as e:
                log.warning("could not finish client %d at exit: %s", session.client_id, e)


def _refused(f: _OpenFile) -> OSError:
    return errors.error(errno.ESTALE, f"fd {f.fd}: {f.refused}")


def _metadata(meta: pb.FileMeta) -> Metadata:
    r = meta.recipe
    return Metadata(filename=meta.path, file_size=meta.size, ctime=meta.ctime, mtime=meta.mtime,
                    recipe=Recipe(r.stripe_width, r.block_size, r.stripe_blocks, list(r.servers),
                                  r.replicas or 1),
                    is_dir=meta.is_dir)


def _addresses(fileservers, online_only: bool = False) -> dict[int, str]:
    return {s.index: s.address for s in fileservers if s.online or not online_only}


class Client:
    """One client of a PFS cluster: a session, its open files, its tokens and its cache."""

    def __init__(self, metaserver: str | None = None, cache_blocks: int | None = None,
                 credentials: Credentials | None = None) -> None:
        self.metaserver = metaserver or default_metaserver()
        self._cache_blocks = cache_blocks  # None: PFS_CACHE_BLOCKS, read at initialize
        self._credentials = credentials  # made at initialize: PFS_SECRET may be wrong
        # Reentrant: a session found lost while an operation holds it is given up at once.
        # Fileserver I/O runs with it released (the cache releases it), so threads of one
        # client work in parallel on different files and ranges; `_changed` wakes waiters.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._marks = threading.Lock()  # guards _OpenFile.revoking; the stream thread takes it
        self._session: MetaSession | None = None
        self._dataplane: DataPlane | None = None
        self._cache: BlockCache | None = None
        self._fds: dict[int, _OpenFile] = {}
        self._by_id: dict[int, _OpenFile] = {}
        self._next_fd = itertools.count(1)
        self._loss: str | None = None  # what a lost session took with it
        self._retry_seconds = DEFAULT_RETRY_SECONDS

    # --- session ----------------------------------------------------------------------------
    def initialize(self) -> int:
        """Starts a session (or returns the current one's id); the client id."""
        with self._lock:
            if self._session is not None and not self._session.lost:
                return self._session.client_id
            cache_blocks = self._cache_blocks
            if cache_blocks is None:
                cache_blocks = _setting("PFS_CACHE_BLOCKS", int, DEFAULT_CACHE_BLOCKS)
            if cache_blocks < 0:
                raise errors.error(errno.EINVAL, "PFS_CACHE_BLOCKS must not be negative")
            retry_seconds = _setting("PFS_RETRY_SECONDS", float, DEFAULT_RETRY_SECONDS)
            if self._credentials is None:
                try:
                    self._credentials = Credentials()
                except ValueError as e:
                    raise errors.error(errno.EINVAL, str(e)) from None
            if self._session is not None:  # a lost one: let go of its stream and channels
                self._session.close()
                self._dataplane.close()
                self._cache.stop()
            session = MetaSession(self.metaserver, self._credentials, on_revoke=self._revoke,
                                  on_revoke_received=self._mark_revoking,
                                  size_of=self._known_size, on_lost=self._lost,
                                  on_rejoined=self._reclaim)
            reply = session.start()
            self._dataplane = DataPlane(_addresses(reply.fileservers), self._credentials,
                                        retry_seconds,
                                        lookup=lambda: _addresses(session.call(
                                            "Status", pb.StatusRequest(), "look up fileservers"
                                        ).fileservers, online_only=True),
                                        on_fenced=session.ended,
                                        on_missed=lambda file_id, server, start, end, why:
                                        session.call("ReportMissed", pb.ReportMissedRequest(
                                            file_id=file_id, server=server, start=start,
                                            end=end, why=why), "record a stale copy"),
                                        write_behind=WRITE_BEHIND_BYTES)
            self._cache = BlockCache(cache_blocks, reply.block_size, self._dataplane,
                                     self._changed)
            self._fds.clear()
            self._by_id.clear()
            self._loss = None
            self._retry_seconds = retry_seconds
            self._session = session
            _live_clients.add(self)
            log.info("client %d connected to %s", session.client_id, self.metaserver)
            return session.client_id

    def finish(self, client_id: int) -> None:
        """Closes every open file (writing back), releases all tokens, ends the session. Bytes
        that cannot be stored by then are lost with the session, and the failure says so."""
        session = self._live_session()
        if client_id != session.client_id:
            raise errors.error(errno.EINVAL, f"unknown client id {client_id} (this client is "
                                             f"{session.client_id})")
        failure = None
        for fd in list(self._fds):
            try:
                self.close(fd)
            except OSError as e:  # EBADF: another thread closed it meanwhile
                if e.errno != errno.EBADF:
                    failure = failure or e
        if failure is not None:
            self._lost("pfs_finish ended it")
            failure = errors.error(failure.errno, f"finish: {failure.strerror}. The session "
                                                  f"has ended: {self._loss}")
        session.finish()
        with self._lock:
            self._dataplane.close()
            self._cache.stop()
            self._session = None
        if failure:
            raise failure

    def fileservers(self) -> dict[int, str]:
        """The cluster's fileservers (index -> address) as learned at initialize."""
        return _addresses(self._live_session().reply.fileservers)

    def layout(self) -> ClusterLayout:
        """Online fileservers and the block and stripe sizes new files get."""
        reply = self._live_session().reply
        return ClusterLayout(sum(1 for s in reply.fileservers if s.online), reply.block_size,
                             reply.stripe_blocks, reply.replicas or 1, len(reply.fileservers))

    def _live_session(self) -> MetaSession:
        session = self._session
        if session is None:
            raise errors.error(errno.ENOTCONN, "not initialized: call pfs_initialize() first")
        return self._alive(session)

    def _alive(self, session: MetaSession) -> MetaSession:
        """The session, if it still holds; else ENOTCONN saying what its loss took. While it
        recovers, waits (the lock released) up to PFS_RETRY_SECONDS, then EHOSTDOWN."""
        session.check_lease()
        if session.recovering:
            with self._lock:
                deadline = time.monotonic() + self._retry_seconds
                while session.recovering and not session.lost:
                    if time.monotonic() >= deadline:
                        raise session.unreachable()
                    self._changed.wait(min(0.5, deadline - time.monotonic()))
                    session.check_lease()
        if session.lost:
            what = ""
            if session is self._session:  # (not one replaced by a new pfs_initialize meanwhile)
                self._lost(session.lost)  # done already, or waits until it is: the loss is known
                what = self._loss
            raise errors.error(errno.ENOTCONN, f"the session with the metaserver was lost: "
                                               f"{session.lost}. {what}Call "
                                               "pfs_initialize() to start a new session.")
        return session

    def _lost(self, reason: str) -> None:
        """The session is gone, and its tokens with it: nothing cached or held may be used or
        written back any more. Says what was lost (once: later calls find it done)."""
        with self._lock:
            if self._loss is not None:
                return
            for f in self._fds.values():
                f.tokens = RangeMap()
            blocks = self._cache.drop_all() if self._cache is not None else {}
            held = self._dataplane.drop_all(errors.error(
                errno.ENOTCONN, f"the session with the metaserver was lost: {reason}")) \
                if self._dataplane is not None else {}
            names = [self._by_id[i].name for i in {**blocks, **held} if i in self._by_id]
            if blocks or held:
                what = " and ".join(
                    ([f"{sum(blocks.values())} cached block(s)"] if blocks else [])
                    + ([f"{sum(held.values())} bytes sent to the fileservers"] if held else []))
                self._loss = (f"{what} written to {', '.join(brief(n) for n in names[:5])}"
                              f"{' and more' if len(names) > 5 else ''} since the last close or "
                              "fsync were never stored and are lost; everything closed or "
                              "fsynced before is safe. ")
            else:
                self._loss = NOTHING_LOST
            self._changed.notify_all()  # (operations waiting for a recovery)

    # --- namespace --------------------------------------------------------------------------
    def create(self, path: str, stripe_width: int, replicas: int = 0) -> None:
        """Creates an empty file, striped over `stripe_width` fileservers with `replicas`
        copies of each stripe unit (0: the cluster's default); its parent directory must
        exist."""
        path = canonical(path)
        if not 1 <= _int_arg(stripe_width, "stripe_width") <= MAX_STRIPE_WIDTH:
            raise errors.error(errno.EINVAL, f"stripe_width must be between 1 and the number "
                                             f"of fileservers, not {stripe_width}")
        if _int_arg(replicas, "replicas") > MAX_STRIPE_WIDTH:
            raise errors.error(errno.EINVAL, f"replicas must be at most the number of "
                                             f"fileservers, not {replicas}")
        self._live_session().call("Create", pb.CreateRequest(
            path=path, stripe_width=stripe_width, replicas=replicas), f"create {brief(path)}")

    def mkdir(self, path: str) -> None:
        """Creates a directory; its parent must exist."""
        path = canonical(path)
        self._live_session().call("Mkdir", pb.MkdirRequest(path=path), f"mkdir {brief(path)}")

    def rmdir(self, path: str) -> None:
        """Removes an empty directory."""
        path = canonical(path)
        self._live_session().call("Rmdir", pb.RmdirRequest(path=path), f"rmdir {brief(path)}")

    def rename(self, old: str, new: str) -> None:
        """Moves a file or directory, atomically; replaces a file (or an empty directory, for a
        directory) at `new`, as POSIX rename does. Files open anywhere cannot be moved or
        replaced (EBUSY)."""
        old, new = canonical(old), canonical(new)
        self._live_session().call("Rename", pb.RenameRequest(old_path=old, new_path=new),
                                  f"rename {brief(old)} to {brief(new)}")

    def open(self, path: str, mode: int) -> int:
        if type(mode) is not int or mode not in (PFS_READ, PFS_READ_WRITE):
            raise errors.error(errno.EINVAL, f"mode must be PFS_READ (1) or PFS_READ_WRITE (2), "
                                             f"not {mode!r}")
        path = canonical(path)
        meta = self._live_session().call("Open", pb.OpenRequest(path=path),
                                         f"open {brief(path)}").meta
        with self._lock:
            f = _OpenFile(next(self._next_fd), meta.file_id, path, mode,
                          _metadata(meta).recipe, meta.size, meta.size_epoch)
            self._fds[f.fd] = f
            self._by_id[f.file_id] = f
        return f.fd

    def close(self, fd: int) -> None:
        """Writes back the file's dirty blocks, drops its cached blocks, releases its tokens.
        If some bytes written through it cannot be stored, close fails, saying which, and the
        fd stays open for close and fsync only, its bytes and tokens kept: close again to try
        again. Close never succeeds while a byte written through the fd is not stored."""
        session = self._live_session()
        with self._lock:
            f = self._fds.get(fd) if type(fd) is int else None
            if f is not None and f.refused:  # the metaserver has it closed already
                del self._fds[fd]
                del self._by_id[f.file_id]
                raise _refused(f)
        self._renew_for_unstored(session, self._open_file(fd))
        with self._lock:
            f = self._file(fd)
            # From here on the fd takes no data operation, and its tokens are not relied on:
            # should the Close call fail, the metaserver may or may not have released them.
            # The fd stays so that close can be retried (Close is idempotent).
            f.closing, f.tokens = True, RangeMap()
            self._changed.wait_for(lambda: not f.active)  # other threads' operations on it
            self._cache.close(f)
            self._dataplane.settle(f)
            session.call("Close", pb.CloseRequest(file_id=f.file_id, size=f.written_end,
                                                  wrote=f.wrote), f"close {brief(f.name)}")
            del self._fds[fd]
            del self._by_id[f.file_id]

    def delete(self, path: str) -> None:
        """Removes a file (a directory: EISDIR, use rmdir); not while it is open anywhere. A
        file whose close failed here because its bytes could not be stored (a full disk, say)
        is given up: those bytes are dropped, the close completed, and the file deleted."""
        path = canonical(path)
        session = self._live_session()
        with self._lock:
            stuck = [f for f in self._fds.values() if f.closing and f.name == path]
            for f in stuck:
                self._cache.discard(f)
                self._dataplane.discard(f)
                session.call("Close", pb.CloseRequest(file_id=f.file_id),
                             f"close {brief(f.name)}")
                del self._fds[f.fd]
                del self._by_id[f.file_id]
        session.call("Delete", pb.DeleteRequest(path=path), f"delete {brief(path)}")

    def fstat(self, fd: int) -> Metadata:
        """The file's most recent metadata, sizes still in other clients' caches included."""
        session = self._live_session()
        with self._lock:
            f = self._file(fd)
        return self._with_own_size(session.call("Stat", pb.StatRequest(file_id=f.file_id),
                                                f"fstat {brief(f.name)}").meta)

    def stat(self, path: str) -> Metadata:
        """Like fstat, by path, for a file (or directory) this client need not have open."""
        path = canonical(path)
        return self._with_own_size(self._live_session().call(
            "Stat", pb.StatRequest(path=path), f"stat {brief(path)}").meta)

    def _with_own_size(self, meta: pb.FileMeta) -> Metadata:
        """The metadata, with the size this client's own cached writes give the file (the
        metaserver does not ask us about those)."""
        result = _metadata(meta)
        with self._lock:
            f = self._by_id.get(meta.file_id)
            if f is not None and f.size_epoch == meta.size_epoch:
                result.file_size = max(result.file_size, f.size)
        return result

    def listdir(self, path: str = "") -> list[Metadata]:
        """The entries of a directory (default: the root) with their metadata, by name; each
        entry's filename is its whole path."""
        path = canonical(path)
        session, entries, after = self._live_session(), [], ""
        while True:  # a page at a time: a directory may hold millions of entries
            page = session.call("List", pb.ListRequest(path=path, after=after),
                                f"list {brief(path)}")
            entries += [_metadata(m) for m in page.entries]
            if not page.more:
                return entries
            after = page.entries[-1].path.rsplit("/", 1)[-1]

    def execstat(self) -> ExecStat:
        self._live_session()
        with self._lock:
            stats = ExecStat()
            self._cache.stats.copy_into(stats)
            return stats

    # --- data -------------------------------------------------------------------------------
    def read(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """Reads up to num_bytes at offset into buf; the number read: short near the end, 0 at
        the end. An offset past the end is EINVAL, as the course's contract says (not 0)."""
        if self._hit(fd, buf, num_bytes, offset, READ):
            return num_bytes
        f = self._open_file(fd)
        dst = _buffer(buf, _int_arg(num_bytes, "num_bytes"), writable=True)
        _int_arg(offset, "offset")
        with self._holding(f, offset, offset + num_bytes, READ):
            if offset > f.size:
                raise errors.error(errno.EINVAL, f"offset {offset} is beyond the end of "
                                                 f"{f.name!r} ({f.size} bytes)")
            n = min(num_bytes, f.size - offset)
            if n:
                self._cache.read(f, offset, dst[:n], self._cacheable(f, READ))
            return n

    def write(self, fd: int, buf: Any, num_bytes: int, offset: int) -> int:
        """Writes num_bytes of buf at offset (at most at the end: no holes); num_bytes."""
        if self._hit(fd, buf, num_bytes, offset, WRITE):
            return num_bytes
        f = self._open_file(fd)
        if f.mode != PFS_READ_WRITE:
            raise errors.error(errno.EBADF, f"fd {fd} ({brief(f.name)}) was opened PFS_READ")
        src = _buffer(buf, _int_arg(num_bytes, "num_bytes"), writable=False)
        _int_arg(offset, "offset")
        if offset + num_bytes > MAX_FILE_SIZE:
            raise errors.error(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes; this "
                                            f"write would end at {offset + num_bytes}")
        with self._holding(f, offset, offset + num_bytes, WRITE):
            if offset > f.size:
                raise errors.error(errno.EINVAL, f"offset {offset} is beyond the end of "
                                                 f"{f.name!r} ({f.size} bytes); PFS files "
                                                 "have no holes")
            if num_bytes:
                old_size = f.size
                f.size = max(f.size, offset + num_bytes)
                try:
                    self._cache.write(f, offset, src, self._cacheable(f, WRITE), old_size)
                except OSError:
                    f.size = old_size
                    raise
                f.wrote, f.written_end = True, max(f.written_end, offset + num_bytes)
            return num_bytes

    def fsync(self, fd: int) -> None:
        """Returns once every write so far to the file is on the fileservers' disks."""
        session = self._live_session()
        f = self._open_file(fd)
        if f.held.empty() and not f.closing:
            with self._holding(f, 0, 1, READ):  # a token, whose capabilities the calls need
                pass
        self._renew_for_unstored(session, f)
        with self._lock:
            f = self._file(fd)
            self._cache.flush(f)
            self._dataplane.fsync(f)  # once the writes in flight are stored
            session.call("ReportSize", pb.ReportSizeRequest(file_id=f.file_id,
                                                            size=f.written_end),
                         f"fsync {brief(f.name)}")

    def _renew_for_unstored(self, session: MetaSession, f: _OpenFile) -> None:
        """Bytes kept unstored through a long outage may outlive the capabilities they were
        written under: renews those (the tokens are still this client's: a token is never given
        up over unstored bytes, so the grant is immediate)."""
        for start, end in self._dataplane.unstored(f):
            if not f.held.fresh(start, end, WRITE, time.time()):
                era = session.era
                grant = session.acquire(f.file_id, start, end, WRITE)
                with self._lock:
                    if session.era != era:  # the metaserver restarted meanwhile: ask again
                        raise errors.error(errno.EHOSTDOWN, "the metaserver restarted during "
                                                            "a token request; try again")
                    f.held.add(grant.start, grant.end, grant.mode, list(grant.capabilities))
                session.applied(grant.grant_seq)

    def ftruncate(self, fd: int, size: int) -> None:
        """Cuts the file to `size` bytes, or extends it with zeros, under a WRITE token from the
        new end to infinity; cached blocks past the new end are dropped."""
        self._resize(fd, size, cut=True)

    def extend(self, fd: int, size: int) -> None:
        """Extends the file with zeros to `size` bytes if it is shorter, and never cuts it: for
        writers that seek past the end, as Python's files allow (the size is checked under the
        token, so a concurrent extension by another client is never cut back)."""
        self._resize(fd, size, cut=False)

    def _resize(self, fd: int, size: int, cut: bool) -> None:
        f = self._open_file(fd)
        if f.mode != PFS_READ_WRITE:
            raise errors.error(errno.EBADF, f"fd {fd} ({brief(f.name)}) was opened PFS_READ")
        if _int_arg(size, "size") > MAX_FILE_SIZE:
            raise errors.error(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
        while True:  # the token runs from the old end too: an extension zeroes from there
            start = min(size, f.size)
            with self._holding(f, start, INFINITY, WRITE):
                if f.size < start:
                    continue  # shorter than this client knew: from its real end, then
                if not cut and f.size >= size:
                    return
                self._cache.truncate(f, size)
                self._dataplane.truncate(f, size, f.size)
                epoch = self._session.call("Truncate", pb.TruncateRequest(
                    file_id=f.file_id, size=size), f"truncate {brief(f.name)}").size_epoch
                f.size, f.size_epoch, f.wrote = size, epoch, True
                f.written_end = min(f.written_end, size)
                return

    def _hit(self, fd: Any, buf: Any, num_bytes: Any, offset: Any, mode: int) -> bool:
        """The fast path of a read or write the cache can serve at once: tokens held, nothing
        else going on with the file, every block cached (for a write, within one block, and
        not extending the file). False, having done nothing, sends the call the general way
        (which checks and says what is wrong)."""
        f = self._fds.get(fd) if type(fd) is int else None
        session = self._session
        if (f is None or session is None or type(num_bytes) is not int or type(offset) is not int
                or num_bytes <= 0 or offset < 0):
            return False
        end = offset + num_bytes
        with self._lock:
            if (f.closing or f.active or f.revoking or end > f.size or self._fds.get(fd) is not f
                    or (mode == WRITE and f.mode != PFS_READ_WRITE)
                    or not session.lease_valid() or not f.tokens.covers(offset, end, mode)
                    or not self._cache.hit(f, offset, num_bytes, buf, self._cacheable(f, mode),
                                           writing=mode == WRITE)):
                return False
            if mode == WRITE:
                f.wrote, f.written_end = True, max(f.written_end, end)
            return session.lease_valid()  # else the general way fails it, lease run out

    # --- tokens -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _holding(self, f: _OpenFile, start: int, end: int, mode: int) -> Iterator[None]:
        """Runs the body under the client lock and a token covering [start, end) (up to
        infinity when the range may pass the known end of the file), once no other operation
        of this client on overlapping bytes of the file runs (the body's fileserver I/O runs
        with the lock released, so operations on other bytes run meanwhile)."""
        self._lock.acquire()
        try:
            while True:
                session = self._live_session()
                if self._fds.get(f.fd) is not f or f.closing:
                    raise errors.error(errno.EBADF, f"fd {f.fd} was closed")
                if f.refused:
                    raise _refused(f)
                token_end = end if start < end <= f.size else INFINITY
                if any(s < token_end and start < e for s, e in f.active):
                    self._changed.wait()
                    continue
                if (f.tokens.covers(start, token_end, mode)
                        and f.held.fresh(start, token_end, mode, time.time())
                        and not self._revoking(f, start, token_end)):
                    break
                era = session.era
                try:
                    self._lock.release()
                    try:
                        grant = session.acquire(f.file_id, start, token_end, mode)
                    finally:
                        self._lock.acquire()
                except OSError:
                    if self._fds.get(f.fd) is not f:  # closed by another thread meanwhile
                        raise errors.error(errno.EBADF, f"fd {f.fd} was closed") from None
                    if session.recovering and not session.lost:
                        continue  # the metaserver went away: ask again once it is back
                    raise
                if session.era != era:
                    continue  # granted by the metaserver of before its restart: void
                if self._by_id.get(f.file_id) is f:
                    f.tokens.raise_to(grant.start, grant.end, grant.mode)
                    f.held.add(grant.start, grant.end, grant.mode, list(grant.capabilities))
                    f.stale = set(grant.stale)
                    if grant.size_epoch != f.size_epoch:  # truncated since: the size may shrink
                        f.size, f.size_epoch = grant.size, grant.size_epoch
                    else:
                        f.size = max(f.size, grant.size)
                session.applied(grant.grant_seq)
            span = (start, token_end)
            f.active.append(span)
            try:
                yield
            finally:
                f.active.remove(span)
                self._changed.notify_all()
            if not session.lease_valid():  # finished too late to be sure of its tokens
                self._alive(session)
        finally:
            self._lock.release()

    def _cacheable(self, f: _OpenFile, mode: int) -> Callable[[int, int], bool]:
        """Whether a block may be cached for an operation of `mode`: for a read, READ tokens
        cover it; for a write, WRITE tokens cover all of it (a block written back is written
        whole, and the fileservers take only bytes this client may write); and no revocation
        touches it."""
        return lambda start, end: (f.tokens.covers(start, end, mode)
                                   and not self._revoking(f, start, end))

    def _revoking(self, f: _OpenFile, start: int, end: int) -> bool:
        with self._marks:
            return any(s < end and start < e for s, e in f.revoking)

    def _mark_revoking(self, revoke: pb.Revoke) -> None:
        """On the stream thread, at once: operations starting now must not use this range."""
        with self._marks:
            f = self._by_id.get(revoke.file_id)
            if f is not None:
                f.revoking.append((revoke.start, revoke.end))

    def _revoke(self, revoke: pb.Revoke) -> int | None:
        """Gives up a token range once the operations running on it are done and every byte
        written in it is stored; returns the known size. A write-back that fails is tried again
        until it succeeds or the session is lost (the metaserver evicts a holder that takes
        too long): a token is never given up over unstored bytes. Giving up the tail of the
        file (a range to infinity) first stores every write to the file, so that the size this
        acknowledgement reports is stored all the way. A session whose lease ran out waits for
        the metaserver's word first; one that is lost, or recovering from a broken stream (the
        metaserver that asked is gone: a restarted one forgot the revocation), gives up nothing
        and does not acknowledge (None): its bytes and tokens stay as they are."""
        with self._lock:
            f = self._by_id.get(revoke.file_id)
            if f is None:
                return 0
            try:
                return self._give_up_range(f, revoke)
            finally:
                with self._marks:
                    # Absent when the file was reopened after the revocation arrived (it was
                    # meant for the earlier open; giving up the range again is merely cautious).
                    if (revoke.start, revoke.end) in f.revoking:
                        f.revoking.remove((revoke.start, revoke.end))

    def _give_up_range(self, f: _OpenFile, revoke: pb.Revoke) -> int | None:
        session = self._session
        if session is None or not self._still_counted(session):
            return None
        B = f.block_size
        tail = revoke.end == INFINITY
        lo = 0 if tail else revoke.start // B * B
        hi = min(-(-revoke.end // B) * B, INFINITY)
        self._changed.wait_for(lambda: not any(s < hi and lo < e for s, e in f.active))
        pause = 0.05
        while True:
            try:
                if tail:
                    self._cache.flush(f)
                self._cache.revoke(f, revoke.start, revoke.end, drop=revoke.to_mode != READ)
                self._dataplane.settle(f, lo, hi)  # stored before it is given up
                break
            except OSError as e:
                if not self._still_counted(session):
                    return None
                log.warning("cannot give up [%d, %d) of %r yet: %s", revoke.start,
                            revoke.end, f.name, e)
                self._changed.wait(pause)  # (operations elsewhere may go on meanwhile)
                pause = min(2 * pause, 1.0)
        f.tokens.cap(revoke.start, revoke.end, revoke.to_mode)
        if revoke.to_mode != READ and revoke.end == INFINITY:
            # The tail is someone else's now (they may even cut it): what we wrote beyond
            # its start was written back and reported with this acknowledgement.
            f.written_end = min(f.written_end, revoke.start)
        return f.size

    def _still_counted(self, session: MetaSession) -> bool:
        """Whether the metaserver surely still counts the session; while its lease has run
        out with its stream up, waits (the lock released) for the metaserver's word."""
        session.check_lease()
        while session.silent and self._session is session:
            self._changed.wait(0.5)
        return session.lease_valid()

    def _reclaim(self) -> None:
        """On the session's lane, once it rejoined a restarted metaserver: claims every open
        file with the size this client knows (its unstored writes included) and the tokens it
        holds; takes back their capabilities, size, truncate count and stale copies. A file
        refused (deleted, or its tokens reclaimed first by another client) has its cached and
        unstored writes dropped, as the session's would be if it were lost."""
        with self._lock:
            session = self._session
            if session is None or not session.recovering or session.lost:
                return
            reply = session.reclaim([
                pb.FileClaim(file_id=f.file_id, size=f.size, tokens=[
                    pb.TokenClaim(start=start, end=end, mode=mode)
                    for start, end, mode in f.tokens])
                for f in self._by_id.values()])
            if reply is None:
                return
            for answer in reply.files:
                f = self._by_id.get(answer.file_id)
                if f is None:
                    continue
                if answer.refused:
                    self._give_up_file(f, answer.refused)
                    continue
                for token in answer.tokens:
                    f.held.add(token.start, token.end, token.mode, list(token.capabilities))
                f.size, f.size_epoch, f.stale = answer.size, answer.size_epoch, set(answer.stale)
            self._changed.notify_all()

    def _give_up_file(self, f: _OpenFile, reason: str) -> None:
        """The metaserver did not give the open file back after its restart (the lock held)."""
        blocks = self._cache.discard(f)
        unstored = self._dataplane.discard(f)
        f.tokens, f.held = RangeMap(), Held()
        lost = (f"{blocks} cached block(s) and {unstored} bytes sent to the fileservers, "
                "written since the last close or fsync, were dropped; ") \
            if blocks or unstored else "nothing unstored was lost; "
        f.refused = (f"{brief(f.name)} was open here when the metaserver restarted, and it did "
                     f"not give it back: {reason}. {lost}close the fd and open the file again")
        log.warning("client %d: %s", self._session.client_id, f.refused)

    def _known_size(self, file_id: int) -> int:
        f = self._by_id.get(file_id)
        return f.size if f is not None else 0

    # --- fds --------------------------------------------------------------------------------
    def _file(self, fd: Any) -> _OpenFile:
        """The open file of fd; the caller holds the lock."""
        f = self._fds.get(fd) if type(fd) is int else None
        if f is None:
            raise errors.error(errno.EBADF, f"bad file descriptor {fd!r}")
        if f.refused:
            raise _refused(f)
        return f

    def _open_file(self, fd: Any) -> _OpenFile:
        self._live_session()
        with self._lock:
            return self._file(fd)

    # --- the C-like API ---------------------------------------------------------------------
    pfs_initialize = _c_like(initialize)
    pfs_create = _c_like(create)
    pfs_open = _c_like(open)
    pfs_read = _c_like(read)
    pfs_write = _c_like(write)
    pfs_close = _c_like(close)
    pfs_delete = _c_like(delete)
    pfs_mkdir = _c_like(mkdir)
    pfs_rmdir = _c_like(rmdir)
    pfs_rename = _c_like(rename)
    pfs_ftruncate = _c_like(ftruncate)
    pfs_fsync = _c_like(fsync)
    pfs_finish = _c_like(finish)

    @_c_like
    def pfs_fstat(self, fd: int, meta: Metadata) -> None:
        """Fills meta (a pfs.Metadata) with the file's most recent metadata."""
        self.fstat(fd).copy_into(meta)

    @_c_like
    def pfs_execstat(self, stats: ExecStat) -> None:
        """Fills stats (a pfs.ExecStat) with this client's cache counters."""
        self.execstat().copy_into(stats)
