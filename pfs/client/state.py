"""What one Client holds (its session, cache, data plane and open files), all under one lock,
and whether its session may still be used: a lost session is final, and its cache and unstored
writes are dropped, never written back.

Everything here is changed under `lock` (reentrant: a session found lost while an operation holds
it is given up at once), except OpenFile.revoking, which the stream thread marks under `marks`
without waiting for the Client. A lost session is final: its cache and unstored writes are dropped,
never written back (the fileservers would refuse them anyway), and every later call fails with
ENOTCONN saying what the loss took (`loss`, said once).
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import threading
import time
from typing import TYPE_CHECKING, Iterator

from pfs.datapath.blockcache import BlockCache
from pfs.datapath.striped import DataPlane
from pfs.metadata import DEFAULT_RETRY_SECONDS
from pfs.protocol.errnos import error
from pfs.protocol.paths import brief
from pfs.protocol.ranges import RangeMap
from pfs.protocol.transport import Credentials

from .lockcache import LockCache
from .session import MetaSession

if TYPE_CHECKING:
    from .openfiles import OpenFile

#: What a lost session's calls say when it held nothing unstored.
NOTHING_LOST = "No unwritten data was lost. "


class ClientState:
    def __init__(self, metaserver: str, cache_blocks: int | None,
                 credentials: Credentials | None) -> None:
        self.metaserver = metaserver
        self.cache_blocks = cache_blocks  # None: PFS_CACHE_BLOCKS, read at initialize
        self.credentials = credentials  # made at initialize: PFS_SECRET may be wrong
        # Fileserver I/O runs with `lock` released (the cache releases it), so threads of one
        # client work in parallel on different files and ranges; `changed` wakes waiters.
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.marks = threading.Lock()  # guards OpenFile.revoking; the stream thread takes it
        self.session: MetaSession | None = None
        self.dataplane: DataPlane | None = None
        self.cache: BlockCache | None = None
        self.fds: dict[int, OpenFile] = {}
        self.by_id: dict[int, OpenFile] = {}
        self.lockcache = LockCache(0)  # tokens of closed files (made at initialize)
        self.next_fd = itertools.count(1)
        self.loss: str | None = None  # what a lost session took with it
        self.retry_seconds = DEFAULT_RETRY_SECONDS

    @contextlib.contextmanager
    def unlocked(self) -> Iterator[None]:
        """Releases the lock (held once) around a call that may wait for a restarting
        metaserver or an unreachable fileserver: a reclaim and revocations need it meanwhile,
        so no metaserver call and no wait for writes in flight is made holding it. The caller
        keeps other operations off what it works on (the fd closing, its `active` span, the
        range revoking)."""
        self.lock.release()
        try:
            yield
        finally:
            self.lock.acquire()

    def forget(self, f: "OpenFile") -> None:
        """The fd is closed (once: two threads may close it at the same time); the lock held."""
        if self.cache is not None:
            self.cache.deny(f)
        if self.fds.get(f.fd) is f:
            del self.fds[f.fd]
        if self.by_id.get(f.file_id) is f:
            del self.by_id[f.file_id]

    def live_session(self) -> MetaSession:
        session = self.session
        if session is None:
            raise error(errno.ENOTCONN, "not initialized: call pfs_initialize() first")
        return self.alive(session)

    def alive(self, session: MetaSession) -> MetaSession:
        """The session, if it still holds; else ENOTCONN saying what its loss took. While it
        recovers, waits (the lock released) up to PFS_RETRY_SECONDS, then EHOSTDOWN."""
        session.check_lease()
        if session.recovering:
            with self.lock:
                deadline = time.monotonic() + self.retry_seconds
                while session.recovering and not session.lost:
                    if time.monotonic() >= deadline:
                        raise session.unreachable()
                    self.changed.wait(min(0.5, deadline - time.monotonic()))
                    session.check_lease()
        if session.lost:
            what = ""
            if session is self.session:  # (not one replaced by a new pfs_initialize meanwhile)
                self.lost(session.lost)  # done already, or waits until it is: the loss is known
                what = self.loss
            raise error(errno.ENOTCONN, f"the session with the metaserver was lost: "
                                        f"{session.lost}. {what}Call "
                                        "pfs_initialize() to start a new session.")
        return session

    def lost(self, reason: str) -> None:
        """The session is gone, and its tokens with it: nothing cached or held may be used or
        written back any more. Says what was lost (once: later calls find it done)."""
        with self.lock:
            if self.loss is not None:
                return
            for f in self.fds.values():
                f.tokens = RangeMap()
            self.lockcache.clear()
            blocks = self.cache.drop_all() if self.cache is not None else {}
            held = self.dataplane.drop_all(error(
                errno.ENOTCONN, f"the session with the metaserver was lost: {reason}")) \
                if self.dataplane is not None else {}
            names = [self.by_id[i].name for i in {**blocks, **held} if i in self.by_id]
            if blocks or held:
                what = " and ".join(
                    ([f"{sum(blocks.values())} cached block(s)"] if blocks else [])
                    + ([f"{sum(held.values())} bytes sent to the fileservers"] if held else []))
                self.loss = (f"{what} written to {', '.join(brief(n) for n in names[:5])}"
                             f"{' and more' if len(names) > 5 else ''} since the last close or "
                             "fsync were never stored and are lost; everything closed or "
                             "fsynced before is safe. ")
            else:
                self.loss = NOTHING_LOST
            self.changed.notify_all()  # (operations waiting for a recovery)
