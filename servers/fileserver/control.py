"""The fileserver's control stream to the metaserver: hello and heartbeats up; the session
table, heartbeat acknowledgements, deletes and length queries down.

Invariant: while the stream is down this fileserver serves nobody (its session table lapses);
every table change is acknowledged up the stream only once it is in force here.
"""
from __future__ import annotations

import logging
import queue
import time

import grpc

from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.protocol.heartbeats import END, Heartbeats, messages_for
from pfs.protocol.transport import Credentials

from .. import clusterkey
from .service import FileServerService

log = logging.getLogger("pfs.fileserver")

#: Seconds between attempts to reach the metaserver.
RETRY_SECONDS = 1.0


class Control:
    """The control stream to the metaserver: hello and heartbeats up; the session table,
    heartbeat acknowledgements, deletes and length queries down."""

    def __init__(self, service: FileServerService, address: str, name: str, metaserver: str,
                 credentials: Credentials, proof: str) -> None:
        self.service = service
        self.sessions = service.sessions
        self.store = service.store
        self.address = address
        self.name = name
        self.metaserver = metaserver
        self.credentials = credentials
        self._proof = proof
        self.refused: str | None = None  # why the metaserver will not have us, for good
        self._outbox: "queue.Queue[object]" = queue.Queue()
        self._heartbeats = Heartbeats()
        self._heartbeat = RETRY_SECONDS
        self._lease = 0.0
        self._epoch = 0  # the newest metaserver epoch seen: an older one was deposed

    def stay_attached(self) -> None:
        """Re-attaches whenever the stream breaks, saying so once per outage."""
        stub = meta_grpc.MetaServerStub(self.credentials.channel(self.metaserver))
        welcomed = True
        while True:
            self._outbox = queue.Queue()
            try:
                welcomed |= self._attached(stub)
                reason = "the metaserver closed the stream"
            except grpc.RpcError as e:
                # Our place is someone else's, or we are not of this cluster: final.
                if e.code() in (grpc.StatusCode.ALREADY_EXISTS,
                                grpc.StatusCode.PERMISSION_DENIED):
                    self.refused = f"the metaserver refused this fileserver: {e.details()}"
                    return
                reason = f"{e.code().name}: {e.details()}"
            self.sessions.lapse()
            if welcomed:
                log.warning("not attached to the metaserver at %s (%s); serving nobody until "
                            "attached again", self.metaserver, reason)
            welcomed = False
            time.sleep(RETRY_SECONDS)

    def _upward(self, outbox: "queue.Queue[object]"):
        yield meta_pb.FileserverMessage(hello=meta_pb.FileserverHello(
            server_uuid=self.store.uuid, address=self.address, name=self.name,
            boot=self.service.boot))
        while not (yield from messages_for(outbox, self._heartbeat)):
            if self._lease:  # heartbeats begin once the table is in force
                yield meta_pb.FileserverMessage(heartbeat=meta_pb.Heartbeat(
                    seq=self._heartbeats.send()))

    def _attached(self, stub) -> bool:
        """One attachment; whether the metaserver welcomed us."""
        outbox, self._lease, welcomed = self._outbox, 0.0, False
        responses = stub.Attach(self._upward(outbox),
                                metadata=((clusterkey.ATTACH_HEADER, self._proof),))
        try:
            for message in responses:
                kind = message.WhichOneof("body")
                if kind == "welcome":
                    if message.welcome.epoch < self._epoch:
                        log.error("refused control from a deposed metaserver (epoch %d; the "
                                  "active one's is %d at least)", message.welcome.epoch,
                                  self._epoch)
                        return False
                    self._epoch = message.welcome.epoch
                    welcome, welcomed = message.welcome, True
                    self.service.index = welcome.index
                    self.sessions.install(list(welcome.sessions), welcome.new_sessions_from)
                    self._heartbeat, self._lease = welcome.heartbeat_seconds, welcome.lease_seconds
                    outbox.put(_ack(welcome.version))
                    log.info("attached to the metaserver as fileserver %s (%d sessions)",
                             self.name or self.store.uuid, len(welcome.sessions))
                elif kind == "heartbeat_ack":
                    sent = self._heartbeats.acknowledged(message.heartbeat_ack.seq)
                    if sent is not None:
                        self.sessions.renew(sent + self._lease, message.heartbeat_ack.time)
                elif kind == "admit":
                    self.sessions.admit(message.admit.client_id)
                    outbox.put(_ack(message.admit.version))
                elif kind == "fence":
                    self.sessions.fence(message.fence.client_id, message.fence.time)
                    log.debug("session %d fenced", message.fence.client_id)
                    outbox.put(_ack(message.fence.version))
                elif kind == "length_query":
                    query = message.length_query
                    outbox.put(meta_pb.FileserverMessage(length=meta_pb.ObjectLength(
                        query_id=query.query_id, length=self.store.length(query.file_id))))
                elif kind == "delete":
                    file_ids = list(message.delete.file_ids)
                    for file_id in file_ids:
                        self.store.delete(file_id)
                    log.debug("deleted the objects of %d file(s)", len(file_ids))
                    outbox.put(meta_pb.FileserverMessage(
                        deleted=meta_pb.ObjectsDeleted(file_ids=file_ids)))
        finally:
            outbox.put(END)
            responses.cancel()
        return welcomed


def _ack(version: int) -> meta_pb.FileserverMessage:
    return meta_pb.FileserverMessage(table_ack=meta_pb.TableAck(version=version))
