"""The metaserver: namespace, fileserver membership, client sessions and the token manager,
wired in server.py and served by service.py.

Invariant: one metaserver per data directory and port; its settings are the ones remembered in
its data directory with the flags given put over them (settings.py), checked (the recovery
window is at least a lease) before anything listens. Its defaults live in pfs/metadata.py.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import pathlib
import time

from pfs._proto import metaserver_pb2_grpc
from pfs.protocol.transport import Credentials

from .. import clusterkey
from ..instance import lock_data_dir
from ..rpc import check_exposure, start_aio_server, stop_on_signals_aio
from . import settings
from .server import MetaServer
from .service import MetaServerService
from .election import Election
from .etcd import EtcdStore
from .failover import ActiveOnly, serve_term, take_over
from .store import MetaStore, open_store

log = logging.getLogger("pfs.metaserver")


def default_recovery_seconds(lease_seconds: float) -> float:
    """The recovery window after a restart (recovery.py): two leases, time for every client to
    notice the restart (at once when its stream breaks) and come back, with room to spare."""
    return 2 * lease_seconds


def serve(data_dir: pathlib.Path, host: str = "127.0.0.1", port: int | None = None,
          fileservers: int | None = None, block_size: int | None = None,
          stripe_blocks: int | None = None, lease_seconds: float | None = None,
          recovery_seconds: float | None = None, replicas: int | None = None,
          credentials: Credentials | None = None, allow_insecure: bool = False,
          on_ready=None, store: str | None = None, cluster_key_file: str | None = None,
          etcd_tls: dict | None = None) -> None:
    """Runs the metaserver until Ctrl-C or SIGTERM; `on_ready(port)` is called once it listens.
    A setting left None is the one recorded in the data directory at an earlier start, else
    its default (settings.py). `recovery_seconds`: the window in which clients of before a
    restart reclaim their sessions (default two leases); at least the lease, so that every
    client left out surely knows its lease is over when the window ends.
    `store`: None (SQLite in the data directory) or etcd://HOST:PORT,... (store.py): then
    several metaservers may run, one active (failover.py), all with the same cluster key
    (`cluster_key_file`, required); `etcd_tls`: ca_file, cert_file, key_file for etcd."""
    credentials = credentials or Credentials()
    check_exposure(host, credentials, allow_insecure)
    lock_data_dir(data_dir, "metaserver")
    chosen, changes = settings.resolve(data_dir, dict(
        port=port, fileservers=fileservers, block_size=block_size, stripe_blocks=stripe_blocks,
        lease_seconds=lease_seconds, recovery_seconds=recovery_seconds, replicas=replicas))
    _check(chosen)
    for change in changes:
        log.warning("setting changed since the last start: %s", change)
    if store and store != "sqlite" and not cluster_key_file:
        raise SystemExit("with --store etcd://... every metaserver of the cluster needs the same "
                         "cluster key: give each --cluster-key-file (one file, made once, e.g. "
                         "by `pfs up --ha` or `python -c 'import secrets; "
                         "print(secrets.token_hex(32))'`, copied to every metaserver and "
                         "fileserver)")
    key = clusterkey.load(pathlib.Path(cluster_key_file)) if cluster_key_file \
        else clusterkey.load_or_create(data_dir)
    asyncio.run(_serve(data_dir, host, chosen, credentials, on_ready, key,
                       open_store(store, data_dir, **(etcd_tls or {}))))


def _check(chosen: settings.Settings) -> None:
    if chosen.block_size < 1 or chosen.stripe_blocks < 1 or chosen.fileservers < 1 \
            or chosen.lease_seconds <= 0 or chosen.replicas < 1:
        raise SystemExit("--block-size, --stripe-blocks, --fileservers, --lease-seconds and "
                         "--replicas must be positive")
    if chosen.replicas > chosen.fileservers:
        raise SystemExit(f"--replicas {chosen.replicas} needs at least as many fileservers, not "
                         f"{chosen.fileservers}")
    if (chosen.recovery_seconds or default_recovery_seconds(chosen.lease_seconds)) \
            < chosen.lease_seconds:
        raise SystemExit(f"--recovery-seconds must be at least the lease "
                         f"({chosen.lease_seconds:g}s)")


async def _serve(data_dir: pathlib.Path, host: str, chosen: settings.Settings,
                 credentials: Credentials, on_ready, key: bytes, store: MetaStore) -> None:
    stop = stop_on_signals_aio()
    active_only = ActiveOnly() if isinstance(store, EtcdStore) else None
    service = MetaServerService(None)
    server, bound = await start_aio_server(
        lambda s: metaserver_pb2_grpc.add_MetaServerServicer_to_server(service, s),
        host, chosen.port, credentials, [active_only] if active_only else [])
    # Recorded once it listens: a port of 0 is remembered as the one it got.
    settings.record(data_dir, dataclasses.replace(chosen, port=bound))
    election = None
    if active_only:
        election = active_only.election = Election(store, f"{host}:{bound}")
        await asyncio.to_thread(election.start)
        log.info("metaserver on %s:%d stands by (store %s)", host, bound,
                 ",".join(store.etcd.endpoints))
    if on_ready:
        on_ready(bound)
    if election:
        started = time.monotonic()
        epoch = await take_over(election, stop)
        if not epoch:
            await server.stop(grace=1)
            return
        log.warning("this metaserver is active now (epoch %d, elected after standing by "
                    "%.1fs)", epoch, time.monotonic() - started)
    metaserver = MetaServer(
        store, chosen.fileservers, chosen.lease_seconds, chosen.block_size,
        chosen.stripe_blocks, key,
        chosen.recovery_seconds or default_recovery_seconds(chosen.lease_seconds),
        chosen.replicas, credentials, election)
    if election:
        metaserver.cluster.epoch = election.epoch
    service.server = metaserver
    metaserver.start_background()
    log.info("metaserver on %s:%d (data in %s; expecting %d fileservers; block %d B, "
             "stripe unit %d blocks, lease %gs, %d replica(s) by default)", host, bound,
             data_dir, chosen.fileservers, chosen.block_size, chosen.stripe_blocks,
             chosen.lease_seconds, chosen.replicas)
    deposed = False
    if active_only:
        active_only.serving = True
        deposed = not await serve_term(election, stop)
        active_only.serving = False
    else:
        await stop.wait()
    log.info("stopping")
    await metaserver.stop()
    if election:
        election.stop()
    await server.stop(grace=2)
    log.info("metaserver stopped")
    if deposed:
        raise SystemExit(3)
