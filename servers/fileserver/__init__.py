"""A fileserver: stores stripe objects, and stays attached to the metaserver, which tells it
whom to serve (its session table) and what to delete."""
from __future__ import annotations

import asyncio
import itertools
import logging
import pathlib
import time

import grpc

from pfs._proto import fileserver_pb2_grpc
from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.transport import Credentials

from ..instance import AlreadyRunning, lock_data_dir
from ..rpc import check_exposure, start_server, stop_on_signals
from .service import FileServerService
from .sessions import SessionTable
from .store import StripeStore

log = logging.getLogger("pfs.fileserver")

#: Seconds between attempts to reach the metaserver.
RETRY_SECONDS = 1.0


def serve(data_dir: pathlib.Path, metaserver: str, host: str = "127.0.0.1", port: int = 0,
          advertise: str | None = None, credentials: Credentials | None = None,
          allow_insecure: bool = False) -> None:
    """Runs a fileserver until Ctrl-C or SIGTERM."""
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    lock_data_dir(data_dir, "fileserver")
    asyncio.run(_serve(data_dir, metaserver, host, port, advertise, credentials))


async def _serve(data_dir: pathlib.Path, metaserver: str, host: str, port: int,
                 advertise: str | None, credentials: Credentials) -> None:
    stop = stop_on_signals()
    store = StripeStore(data_dir)
    service = FileServerService(store, SessionTable())
    server, bound = await start_server(
        lambda s: fileserver_pb2_grpc.add_FileServerServicer_to_server(service, s),
        host, port, credentials)
    address = advertise or f"{host}:{bound}"
    log.info("fileserver %s serving %s on %s", store.uuid[:8], data_dir, address)
    attached = asyncio.get_running_loop().create_task(
        _stay_attached(service, address, metaserver, credentials))
    stopping = asyncio.get_running_loop().create_task(stop.wait())
    await asyncio.wait([attached, stopping], return_when=asyncio.FIRST_COMPLETED)
    attached.cancel()
    stopping.cancel()
    await server.stop(grace=2)
    if attached.done() and not attached.cancelled():
        raise AlreadyRunning(attached.result())
    log.info("fileserver %s stopped", store.uuid[:8])


async def _stay_attached(service: FileServerService, address: str, metaserver: str,
                         credentials: Credentials) -> str:
    """Keeps the control stream to the metaserver open, re-attaching whenever it breaks (and
    saying so once per outage). Returns only when the metaserver refuses us for good: why."""
    welcomed = [True]
    async with credentials.aio_channel(metaserver) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        while True:
            try:
                await _attached(service, address, stub, credentials, welcomed)
                reason = "the metaserver closed the stream"
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.ALREADY_EXISTS:  # our place is someone else's
                    return f"the metaserver refused this fileserver: {e.details()}"
                reason = f"{e.code().name}: {e.details()}"
            service.sessions.lapse()
            if welcomed[0]:
                log.warning("not attached to the metaserver at %s (%s); serving nobody until "
                            "attached again", metaserver, reason)
            welcomed[0] = False
            await asyncio.sleep(RETRY_SECONDS)


async def _attached(service: FileServerService, address: str, stub, credentials: Credentials,
                    welcomed: list[bool]) -> None:
    """One attachment: hello, then heartbeats up and the metaserver's orders down."""
    outbox: asyncio.Queue = asyncio.Queue()
    outbox.put_nowait(meta_pb.FileserverMessage(hello=meta_pb.FileserverHello(
        server_uuid=service.store.uuid, address=address)))

    async def upward():
        while True:
            yield await outbox.get()

    sent: dict[int, float] = {}  # heartbeat seq -> when it was sent
    heartbeats = None
    lease = 0.0
    try:
        async for message in stub.Attach(upward(), metadata=credentials.metadata()):
            kind = message.WhichOneof("body")
            if kind == "welcome":
                welcome = message.welcome
                service.sessions.install({s.client_id: s.key for s in welcome.sessions})
                welcomed[0] = True
                outbox.put_nowait(_ack(welcome.version))
                lease = welcome.lease_seconds
                heartbeats = asyncio.get_running_loop().create_task(
                    _beat(outbox, sent, welcome.heartbeat_seconds))
                log.info("attached to the metaserver as fileserver %d (%d sessions)",
                         welcome.index, len(welcome.sessions))
            elif kind == "heartbeat_ack":
                sent_at = sent.pop(message.heartbeat_ack.seq, None)
                if sent_at is not None:
                    service.sessions.renew(sent_at + lease)
            elif kind == "admit":
                service.sessions.admit(message.admit.session.client_id, message.admit.session.key)
                outbox.put_nowait(_ack(message.admit.version))
            elif kind == "fence":
                await service.sessions.fence(message.fence.client_id)
                log.debug("session %d fenced", message.fence.client_id)
                outbox.put_nowait(_ack(message.fence.version))
            elif kind == "length_query":
                query = message.length_query
                length = await service.run(service.store.length, query.file_id)
                outbox.put_nowait(meta_pb.FileserverMessage(length=meta_pb.ObjectLength(
                    query_id=query.query_id, length=length)))
            elif kind == "delete":
                await service.run(service.store.delete, message.delete.file_id)
                log.info("deleted the object of file %d", message.delete.file_id)
                outbox.put_nowait(meta_pb.FileserverMessage(
                    deleted=meta_pb.ObjectsDeleted(file_id=message.delete.file_id)))
    finally:
        if heartbeats is not None:
            heartbeats.cancel()


def _ack(version: int) -> meta_pb.FileserverMessage:
    return meta_pb.FileserverMessage(table_ack=meta_pb.TableAck(version=version))


async def _beat(outbox: asyncio.Queue, sent: dict[int, float], interval: float) -> None:
    for seq in itertools.count(1):
        sent[seq] = time.monotonic()
        for old in [s for s in sent if s < seq - 100]:  # never acknowledged: forget
            del sent[old]
        outbox.put_nowait(meta_pb.FileserverMessage(heartbeat=meta_pb.Heartbeat(seq=seq)))
        await asyncio.sleep(interval)
