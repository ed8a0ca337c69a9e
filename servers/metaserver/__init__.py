"""The metaserver: namespace, fileserver membership, client sessions and the token manager,
wired in parts.py and served by service.py.

Invariant: one metaserver per data directory and port; its flags are checked (and the recovery
window is at least a lease) before anything listens. Its defaults live in pfs/metadata.py.
"""
from __future__ import annotations

import asyncio
import logging
import pathlib

from pfs._proto import metaserver_pb2_grpc
from pfs.metadata import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STRIPE_BLOCKS,
)
from pfs.protocol.transport import Credentials

from .. import clusterkey
from ..instance import lock_data_dir
from ..rpc import check_exposure, start_aio_server, stop_on_signals_aio
from .namespace import Namespace
from .service import MetaServerService

log = logging.getLogger("pfs.metaserver")


def default_recovery_seconds(lease_seconds: float) -> float:
    """The recovery window after a restart (recovery.py): two leases, time for every client to
    notice the restart (at once when its stream breaks) and come back, with room to spare."""
    return 2 * lease_seconds


def serve(data_dir: pathlib.Path, host: str = "127.0.0.1", port: int = 50050,
          fileservers: int = 4, block_size: int = DEFAULT_BLOCK_SIZE,
          stripe_blocks: int = DEFAULT_STRIPE_BLOCKS, lease_seconds: float = DEFAULT_LEASE_SECONDS,
          recovery_seconds: float | None = None, replicas: int = 1,
          credentials: Credentials | None = None, allow_insecure: bool = False,
          on_ready=None) -> None:
    """Runs the metaserver until Ctrl-C or SIGTERM; `on_ready(port)` is called once it listens.
    `recovery_seconds`: the window in which clients of before a restart reclaim their sessions
    (default two leases); at least the lease, so that every client left out surely knows its
    lease is over when the window ends."""
    if block_size < 1 or stripe_blocks < 1 or fileservers < 1 or lease_seconds <= 0 \
            or replicas < 1:
        raise SystemExit("--block-size, --stripe-blocks, --fileservers, --lease-seconds and "
                         "--replicas must be positive")
    if replicas > fileservers:
        raise SystemExit(f"--replicas {replicas} needs at least as many fileservers, not "
                         f"{fileservers}")
    if recovery_seconds is None:
        recovery_seconds = default_recovery_seconds(lease_seconds)
    if recovery_seconds < lease_seconds:
        raise SystemExit(f"--recovery-seconds must be at least the lease ({lease_seconds:g}s)")
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    lock_data_dir(data_dir, "metaserver")
    asyncio.run(_serve(data_dir, host, port, fileservers, block_size, stripe_blocks,
                       lease_seconds, recovery_seconds, replicas, credentials, on_ready))


async def _serve(data_dir: pathlib.Path, host: str, port: int, fileservers: int, block_size: int,
                 stripe_blocks: int, lease_seconds: float, recovery_seconds: float, replicas: int,
                 credentials: Credentials, on_ready) -> None:
    stop = stop_on_signals_aio()
    service = MetaServerService(Namespace(data_dir / "metadata.sqlite3"), fileservers,
                                lease_seconds, block_size, stripe_blocks,
                                clusterkey.load_or_create(data_dir), recovery_seconds, replicas,
                                credentials)
    server, bound = await start_aio_server(
        lambda s: metaserver_pb2_grpc.add_MetaServerServicer_to_server(service, s),
        host, port, credentials)
    service.start_background()
    log.info("metaserver on %s:%d (data in %s; expecting %d fileservers; block %d B, "
             "stripe unit %d blocks, lease %gs)", host, bound, data_dir, fileservers,
             block_size, stripe_blocks, lease_seconds)
    if on_ready:
        on_ready(bound)
    await stop.wait()
    log.info("stopping")
    await service.stop()
    await server.stop(grace=2)
    log.info("metaserver stopped")
