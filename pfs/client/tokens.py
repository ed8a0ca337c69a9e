"""Token holding and revocation: every operation runs inside `holding` for its whole range, and a
token is never given up over unstored bytes.

An operation takes its tokens before it starts and waits for none while holding the client lock
or another token, so clients cannot deadlock; a revocation (which takes the same lock) waits only
for operations already running on its bytes.

How a revocation is answered, hop by hop (this is the one place that says it):
1. The stream's reader (stream.py) gets a Revoke for this session and hands it to
   `MetaSession.received` (session.py) on that thread, which calls `mark_revoking` at once: no
   operation starting from now may use the range (it asks the metaserver again instead).
2. The session holds the revocation until every grant numbered up to its `granted_upto` has
   been applied here (`MetaSession.applied`), so a revocation never overtakes its grant; then it
   queues it on the session's lane of the process's revocation threads (runtime/callqueues.py).
3. On that thread, `revoke` waits for the client lock and for the operations running on the
   range, then writes back and drops (or downgrades) the range's cached blocks
   (datapath/blockcache.py `revoke`), and waits, the lock released, until every write to it is
   stored (datapath/striped.py `settle`, datapath/writebehind.py `wait_for`). A write-back that fails
   is tried again until it succeeds or the session is lost; the metaserver evicts a holder that
   takes too long.
4. The token table is capped, and `revoke` returns the size this client knows; the session sends
   the RevokeAck with it on the stream the revocation came on (`MetaSession._revoke`). A session
   that is lost, or whose stream broke (the metaserver that asked is gone), acknowledges nothing.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import time
from typing import Callable, Iterator

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol.errnos import error
from pfs.protocol.ranges import INFINITY
from pfs.protocol.tokenmodes import READ, WRITE

from .openfiles import OpenFile, learn_stale, refused
from .session import MetaSession
from .state import ClientState

log = logging.getLogger("pfs.client")


class Tokens:
    def __init__(self, state: ClientState) -> None:
        self._s = state

    @contextlib.contextmanager
    def holding(self, f: OpenFile, start: int, end: int, mode: int) -> Iterator[None]:
        """Runs the body under the client lock and a token covering [start, end) (up to
        infinity when the range may pass the known end of the file), once no other operation
        of this client on overlapping bytes of the file runs (the body's fileserver I/O runs
        with the lock released, so operations on other bytes run meanwhile)."""
        st = self._s
        st.lock.acquire()
        try:
            while True:
                session = st.live_session()
                if st.fds.get(f.fd) is not f or f.closing:
                    raise error(errno.EBADF, f"fd {f.fd} was closed")
                if f.refused:
                    raise refused(f)
                token_end = end if start < end <= f.size else INFINITY
                if any(s < token_end and start < e for s, e in f.active):
                    st.changed.wait()
                    continue
                if (f.tokens.covers(start, token_end, mode)
                        and f.held.fresh(start, token_end, mode, time.time())
                        and not self.revoking(f, start, token_end)):
                    break
                self._acquire(session, f, start, token_end, mode)
            span = (start, token_end)
            f.active.append(span)
            st.cache.deny(f)  # (the body may change what a fast read would find)
            try:
                yield
            finally:
                f.active.remove(span)
                st.changed.notify_all()
            if not session.lease_valid():  # finished too late to be sure of its tokens
                st.alive(session)
        finally:
            st.lock.release()

    def _acquire(self, session: MetaSession, f: OpenFile, start: int, token_end: int,
                 mode: int) -> None:
        """One token request of `holding` (the lock held, and released while it waits); the
        grant is applied unless the metaserver restarted meanwhile (`holding` looks again)."""
        st = self._s
        era = session.era
        try:
            st.lock.release()
            try:
                grant = session.acquire(f.file_id, start, token_end, mode)
            finally:
                st.lock.acquire()
        except OSError:
            if st.fds.get(f.fd) is not f:  # closed by another thread meanwhile
                raise error(errno.EBADF, f"fd {f.fd} was closed") from None
            if session.recovering and not session.lost:
                return  # the metaserver went away: ask again once it is back
            raise
        self.apply(session, f, grant, era)

    def apply(self, session: MetaSession, f: OpenFile, grant: pb.AcquireReply,
              era: int) -> None:
        """Puts a grant (of an Acquire or an Open, made in `era`) into the file's token table,
        the lock held; void if the metaserver restarted since."""
        st = self._s
        if session.era != era:
            return  # granted by the metaserver of before its restart: void
        if st.by_id.get(f.file_id) is f:
            f.tokens.raise_to(grant.start, grant.end, grant.mode)
            f.held.add(grant.start, grant.end, grant.mode, list(grant.capabilities))
            learn_stale(f, grant)
            if grant.size_epoch != f.size_epoch:  # truncated since: the size may shrink
                f.size, f.size_epoch = grant.size, grant.size_epoch
            else:
                f.size = max(f.size, grant.size)
        session.applied(grant.grant_seq)

    def cacheable(self, f: OpenFile, mode: int) -> Callable[[int, int], bool]:
        """Whether a block may be cached for an operation of `mode`: for a read, READ tokens
        cover it; for a write, WRITE tokens cover all of it (a block written back is written
        whole, and the fileservers take only bytes this client may write); and no revocation
        touches it."""
        return lambda start, end: (f.tokens.covers(start, end, mode)
                                   and not self.revoking(f, start, end))

    def revoking(self, f: OpenFile, start: int, end: int) -> bool:
        with self._s.marks:
            return any(s < end and start < e for s, e in f.revoking)

    def mark_revoking(self, revoke: pb.Revoke) -> None:
        """On the stream thread, at once: operations starting now must not use this range."""
        with self._s.marks:
            f = self._s.by_id.get(revoke.file_id)
            if f is not None:
                f.revoking.append((revoke.start, revoke.end))
                self._s.cache.deny(f, keep_position=False)  # (without the Client's lock)

    def revoke(self, revoke: pb.Revoke) -> int | None:
        """Gives up a token range once the operations running on it are done and every byte
        written in it is stored; returns the known size. A write-back that fails is tried again
        until it succeeds or the session is lost (the metaserver evicts a holder that takes
        too long): a token is never given up over unstored bytes. Giving up the tail of the
        file (a range to infinity) first stores every write to the file, so that the size this
        acknowledgement reports is stored all the way. A session whose lease ran out waits for
        the metaserver's word first; one that is lost, or recovering from a broken stream (the
        metaserver that asked is gone: a restarted one forgot the revocation), gives up nothing
        and does not acknowledge (None): its bytes and tokens stay as they are."""
        with self._s.lock:
            f = self._s.by_id.get(revoke.file_id)
            if f is None:  # closed here: kept unused (lockcache.py), or released already
                self._s.lockcache.revoke(revoke.file_id, revoke.start, revoke.end,
                                         revoke.to_mode)
                return 0
            try:
                return self._give_up_range(f, revoke)
            finally:
                with self._s.marks:
                    # Absent when the file was reopened after the revocation arrived (it was
                    # meant for the earlier open; giving up the range again is merely cautious).
                    if (revoke.start, revoke.end) in f.revoking:
                        f.revoking.remove((revoke.start, revoke.end))

    def _give_up_range(self, f: OpenFile, revoke: pb.Revoke) -> int | None:
        st = self._s
        session = st.session
        if session is None or not self._still_counted(session):
            return None
        B = f.block_size
        tail = revoke.end == INFINITY
        lo = 0 if tail else revoke.start // B * B
        hi = min(-(-revoke.end // B) * B, INFINITY)
        st.changed.wait_for(lambda: not any(s < hi and lo < e for s, e in f.active))
        pause = 0.05
        while True:
            try:
                st.cache.revoke(f, revoke.start, revoke.end, drop=revoke.to_mode != READ)
                with st.unlocked():  # (operations on the range wait: it is revoking)
                    st.dataplane.settle(f, lo, hi)  # stored before it is given up
                break
            except OSError as e:
                if not self._still_counted(session):
                    return None
                log.warning("cannot give up [%d, %d) of %r yet: %s", revoke.start,
                            revoke.end, f.name, e)
                st.changed.wait(pause)  # (operations elsewhere may go on meanwhile)
                pause = min(2 * pause, 1.0)
        f.tokens.cap(revoke.start, revoke.end, revoke.to_mode)
        if revoke.to_mode != WRITE:  # another writer may cut what our receipts show stored
            f.receipts.clear()
        if revoke.to_mode != READ and revoke.end == INFINITY:
            # The tail is someone else's now (they may even cut it): what we wrote beyond
            # its start was written back and reported with this acknowledgement.
            f.written_end = min(f.written_end, revoke.start)
        return f.size

    def _still_counted(self, session: MetaSession) -> bool:
        """Whether the metaserver surely still counts the session; while its lease has run
        out with its stream up, waits (the lock released) for the metaserver's word."""
        session.check_lease()
        while session.silent and self._s.session is session:
            self._s.changed.wait(0.5)
        return session.lease_valid()

    def renew_for_unstored(self, session: MetaSession, f: OpenFile) -> None:
        """Bytes kept unstored through a long outage may outlive the capabilities they were
        written under: renews those (the tokens are still this client's: a token is never given
        up over unstored bytes, so the grant is immediate)."""
        for start, end in self._s.dataplane.unstored(f):
            if not f.held.fresh(start, end, WRITE, time.time()):
                era = session.era
                grant = session.acquire(f.file_id, start, end, WRITE)
                with self._s.lock:
                    if session.era != era:  # the metaserver restarted meanwhile: ask again
                        raise error(errno.EHOSTDOWN, "the metaserver restarted during "
                                                     "a token request; try again")
                    f.held.add(grant.start, grant.end, grant.mode, list(grant.capabilities))
                session.applied(grant.grant_seq)
