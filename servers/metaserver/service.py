"""The MetaServer gRPC servicer: translates messages into namespace, session and token calls.

File sizes: the namespace holds the size as of the last close or fsync (durable); `_live_sizes`
holds newer sizes that clients reported with their revocation acknowledgements. A client that
holds a WRITE token beyond the known size may have grown the file in its cache, so Stat asks it
(a glimpse) before answering.
"""
from __future__ import annotations

import functools
import logging
import threading

import grpc

from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_grpc
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.names import name_problem
from pfs.ranges import INFINITY
from pfs.transport import Credentials

from .cluster import HEARTBEAT_SECONDS, Cluster
from .namespace import FileRecord, NameExists, Namespace, NoSuchFile
from . import sessions as session_state
from .sessions import SessionEnded, Sessions
from .tokens import RequestCancelled, Revocation, SessionGone, TokenManager

log = logging.getLogger("pfs.metaserver")


def _answer_errors(method):
    """Domain failures become gRPC statuses with a message that says what to do."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except NoSuchFile as e:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such file: {e}")
        except NameExists as e:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"file exists: {e}")
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except (SessionEnded, SessionGone) as e:
            context.abort(grpc.StatusCode.ABORTED, f"session ended: {e}")
        except RequestCancelled as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"file closed: {e}")
    return wrapper


class MetaServerService(pb_grpc.MetaServerServicer):
    def __init__(self, namespace: Namespace, cluster: Cluster, lease_seconds: float,
                 block_size: int, stripe_blocks: int, credentials: Credentials) -> None:
        self.namespace = namespace
        self.cluster = cluster
        self.block_size = block_size
        self.stripe_blocks = stripe_blocks
        self.credentials = credentials
        self.sessions = Sessions(lease_seconds, on_end=self._session_ended)
        self.tokens = TokenManager(self._send_revoke,
                                   evict=lambda c: self.sessions.evict(c, "revocation ignored"),
                                   revoke_timeout=max(2 * lease_seconds, 5.0))
        self._names_lock = threading.Lock()  # open vs delete of one name
        self._sizes_lock = threading.Lock()
        self._live_sizes: dict[int, int] = {}
        self._deleter = threading.Thread(target=self._retry_deletes, name="deletes", daemon=True)
        self._stop = threading.Event()

    def start_background(self) -> None:
        self._deleter.start()

    def stop(self) -> None:
        self._stop.set()
        self.sessions.stop()
        self.namespace.close()

    # --- helpers ----------------------------------------------------------------------------
    def _grow(self, file_id: int, size: int) -> None:
        with self._sizes_lock:
            if size > self._live_sizes.get(file_id, 0):
                self._live_sizes[file_id] = size

    def _size(self, record: FileRecord) -> int:
        with self._sizes_lock:
            return max(record.size, self._live_sizes.get(record.file_id, 0))

    def _meta(self, record: FileRecord, size: int | None = None) -> pb.FileMeta:
        return pb.FileMeta(
            file_id=record.file_id, name=record.name,
            size=self._size(record) if size is None else size,
            ctime=record.ctime, mtime=record.mtime,
            recipe=pb.Recipe(block_size=record.block_size, stripe_blocks=record.stripe_blocks,
                             stripe_width=len(record.servers), servers=record.servers))

    def _fileservers(self) -> list[pb.Fileserver]:
        online = self.cluster.online()
        return [pb.Fileserver(index=i, address=a, online=i in online)
                for i, a in self.namespace.fileservers().items()]

    def _send_revoke(self, revocation: Revocation) -> None:
        try:
            session = self.sessions.get(revocation.client_id)
        except SessionEnded:
            return  # its tokens are being released anyway
        session.revoked_files[revocation.revoke_id] = revocation.file_id
        session.outbox.put(pb.ServerMessage(revoke=pb.Revoke(
            revoke_id=revocation.revoke_id, file_id=revocation.file_id,
            start=revocation.start, end=revocation.end, to_mode=revocation.to_mode,
            granted_upto=revocation.granted_upto)))

    def _session_ended(self, client_id: int) -> None:
        self.tokens.remove_client(client_id)

    def _open_session(self, client_id: int, file_id: int) -> session_state.Session:
        session = self.sessions.get(client_id)
        if file_id not in session.open_files:
            raise ValueError(f"client {client_id} does not have file {file_id} open")
        return session

    # --- cluster ----------------------------------------------------------------------------
    def RegisterFileserver(self, request, context):
        if not request.server_uuid or not request.address:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "server_uuid and address are required")
        index = self.cluster.heartbeat(request.server_uuid, request.address)
        return pb.RegisterFileserverReply(index=index, heartbeat_seconds=HEARTBEAT_SECONDS)

    def Status(self, request, context):
        return pb.StatusReply(expected_fileservers=self.cluster.expected,
                              fileservers=self._fileservers(), sessions=self.sessions.count(),
                              files=self.namespace.count_files(), block_size=self.block_size,
                              stripe_blocks=self.stripe_blocks)

    # --- sessions ---------------------------------------------------------------------------
    def Register(self, request, context):
        problem = self.cluster.shortfall()
        if problem:
            context.abort(grpc.StatusCode.UNAVAILABLE, problem)
        client_id = self.namespace.next_counter("client_id")
        self.tokens.add_client(client_id)
        self.sessions.start(client_id, f"pid {request.pid} on {request.hostname or '?'} "
                                       f"from {context.peer()}")
        return pb.RegisterReply(client_id=client_id, fileservers=self._fileservers(),
                                lease_seconds=self.sessions.lease_seconds,
                                block_size=self.block_size, stripe_blocks=self.stripe_blocks)

    def Session(self, request_iterator, context):
        try:
            first = next(request_iterator)
            session = self.sessions.get(first.client_id)
        except (StopIteration, SessionEnded) as e:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"no such session: {e}")
        self.sessions.heard_from(session)
        context.add_callback(lambda: self.sessions.end(session.client_id, "stream closed"))
        threading.Thread(target=self._read_stream, args=(session, request_iterator),
                         name=f"session-{session.client_id}", daemon=True).start()
        yield from self.sessions.outgoing(session)

    def _read_stream(self, session: session_state.Session, request_iterator) -> None:
        try:
            for message in request_iterator:
                self.sessions.heard_from(session)
                kind = message.WhichOneof("body")
                if kind == "revoke_ack":
                    ack = message.revoke_ack
                    file_id = session.revoked_files.pop(ack.revoke_id, None)
                    if file_id is not None:
                        self._grow(file_id, ack.size)  # before the waiting request wakes
                    self.tokens.acknowledge(session.client_id, ack.revoke_id)
                elif kind == "size_reply":
                    self.sessions.size_answered(message.size_reply.query_id,
                                                message.size_reply.size)
        except grpc.RpcError:
            pass  # the stream broke: the callback ends the session
        self.sessions.end(session.client_id, "stream closed by the client")

    def Finish(self, request, context):
        self.sessions.end(request.client_id, "finished")
        return pb.FinishReply()

    # --- namespace --------------------------------------------------------------------------
    @_answer_errors
    def Create(self, request, context):
        self.sessions.get(request.client_id)
        problem = name_problem(request.name)
        if problem:
            raise ValueError(problem)
        servers = self.cluster.place(request.stripe_width)
        record = self.namespace.create(request.name, self.block_size, self.stripe_blocks, servers)
        log.info("created %r (file %d) striped over fileservers %s", record.name,
                 record.file_id, servers)
        return pb.CreateReply(meta=self._meta(record))

    @_answer_errors
    def Open(self, request, context):
        session = self.sessions.get(request.client_id)
        with self._names_lock:
            record = self.namespace.lookup(request.name)
            if record.file_id in session.open_files:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"{request.name!r} is already open in this client; close it first")
            session.open_files.add(record.file_id)
        return pb.OpenReply(meta=self._meta(record))

    @_answer_errors
    def Close(self, request, context):
        """Idempotent: a client whose first Close reply was lost may send it again."""
        session = self.sessions.get(request.client_id)
        if request.file_id in session.open_files:
            # Not open any more before the tokens go, so no request is granted in between.
            session.open_files.discard(request.file_id)
            self._grow(request.file_id, request.size)
            record = self.namespace.get(request.file_id)
            self.namespace.grow(request.file_id, max(record.size, request.size),
                                touch=request.wrote)
            self.tokens.release_file(request.client_id, request.file_id)
        return pb.CloseReply(meta=self._meta(self.namespace.get(request.file_id)))

    @_answer_errors
    def Delete(self, request, context):
        self.sessions.get(request.client_id)
        with self._names_lock:
            record = self.namespace.lookup(request.name)
            openers = self.sessions.openers(record.file_id)
            if openers:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"{request.name!r} is open by client(s) {openers}; "
                              "they must close it first")
            self.namespace.delete(request.name)
        with self._sizes_lock:
            self._live_sizes.pop(record.file_id, None)
        log.info("deleted %r (file %d)", record.name, record.file_id)
        self._delete_objects(record.file_id, record.servers)
        return pb.DeleteReply()

    @_answer_errors
    def Stat(self, request, context):
        record = (self.namespace.lookup(request.name) if request.WhichOneof("file") == "name"
                  else self.namespace.get(request.file_id))
        size = self._size(record)
        for holder in self.tokens.writers_beyond(record.file_id, size):
            if holder != request.client_id:
                answer = self.sessions.query_size(holder, record.file_id,
                                                  timeout=self.sessions.lease_seconds)
                if answer is not None:
                    self._grow(record.file_id, answer)
        return pb.StatReply(meta=self._meta(record))

    @_answer_errors
    def List(self, request, context):
        return pb.ListReply(files=[self._meta(r) for r in self.namespace.files()])

    @_answer_errors
    def ReportSize(self, request, context):
        self._open_session(request.client_id, request.file_id)
        self._grow(request.file_id, request.size)
        record = self.namespace.get(request.file_id)
        self.namespace.grow(request.file_id, self._size(record))
        return pb.ReportSizeReply()

    # --- tokens -----------------------------------------------------------------------------
    @_answer_errors
    def Acquire(self, request, context):
        self._open_session(request.client_id, request.file_id)
        if request.end > INFINITY:
            raise ValueError(f"token range end {request.end} is beyond {INFINITY}")
        record = self.namespace.get(request.file_id)
        # Nothing may fail once the grant is numbered: the client must learn of every grant.
        grant = self.tokens.acquire(request.client_id, request.file_id, request.start,
                                    request.end, request.mode)
        return pb.AcquireReply(start=grant.start, end=grant.end, mode=grant.mode,
                               grant_seq=grant.grant_seq, size=self._size(record))

    # --- deleting stripe objects ------------------------------------------------------------
    def _delete_objects(self, file_id: int, servers: tuple[int, ...]) -> bool:
        addresses = self.namespace.fileservers()
        try:
            for index in servers:
                with self.credentials.channel(addresses[index]) as channel:
                    fs_grpc.FileServerStub(channel).Delete(fs_pb.DeleteRequest(file_id=file_id),
                                                           timeout=10)
        except grpc.RpcError as e:
            log.warning("could not delete the objects of file %d yet (%s); will retry",
                        file_id, e.code().name)
            return False
        self.namespace.delete_done(file_id)
        return True

    def _retry_deletes(self) -> None:
        while not self._stop.wait(10):
            for file_id, servers in self.namespace.pending_deletes():
                if not self._delete_objects(file_id, servers):
                    break
