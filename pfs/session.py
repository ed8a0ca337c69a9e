"""A client's session with the metaserver: registration, the session key, the revocation
stream and the lease.

The client opens one bidirectional stream (clients listen on no port). Down it come revocations,
size queries and heartbeat acknowledgements; up go acknowledgements, size answers and heartbeats.
Revocations are handled on worker threads so the stream keeps flowing while one waits for an
in-flight operation to finish.

The lease: the metaserver ends a session it has not heard from for `lease_seconds`. A heartbeat
it acknowledges was received after it was sent, so the session lives at least until that send
time plus the lease; past that (`lease_valid()` false) the client must assume its tokens are
gone and serve nothing from its cache. Every call carries the session key, so only this
session can act for it.

Grants travel in Acquire replies, revocations on the stream, so a revocation could overtake the
grant it takes back. Each grant has a number; a revocation says the highest number granted
before it, and is handled only once every grant up to that number has been applied.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc

from . import errors
from .heartbeats import END, Heartbeats, messages_for
from .transport import Credentials, session_metadata

log = logging.getLogger("pfs.client")

#: Seconds a metaserver call other than Acquire may take.
CALL_TIMEOUT = 30.0
#: Seconds a token request may wait: far beyond the metaserver's eviction of silent holders.
ACQUIRE_TIMEOUT = 300.0
#: Seconds Register waits for the metaserver to answer.
CONNECT_TIMEOUT = 10.0
#: Part of the lease the client gives up as a safety margin.
LEASE_MARGIN = 0.05
#: Token request failures that the metaserver reports before numbering any grant.
_REFUSED_BEFORE_GRANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
                         grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED}


class MetaSession:
    """`on_revoke(revoke) -> size` runs on a worker thread and returns the file size this
    client knows; `on_revoke_received(revoke)` runs at once on the stream thread and must not
    block; `size_of(file_id) -> size` answers size queries; `on_lost(reason)` is told when
    the session is given up."""

    def __init__(self, address: str, credentials: Credentials,
                 on_revoke: Callable[[pb.Revoke], int],
                 on_revoke_received: Callable[[pb.Revoke], None],
                 size_of: Callable[[int], int],
                 on_lost: Callable[[str], None]) -> None:
        self.address = address
        self._channel = credentials.channel(address)
        self.stub = pb_grpc.MetaServerStub(self._channel)
        self._on_revoke = on_revoke
        self._on_revoke_received = on_revoke_received
        self._size_of = size_of
        self._on_lost = on_lost
        self._outbox: "queue.Queue[object]" = queue.Queue()
        self._workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pfs-revoke")
        self._grants = threading.Condition()
        self._applied_below = 1  # every grant numbered below this has been applied
        self._applied_ahead: set[int] = set()
        self._heartbeats = Heartbeats()
        self._lease_ends = 0.0
        self._finishing = False
        self.lost: str | None = None
        self.client_id = 0
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
            self._channel.close()
            raise errors.from_rpc(e, f"cannot start a session with the metaserver at "
                                     f"{self.address}") from None
        self.client_id = self.reply.client_id
        self.metadata = session_metadata(self.client_id, self.reply.session_key)
        self._lease = self.reply.lease_seconds * (1 - LEASE_MARGIN)
        self._lease_ends = asked + self._lease
        self._heartbeat = self.reply.lease_seconds / 4
        started = threading.Event()
        responses = self.stub.Session(self._outgoing(), metadata=self.metadata)
        threading.Thread(target=self._listen, args=(responses, started), daemon=True,
                         name=f"pfs-session-{self.client_id}").start()
        if not started.wait(CONNECT_TIMEOUT) or self.lost:
            self.close()
            raise errors.error(errno.ENOTCONN, f"the metaserver at {self.address} did not open "
                                               f"the session stream: {self.lost or 'timed out'}")
        return self.reply

    def finish(self) -> None:
        """Ends the session at the metaserver (it releases every token) and closes the stream."""
        self._finishing = True
        try:
            self.stub.Finish(pb.FinishRequest(), timeout=CALL_TIMEOUT, metadata=self.metadata)
        except grpc.RpcError as e:
            log.info("finish: %s", e.details())
        self.close()

    def close(self) -> None:
        self._finishing = True
        self._outbox.put(END)
        self._workers.shutdown(wait=False)
        self._channel.close()

    # --- the lease --------------------------------------------------------------------------
    def lease_valid(self) -> bool:
        """Whether the metaserver surely still counts this session as alive."""
        return self.lost is None and time.monotonic() < self._lease_ends

    def check_lease(self) -> None:
        """Gives the session up once its lease may have run out (the client was paused, or
        the metaserver stopped answering): its tokens may be someone else's by now."""
        if self.lost is None and time.monotonic() >= self._lease_ends:
            self.lose(f"no heartbeat was acknowledged for over the lease of "
                      f"{self.reply.lease_seconds:g}s (was this process paused, or the "
                      "metaserver unreachable?), so the metaserver may have ended the session")

    # --- the stream -------------------------------------------------------------------------
    def _outgoing(self):
        while True:
            yield pb.ClientMessage(heartbeat=pb.Heartbeat(seq=self._heartbeats.send()))
            if (yield from messages_for(self._outbox, self._heartbeat)):
                return

    def _listen(self, responses, started: threading.Event) -> None:
        reason = "the metaserver closed the session"
        try:
            for message in responses:
                kind = message.WhichOneof("body")
                if kind == "heartbeat_ack":
                    sent = self._heartbeats.acknowledged(message.heartbeat_ack.seq)
                    if sent is not None:
                        self._lease_ends = max(self._lease_ends, sent + self._lease)
                elif kind == "revoke":
                    self._on_revoke_received(message.revoke)
                    self._workers.submit(self._revoke, message.revoke)
                elif kind == "size_query":
                    query = message.size_query
                    self._outbox.put(pb.ClientMessage(size_reply=pb.SizeReply(
                        query_id=query.query_id, size=self._size_of(query.file_id))))
                elif kind == "started":
                    started.set()
        except grpc.RpcError as e:
            reason = f"the session stream broke: {e.code().name} {e.details()}"
        except RuntimeError:  # the worker pool was shut down: we are closing
            pass
        if not self._finishing:
            self.lose(reason)
        started.set()

    def lose(self, reason: str) -> None:
        """Gives the session up: no more tokens, no more data calls; the metaserver ends it when
        the stream closes."""
        if self.lost:
            return
        self.lost = reason
        log.warning("client %d lost its session: %s", self.client_id, reason)
        self._outbox.put(END)
        with self._grants:
            self._grants.notify_all()
        self._on_lost(reason)

    def _revoke(self, revoke: pb.Revoke) -> None:
        try:
            with self._grants:
                while revoke.granted_upto >= self._applied_below and not self.lost:
                    self._grants.wait()
            size = self._on_revoke(revoke)
        except Exception:  # noqa: BLE001 - a failed handler must not kill the worker silently
            log.exception("handling revocation %d failed", revoke.revoke_id)
            return
        self._outbox.put(pb.ClientMessage(revoke_ack=pb.RevokeAck(
            revoke_id=revoke.revoke_id, size=size)))

    # --- tokens -----------------------------------------------------------------------------
    def acquire(self, file_id: int, start: int, end: int, mode: int) -> pb.AcquireReply:
        """Asks for a token; waits while the metaserver revokes it from its holders."""
        try:
            return self.stub.Acquire(pb.AcquireRequest(
                file_id=file_id, start=start, end=end, mode=mode),
                timeout=ACQUIRE_TIMEOUT, metadata=self.metadata)
        except grpc.RpcError as e:
            if e.code() not in _REFUSED_BEFORE_GRANT:
                # The metaserver may have granted it: a grant this client never applies would
                # hold up every later revocation. Give the session up; its tokens go with it.
                self.lose(f"a token request ended without an answer ({e.code().name})")
            raise errors.from_rpc(e, "token request") from None

    def applied(self, grant_seq: int) -> None:
        """Records that the grant numbered `grant_seq` is in the client's token table."""
        with self._grants:
            self._applied_ahead.add(grant_seq)
            while self._applied_below in self._applied_ahead:
                self._applied_ahead.remove(self._applied_below)
                self._applied_below += 1
            self._grants.notify_all()

    def call(self, method: str, request, what: str):
        """A unary metaserver call for this session; failures become OSErrors naming `what`."""
        try:
            return getattr(self.stub, method)(request, timeout=CALL_TIMEOUT,
                                              metadata=self.metadata)
        except grpc.RpcError as e:
            raise errors.from_rpc(e, what) from None
