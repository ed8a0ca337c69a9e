"""Session lifecycle and exit: a Client's session starts at `initialize`, ends at `finish`, and is
taken back from a restarted metaserver by `reclaim`. At exit: files close, then Clients finish.

A program that exits without pfs_finish keeps what it wrote, as with POSIX files: first the
Pythonic layer's files left open are closed (`close_first_at_exit`: pfs.fileio registers them),
then every Client with a session is finished (its open files written back). Both must run before
the interpreter's final teardown, when gRPC can no longer start the threads it needs: one atexit
hook here runs them in that order, whatever order the modules were imported in.
"""
from __future__ import annotations

import atexit
import errno
import logging
import weakref
from typing import Callable

from pfs._proto import metaserver_pb2 as pb
from pfs.datapath.blockcache import BlockCache
from pfs.datapath.striped import DataPlane
from pfs.metadata import (
    DEFAULT_CACHE_BLOCKS,
    DEFAULT_LOCK_CACHE_FILES,
    DEFAULT_RETRY_SECONDS,
    ClusterLayout,
)
from pfs.protocol.capability import Held
from pfs.protocol.errnos import error
from pfs.protocol.paths import brief
from pfs.protocol.ranges import RangeMap
from pfs.protocol.transport import Credentials

from .args import setting
from .lockcache import LockCache
from .openfiles import OpenFile, OpenFiles, learn_stale
from .session import MetaSession
from .state import NOTHING_LOST, ClientState
from .tokens import Tokens

log = logging.getLogger("pfs.client")

#: Bytes of writes a client keeps in flight to the fileservers at most (write-behind).
WRITE_BEHIND_BYTES = 64 << 20

#: Sessions (their Lifecycles) to finish at exit.
_live: "weakref.WeakSet[Lifecycle]" = weakref.WeakSet()
#: What closes before them (the Pythonic layer's open files).
_close_first: list[Callable[[], None]] = []


def close_first_at_exit(close: Callable[[], None]) -> Callable[[], None]:
    """Has `close` run at exit before any Client finishes (it handles its own failures)."""
    _close_first.append(close)
    return close


@atexit.register
def _at_exit() -> None:
    """Files close, then Clients finish."""
    for close in _close_first:
        close()
    for life in list(_live):
        life.finish_at_exit()


def _addresses(fileservers) -> dict[int, str]:
    return {s.index: s.address for s in fileservers}


def _online(fileservers) -> tuple[dict[int, str], dict[int, float]]:
    """The addresses of the fileservers online, and how long each other one has been
    offline as the metaserver knows it."""
    return ({s.index: s.address for s in fileservers if s.online},
            {s.index: s.offline_seconds for s in fileservers if not s.online})


