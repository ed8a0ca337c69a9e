"""A client's session with the metaserver: registration, the session key, its place on the stream,
revocations and the calls that may grant tokens. A revocation is handed on only once every grant
it follows has been applied (grantorder.py); its lease and recovery are leasing.py's.

Clients listen on no port: revocations, size queries and heartbeat acknowledgements come down
the stream that the process shares among its sessions (pfs/client/stream.py), which this session joins
with its key. Revocations are handled on the session's lane of a shared pool, so the stream
keeps flowing while one waits for an in-flight operation to finish. Every call carries the
session key, so only this session can act for it.

A session whose Client the program dropped without pfs_finish is ended when it is garbage
collected: it leaves the stream, and the metaserver ends it.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import weakref
from typing import Callable

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol import errnos
from pfs.protocol.transport import Credentials, session_metadata
from pfs.runtime import holdings

from . import metacalls
from .grantorder import GrantOrder
from .leasing import BREAK_SECONDS, Leased
from .metacalls import CALL_TIMEOUT
from .stream import Answer, Seat, SessionStream, channel_key, stream_key

log = logging.getLogger("pfs.client")

#: Seconds a token request may wait: far beyond the metaserver's eviction of silent holders.
ACQUIRE_TIMEOUT = 300.0
#: Seconds Register waits for the metaserver to answer.
CONNECT_TIMEOUT = 10.0
#: Failures of a call that may grant a token that the metaserver reports before numbering one.
_REFUSED_BEFORE_GRANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                         grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED}


class MetaSession(Leased):
    """`on_revoke(revoke) -> size` runs on a worker thread and returns the file size this
    client knows (None: it gave nothing up, so it must not acknowledge);
    `on_revoke_received(revoke)` runs at once on the stream's thread and must not
    block; `size_of(file_id) -> size` answers size queries (on that thread: without blocking);
    `on_lost(reason)` is told when the session is given up; `on_rejoined()` runs on a worker
    thread once a recovering session is back on a stream, and reclaims (`reclaim`)."""

    def __init__(self, address: str, credentials: Credentials,
                 on_revoke: Callable[[pb.Revoke], int | None],
                 on_revoke_received: Callable[[pb.Revoke], None],
                 size_of: Callable[[int], int],
                 on_lost: Callable[[str], None],
                 on_rejoined: Callable[[], None], retry_seconds: float) -> None:
        super().__init__(address)
        self.retry_seconds = retry_seconds
        self._credentials = credentials
        self._holdings = holdings.Holdings()
        self.stub = pb_grpc.MetaServerStub(self._holdings.hold(
            channel_key(address, credentials), lambda: credentials.channel(address)))
        self._on_revoke = on_revoke
        self._on_revoke_received = on_revoke_received
        self.size_of = size_of
        self._on_lost = on_lost
        self._on_rejoined = on_rejoined
        self._stream: SessionStream | None = None
        self._seat: Seat | None = None  # its place on the stream (moved on a rejoin)
        self._left: weakref.finalize | None = None
        self._order = GrantOrder()
        self.session_key = b""
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.reply: pb.RegisterReply | None = None

    # --- starting and ending ----------------------------------------------------------------
    def start(self) -> pb.RegisterReply:
        asked = time.monotonic()
        try:
            self.reply = self.stub.Register(
                pb.RegisterRequest(hostname=socket.gethostname(), pid=os.getpid()),
                timeout=CONNECT_TIMEOUT)
        except grpc.RpcError as e:
            self._holdings.release_all()
            raise errnos.from_rpc(e, f"cannot start a session with the metaserver at "
                                     f"{self.address}") from None
        self.client_id, self.session_key = self.reply.client_id, self.reply.session_key
        self.metadata = session_metadata(self.client_id, self.reply.session_key)
        self.leased(asked, self.reply.lease_seconds)
        self.heartbeat_seconds = self.reply.lease_seconds / 4
        self._stream = self._holdings.hold(stream_key(self.address, self._credentials),
                                           lambda: SessionStream(self.address,
                                                                 self._credentials))
        try:
            self._seat = self._stream.join(self, CONNECT_TIMEOUT)
        except OSError:
            self._finishing = True
            self._holdings.release_all()
            raise
        self._left = weakref.finalize(self, _dropped, self._seat, self._holdings)
        self._left.atexit = False  # at exit, Clients are finished instead (pfs/client/)
        return self.reply

    def finish(self) -> None:
        """Ends the session at the metaserver (it releases every token) and leaves the stream."""
        self._finishing = True
        try:
            self.stub.Finish(pb.FinishRequest(), timeout=CALL_TIMEOUT, metadata=self.metadata)
        except grpc.RpcError as e:
            log.info("finish: %s", e.details())
        self.close()

    def close(self) -> None:
        """Leaves the stream (the metaserver ends the session if it has not) and lets go of the
        shared channel and stream."""
        self._finishing = True
        if self._left is not None:
            self._left.detach()
        if self._seat is not None:
            self._seat.leave()
        self._holdings.release_all()

    # --- a rejoined stream ------------------------------------------------------------------
    def rejoined(self, seat: Seat) -> None:
        """On the stream's thread: the metaserver took the session back onto the stream, at
        `seat`; the Client reclaims on the session's lane."""
        self._seat.moved_to(seat)
        if self.lost or self._finishing:  # given up meanwhile (`_give_up` may have left the
            seat.leave()  # stream of before): leave this one
            return
        self._stream.submit(self.client_id, self._on_rejoined)

    def reclaim(self, files: list[pb.FileClaim],
                apply: Callable[[pb.ReclaimReply], None]) -> None:
        """Reclaims the open files and tokens from a restarted metaserver; `apply` takes its
        answer in before the session is back, so that no call sees the session back with the
        state of before. Nothing happens when the metaserver went away again (the stream
        rejoins it once more); a refusal loses the session."""
        sent = time.monotonic()
        try:
            reply = self.stub.Reclaim(pb.ReclaimRequest(files=files), timeout=CALL_TIMEOUT,
                                      metadata=self.metadata)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.info("client %d could not reclaim yet: %s", self.client_id, e.details())
                return
            self.lose(f"the metaserver restarted and did not take the session back: "
                      f"{e.details()}")
            return
        apply(reply)
        self._order.restart()  # (revocations held here came on the stream of before)
        self.reclaimed(sent)
        log.warning("client %d is back after %.1fs without the metaserver: %d open file(s) "
                    "reclaimed, %d refused", self.client_id, time.monotonic() - self._outage,
                    sum(1 for f in reply.files if not f.refused),
                    sum(1 for f in reply.files if f.refused))

    # --- from the stream --------------------------------------------------------------------
    def received(self, revoke: pb.Revoke, answer: Answer) -> None:
        """On the stream's thread: a revocation, handled once the grants it follows are, and
        answered with `answer`, on the stream it came on (a restarted metaserver, on another,
        forgot it, and may give its number to another revocation)."""
        self._on_revoke_received(revoke)
        if not self.lost and self._order.admit(revoke, answer):
            self._stream.submit(self.client_id, self._revoke, revoke, answer)

    def lose_soon(self, reason: str) -> None:
        """On the stream's thread, which must not wait for the Client: as `ended`, but for a
        session that is finishing (whose end is then no loss)."""
        if not self._finishing:
            self.ended(reason)

    def ended(self, reason: str) -> None:
        """The metaserver ended the session (a fileserver refused it as fenced): it is given
        up at once (no call relies on it from now on), and the Client told on the session's
        lane. The thread telling must not wait for the Client: a revocation may hold the
        Client while it waits for that very thread's write."""
        if self.lost:
            return
        self._give_up(reason)
        if not self._finishing:  # (a finish drops everything itself)
            self._stream.submit(self.client_id, self._on_lost, reason)

    def lose(self, reason: str) -> None:
        """Gives the session up: no more tokens, no more data calls; the session leaves the
        stream, and the metaserver ends it."""
        if self.lost:
            return
        self._give_up(reason)
        self._on_lost(reason)

    def _give_up(self, reason: str) -> None:
        with self._grants:
            self.lost = reason
            self._tell_lease()
        log.warning("client %d lost its session: %s", self.client_id, reason)
        if self._seat is not None:
            self._seat.leave()
        self._order.restart()
        with self._grants:
            self._grants.notify_all()

    def _revoke(self, revoke: pb.Revoke, answer: Answer) -> None:
        try:
            size = self._on_revoke(revoke)
        except Exception:  # noqa: BLE001 - a failed handler must not kill the worker silently
            log.exception("handling revocation %d failed", revoke.revoke_id)
            return
        if size is not None:
            answer(size)

    # --- tokens -----------------------------------------------------------------------------
    def acquire(self, file_id: int, start: int, end: int, mode: int) -> pb.AcquireReply:
        """Asks for a token; waits while the metaserver revokes it from its holders."""
        try:
            return self.stub.Acquire(pb.AcquireRequest(
                file_id=file_id, start=start, end=end, mode=mode),
                timeout=ACQUIRE_TIMEOUT, metadata=self.metadata)
        except grpc.RpcError as e:
            self.unanswered_grant(e, "a token request")
            raise errnos.from_rpc(e, "token request") from None

    def unanswered_grant(self, e: grpc.RpcError, what: str) -> None:
        """A call that may have granted a token failed: unless the metaserver surely numbered
        no grant, a grant this client never applies would hold up every later revocation, so
        the session is given up, its tokens with it. (Unless the metaserver went away: its
        stream broke too, and the session survives only by reclaiming from a restarted
        metaserver, which forgot it.)"""
        if e.code() not in _REFUSED_BEFORE_GRANT and not (
                e.code() == grpc.StatusCode.UNAVAILABLE and self._broke(BREAK_SECONDS)):
            self.lose(f"{what} ended without an answer ({e.code().name})")

    def applied(self, grant_seq: int) -> None:
        """Records that the grant numbered `grant_seq` is in the client's token table, and
        hands on the revocations that waited for it."""
        for revoke, answer in self._order.applied(grant_seq):
            self._stream.submit(self.client_id, self._revoke, revoke, answer)

    def call(self, method: str, request, what: str):
        """A unary metaserver call for this session (metacalls.py)."""
        return metacalls.call(self, method, request, what)

    def open(self, path: str, mode: int, what: str) -> tuple[pb.OpenReply, int]:
        """Opens a file, asking for the token `mode` with it: (the reply, the era its grant
        comes from, for `Tokens.apply`)."""
        return metacalls.call_in_era(self, "Open", pb.OpenRequest(path=path, mode=mode), what,
                                     may_grant=True)


def _dropped(seat: Seat, holdings: holdings.Holdings) -> None:
    """The session's Client was garbage-collected without finishing: leave the stream (the
    metaserver ends the session) and let go of what it held. Runs in a finalizer, so it only
    queues."""
    seat.leave(finalizing=True)
    holdings.release_later()
