"""A fileserver: stores stripe objects and announces itself to the metaserver."""
from __future__ import annotations

import logging
import pathlib
import threading

import grpc

from pfs._proto import fileserver_pb2_grpc
from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.transport import Credentials

from ..rpc import check_exposure, start_server, wait_for
from .service import FileServerService
from .store import StripeStore

log = logging.getLogger("pfs.fileserver")


def _announce(store: StripeStore, address: str, metaserver: str, credentials: Credentials,
              stop: threading.Event) -> None:
    """Registers with the metaserver, then keeps doing so as a heartbeat until `stop`."""
    stub = meta_grpc.MetaServerStub(credentials.channel(metaserver))
    interval, index, reported_failure = 1.0, None, False
    while not stop.is_set():
        try:
            reply = stub.RegisterFileserver(
                meta_pb.RegisterFileserverRequest(server_uuid=store.uuid, address=address),
                timeout=5)
            if reply.index != index:
                log.info("registered with the metaserver at %s as fileserver %d",
                         metaserver, reply.index)
            index, interval, reported_failure = reply.index, reply.heartbeat_seconds, False
        except grpc.RpcError as e:
            if not reported_failure:
                log.warning("cannot reach the metaserver at %s (%s); retrying",
                            metaserver, e.code().name)
            reported_failure, interval = True, 1.0
        stop.wait(interval)


def serve(data_dir: pathlib.Path, metaserver: str, host: str = "127.0.0.1", port: int = 0,
          advertise: str | None = None, credentials: Credentials | None = None,
          allow_insecure: bool = False, stop: threading.Event | None = None) -> None:
    """Runs a fileserver until `stop` is set (or forever)."""
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    store = StripeStore(data_dir)
    server, bound = start_server(
        lambda s: fileserver_pb2_grpc.add_FileServerServicer_to_server(FileServerService(store), s),
        host, port, credentials, max_workers=32)
    address = advertise or f"{host}:{bound}"
    log.info("fileserver %s serving %s on %s", store.uuid[:8], data_dir, address)
    stop = stop or threading.Event()
    announcer = threading.Thread(target=_announce, name="announce", daemon=True,
                                 args=(store, address, metaserver, credentials, stop))
    announcer.start()
    wait_for(stop)
    server.stop(grace=2).wait()
    log.info("fileserver %s stopped", store.uuid[:8])