class Lifecycle:
    def __init__(self, state: ClientState, tokens: Tokens, files: OpenFiles) -> None:
        self._s, self._tokens, self._files = state, tokens, files

    def initialize(self) -> int:
        s = self._s
        with s.lock:
            if s.session is not None and not s.session.lost:
                return s.session.client_id
            cache_blocks, retry_seconds, kept_files = self._settings()
            if s.session is not None:  # a lost one: let go of its stream and channels
                s.session.close()
                s.dataplane.close()
                s.cache.stop()
            session = MetaSession(s.metaserver, s.credentials, on_revoke=self._tokens.revoke,
                                  on_revoke_received=self._tokens.mark_revoking,
                                  size_of=self._files.known_size, on_lost=s.lost,
                                  on_rejoined=self.reclaim, retry_seconds=retry_seconds)
            reply = session.start()
            s.dataplane = self._dataplane(session, reply, retry_seconds)
            s.cache = BlockCache(cache_blocks, reply.block_size, s.dataplane, s.changed)
            session.watch_lease(s.cache.lease)
            s.fds.clear()
            s.by_id.clear()
            s.lockcache = LockCache(kept_files)
            s.loss = None
            s.retry_seconds = retry_seconds
            s.session = session
            _live.add(self)
            log.info("client %d connected to %s", session.client_id, s.metaserver)
            return session.client_id

    def _settings(self) -> tuple[int, float, int]:
        """(cache blocks, retry seconds, lock cache files) from the Client or the environment;
        makes the credentials (EINVAL for a bad setting)."""
        s = self._s
        cache_blocks = s.cache_blocks
        if cache_blocks is None:
            cache_blocks = setting("PFS_CACHE_BLOCKS", int, DEFAULT_CACHE_BLOCKS)
        if cache_blocks < 0:
            raise error(errno.EINVAL, "PFS_CACHE_BLOCKS must not be negative")
        retry_seconds = setting("PFS_RETRY_SECONDS", float, DEFAULT_RETRY_SECONDS)
        kept_files = setting("PFS_LOCK_CACHE_FILES", int, DEFAULT_LOCK_CACHE_FILES)
        if kept_files < 0:
            raise error(errno.EINVAL, "PFS_LOCK_CACHE_FILES must not be negative")
        if s.credentials is None:
            try:
                s.credentials = Credentials()
            except ValueError as e:
                raise error(errno.EINVAL, str(e)) from None
        return cache_blocks, retry_seconds, kept_files

    def _dataplane(self, session: MetaSession, reply: pb.RegisterReply,
                   retry_seconds: float) -> DataPlane:
        return DataPlane(_addresses(reply.fileservers),
                         {s.index: s.name for s in reply.fileservers}, self._s.credentials,
                         retry_seconds,
                         lookup=lambda: _online(session.call(
                             "Status", pb.StatusRequest(), "look up fileservers"
                         ).fileservers),
                         on_fenced=session.ended,
                         on_missed=lambda f, server, start, end, why: learn_stale(
                             f, session.call("ReportMissed", pb.ReportMissedRequest(
                                 file_id=f.file_id, server=server, start=start,
                                 end=end, why=why), "record a stale copy")),
                         write_behind=WRITE_BEHIND_BYTES)

    def finish(self, client_id: int) -> None:
        s = self._s
        session = s.live_session()
        if client_id != session.client_id:
            raise error(errno.EINVAL, f"unknown client id {client_id} (this client is "
                                      f"{session.client_id})")
        failure = None
        for fd in list(s.fds):
            try:
                self._files.close(fd)
            except OSError as e:  # EBADF: another thread closed it meanwhile
                if e.errno != errno.EBADF:
                    failure = failure or e
        if failure is not None:
            s.lost("pfs_finish ended it")
            failure = error(failure.errno, f"finish: {failure.strerror}. The session "
                                           f"has ended: {s.loss}")
        session.finish()
        with s.lock:
            s.lockcache.clear()  # (released with the session)
            s.dataplane.close()
            s.cache.stop()
            s.session = None
        if failure:
            raise failure

    def finish_at_exit(self) -> None:
        """The program exits: finishes the session, or, if the metaserver is unreachable,
        gives it up saying what that loses."""
        s = self._s
        session = s.session
        if session is not None and session.recovering:
            s.lost(f"the process exited while the metaserver was unreachable "
                   f"({session.recovering})")
            (log.info if s.loss == NOTHING_LOST else log.warning)(
                "client %d exits without its metaserver: %s", session.client_id, s.loss)
        elif session is not None and not session.lost:
            try:
                self.finish(session.client_id)
            except OSError as e:
                log.warning("could not finish client %d at exit: %s", session.client_id, e)

    def fileservers(self) -> dict[int, str]:
        return _addresses(self._s.live_session().reply.fileservers)

    def layout(self) -> ClusterLayout:
        reply = self._s.live_session().reply
        return ClusterLayout(sum(1 for s in reply.fileservers if s.online), reply.block_size,
                             reply.stripe_blocks, reply.replicas or 1, len(reply.fileservers))

    def reclaim(self) -> None:
        """On the session's lane, once it rejoined a restarted metaserver: claims every open
        file with the size this client knows (its unstored writes included) and the tokens it
        holds; takes back their capabilities, size, truncate count and stale copies. A file
        refused (deleted, or its tokens reclaimed first by another client) has its cached and
        unstored writes dropped, as the session's would be if it were lost."""
        s = self._s
        with s.lock:
            session = s.session
            if session is None or not session.recovering or session.lost:
                return
            claims = [pb.FileClaim(file_id=f.file_id, size=f.size, tokens=[
                pb.TokenClaim(start=start, end=end, mode=mode) for start, end, mode in f.tokens])
                for f in s.by_id.values()]
        # Without the lock: calls wait for the session meanwhile, so nothing else changes the
        # files, and a close that waits for the restarted metaserver cannot hold the reclaim up.
        session.reclaim(claims, self._reclaimed)
        with s.lock:
            s.changed.notify_all()  # (calls waiting for the session to be back)

    def _reclaimed(self, reply: pb.ReclaimReply) -> None:
        """Takes in what the restarted metaserver gave back, before the session is back."""
        s = self._s
        with s.lock:
            s.lockcache.clear()  # the restarted metaserver never knew them
            for answer in reply.files:
                f = s.by_id.get(answer.file_id)
                if f is None:
                    continue
                if answer.refused:
                    self._give_up_file(f, answer.refused)
                    continue
                for token in answer.tokens:
                    f.held.add(token.start, token.end, token.mode, list(token.capabilities))
                f.size, f.size_epoch = answer.size, answer.size_epoch
                learn_stale(f, answer)

    def _give_up_file(self, f: OpenFile, reason: str) -> None:
        """The metaserver did not give the open file back after its restart (the lock held)."""
        blocks = self._s.cache.discard(f)
        unstored = self._s.dataplane.discard(f)
        f.tokens, f.held = RangeMap(), Held()
        lost = (f"{blocks} cached block(s) and {unstored} bytes sent to the fileservers, "
                "written since the last close or fsync, were dropped; ") \
            if blocks or unstored else "nothing unstored was lost; "
        f.refused = (f"{brief(f.name)} was open here when the metaserver restarted, and it did "
                     f"not give it back: {reason}. {lost}close the fd and open the file again")
        log.warning("client %d: %s", self._s.session.client_id, f.refused)
