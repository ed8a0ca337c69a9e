"""The metaserver: namespace, fileserver membership, client sessions and the token manager."""
from __future__ import annotations

import logging
import pathlib
import threading

from pfs._proto import metaserver_pb2_grpc
from pfs.transport import Credentials

from ..rpc import check_exposure, start_server, wait_for
from .cluster import Cluster
from .namespace import Namespace
from .service import MetaServerService

log = logging.getLogger("pfs.metaserver")

#: Cluster defaults, chosen for speed: 64 KiB blocks (the cache and read-ahead unit) and
#: 1 MiB stripe units (16 blocks), Lustre's default stripe size.
DEFAULT_BLOCK_SIZE = 64 * 1024
DEFAULT_STRIPE_BLOCKS = 16
DEFAULT_LEASE_SECONDS = 10.0


def serve(data_dir: pathlib.Path, host: str = "127.0.0.1", port: int = 50050,
          fileservers: int = 4, block_size: int = DEFAULT_BLOCK_SIZE,
          stripe_blocks: int = DEFAULT_STRIPE_BLOCKS, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          credentials: Credentials | None = None, allow_insecure: bool = False,
          stop: threading.Event | None = None, on_ready=None) -> None:
    """Runs the metaserver until `stop` is set; `on_ready(port)` is called once it listens."""
    if block_size < 1 or stripe_blocks < 1 or fileservers < 1 or lease_seconds <= 0:
        raise SystemExit("--block-size, --stripe-blocks, --fileservers and --lease-seconds "
                         "must be positive")
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    namespace = Namespace(data_dir / "metadata.sqlite3")
    service = MetaServerService(namespace, Cluster(namespace, fileservers), lease_seconds,
                                block_size, stripe_blocks, credentials)
    # Every session holds a thread for its stream and waiting token requests hold one each.
    server, bound = start_server(
        lambda s: metaserver_pb2_grpc.add_MetaServerServicer_to_server(service, s),
        host, port, credentials, max_workers=512)
    service.start_background()
    log.info("metaserver on %s:%d (data in %s; expecting %d fileservers; block %d B, "
             "stripe unit %d blocks, lease %gs)", host, bound, data_dir, fileservers,
             block_size, stripe_blocks, lease_seconds)
    if on_ready:
        on_ready(bound)
    stop = stop or threading.Event()
    wait_for(stop)
    service.sessions.stop()
    server.stop(grace=2).wait()
    service.stop()
    log.info("metaserver stopped")
