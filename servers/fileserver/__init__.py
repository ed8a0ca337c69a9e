"""A fileserver: stores stripe objects (store.py), serves them (service.py) to the sessions its
table admits (fencing.py), and stays attached to the metaserver (control.py), which tells it
whom to serve and what to delete.

Invariant: one fileserver per data directory and port; it stops if the metaserver refuses it
for good (its place is another's, or it lacks the cluster key).
"""
from __future__ import annotations

import gc
import logging
import pathlib
import threading

from pfs._proto import fileserver_pb2_grpc
from pfs.protocol.capability import Signer
from pfs.protocol.receipts import Notary
from pfs.protocol.transport import Credentials

from .. import clusterkey
from ..instance import AlreadyRunning, lock_data_dir
from ..rpc import StopOnSignals, check_exposure, start_server
from .control import Control
from .fencing import SessionTable
from .service import FileServerService
from .store import StripeStore

log = logging.getLogger("pfs.fileserver")

#: Threads serving calls (each a disk read or write at a time).
THREADS = 32


def serve(data_dir: pathlib.Path, metaserver: str, cluster_key_file: pathlib.Path,
          host: str = "127.0.0.1", port: int = 0, advertise: str | None = None,
          name: str | None = None, credentials: Credentials | None = None,
          allow_insecure: bool = False) -> None:
    """Runs a fileserver until Ctrl-C or SIGTERM. `name` is its stable name in the cluster
    (default: the identity of its data directory)."""
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    key = clusterkey.load(cluster_key_file)
    lock_data_dir(data_dir, "fileserver")
    stop = StopOnSignals()
    store = StripeStore(data_dir)
    service = FileServerService(store, SessionTable(), Signer(key), Notary(key))
    def register(server) -> None:
        fileserver_pb2_grpc.add_FileServerServicer_to_server(service, server)
        server.add_generic_rpc_handlers([service.data_handler()])
    server, bound = start_server(register, host, port, credentials, THREADS)
    # What is loaded by now (modules, protobuf descriptors) lives as long as the process: left
    # out of the collector's full passes, which the calls' allocations trigger and which would
    # walk all of it every time.
    gc.freeze()
    address = advertise or f"{host}:{bound}"
    log.info("fileserver %s serving %s on %s", name or store.uuid[:8], data_dir, address)
    control = Control(service, address, name or store.uuid, metaserver, credentials,
                      clusterkey.attach_proof(key))
    threading.Thread(target=control.stay_attached, name="control", daemon=True).start()
    while not stop.wait(0.5) and control.refused is None:
        pass
    server.stop(grace=2).wait()
    if control.refused is not None:
        raise AlreadyRunning(control.refused)
    log.info("fileserver %s stopped", name or store.uuid[:8])
