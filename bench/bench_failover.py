"""Namespace calls with the metadata on etcd against SQLite, side by side, and the time a
takeover takes.

    python bench/bench_failover.py [--files 200] [--runs 5] [--takeovers 3]

Starts two clusters in temporary directories, with the shipped defaults: `pfs up` (one
metaserver, SQLite) and a failover cluster (a 3-member etcd on loopback, two metaservers
sharing it, four fileservers: tests/hacluster.py). Through a real client it times, per call
(medians over --runs rounds of --files calls): create, open + close, stat, rename and delete,
and prints the etcd/SQLite ratio (the goal: at most 2x), and the median time of a bare etcd
transaction of one put (the floor of any change on etcd: a quorum's fsync). Then it SIGKILLs
the active metaserver --takeovers times (0: none) and prints the time from the kill to the
first call the other one serves (the goal: within the etcd lease plus the recovery window,
under 15 s).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import pfs
from pfs.cli.bench import progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, Cluster  # noqa: E402  (the tests' launchers)
from hacluster import HACluster  # noqa: E402


def time_calls(client: pfs.Client, files: int, runs: int) -> dict[str, float]:
    """Median seconds per call of each kind."""
    rounds: dict[str, list[float]] = {}

    def timed(what: str, call) -> None:
        started = time.perf_counter()
        for i in range(files):
            assert call(i) == 0, (what, pfs.pfs_last_error())
        rounds.setdefault(what, []).append((time.perf_counter() - started) / files)

    def open_close(i: int) -> int:
        fd = client.pfs_open(f"b{i}", pfs.PFS_READ)
        return client.pfs_close(fd) if fd > 0 else -1

    def stat(i: int) -> int:
        client.stat(f"b{i}")
        return 0

    for _ in range(runs):
        timed("create", lambda i: client.pfs_create(f"b{i}", 1))
        timed("open + close", open_close)
        timed("stat", stat)
        timed("rename", lambda i: client.pfs_rename(f"b{i}", f"c{i}"))
        timed("delete", lambda i: client.pfs_delete(f"c{i}"))
    return {what: statistics.median(times) for what, times in rounds.items()}


def bare_transaction(endpoints: list[str], count: int = 200) -> float:
    """Median seconds of an etcd transaction of one put, straight from this process."""
    from aetcd import rpc

    from pfs_servers.metaserver.etcdclient import Etcd, put
    etcd, times = Etcd(endpoints), []
    try:
        for i in range(count):
            started = time.perf_counter()
            etcd.kv.Txn(rpc.TxnRequest(success=[put(b"bench/%d" % i, b"")]), timeout=5)
            times.append(time.perf_counter() - started)
    finally:
        etcd.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--takeovers", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        progress("SQLite: pfs up, shipped defaults")
        cluster = Cluster(pathlib.Path(tmp) / "sqlite", **SHIPPED).start()
        try:
            sqlite = time_calls(cluster.client(cache_blocks=0), args.files, args.runs)
        finally:
            cluster.stop()
        progress("etcd: 3 etcd members, 2 metaservers, 4 fileservers")
        ha = HACluster(pathlib.Path(tmp) / "etcd", lease_seconds=SHIPPED["lease_seconds"],
                       block_size=SHIPPED["block_size"],
                       stripe_blocks=SHIPPED["stripe_blocks"]).start()
        try:
            client = pfs.Client(ha.address, cache_blocks=0)
            assert client.pfs_initialize() > 0, pfs.pfs_last_error()
            etcd = time_calls(client, args.files, args.runs)
            client.pfs_finish(client._session.client_id)
            print(f"namespace calls, median per call over {args.runs} rounds of {args.files}:")
            print(f"  {'call':<14} {'SQLite':>10} {'etcd':>10} {'etcd/SQLite':>12}")
            for what in sqlite:
                print(f"  {what:<14} {sqlite[what] * 1e3:8.2f}ms {etcd[what] * 1e3:8.2f}ms "
                      f"{etcd[what] / sqlite[what]:11.2f}x")
            print(f"  a bare etcd transaction of one put: "
                  f"{bare_transaction(ha.etcd.endpoints) * 1e3:.2f}ms")
            takeovers = []
            for i in range(args.takeovers):
                active = ha.active()
                killed = time.monotonic()
                ha.kill_metaserver(active)
                ha.wait_serving()
                takeovers.append(time.monotonic() - killed)
                progress(f"takeover {i + 1}: {takeovers[-1]:.1f}s")
                ha.start_metaserver(active)  # back, as a standby
            if not takeovers:
                return
            print(f"takeover (SIGKILL of the active metaserver to the first call served by "
                  f"the other; etcd lease {ha.election_ttl}s, client lease "
                  f"{SHIPPED['lease_seconds']:g}s): median {statistics.median(takeovers):.1f}s,"
                  f" max {max(takeovers):.1f}s over {len(takeovers)}")
        finally:
            ha.stop()


if __name__ == "__main__":
    main()
