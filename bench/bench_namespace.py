"""Namespace calls against the depth of a path and the size of a directory (medians).

    python bench/bench_namespace.py [--runs 7] [--entries 100000]

Starts its own cluster (`pfs up`, shipped defaults) in a temporary directory and measures, through
a real client, a bare metaserver call (Status, the floor) against:
- stat of a file at depth 1 and at depth 10, in a small namespace and again once one directory
  holds `--entries` more entries (a lookup walks one indexed entry per component: neither the
  depth nor the size of the namespace should show beyond the walk itself);
- a rename at depth 10 (one entry row moves);
- listing a directory of 100 entries and one of `--entries` (per entry).
The big directory is made with the metaserver stopped, through the namespace itself, so that
setting up does not take as long as `--entries` round trips.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

import grpc
from pfs_servers.metaserver.namespace import Namespace

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.cli.bench import median_seconds, progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, Cluster  # noqa: E402  (the tests' launcher)

DEEP = "/".join(f"d{i}" for i in range(9))  # a file at depth 10 lives in here


def row(what: str, seconds: float, floor: float) -> None:
    print(f"  {what:<58} {seconds * 1e6:10.1f} us {seconds / floor:7.2f}x")


def measure(cluster: Cluster, runs: int, label: str, big_entries: int = 0) -> None:
    client = cluster.client()
    with grpc.insecure_channel(cluster.address) as channel:
        stub = pb_grpc.MetaServerStub(channel)
        floor = median_seconds(lambda: stub.Status(pb.StatusRequest()), runs, repeat=200)
    print(f"{label} (ratio: against a bare Status call)")
    row("bare gRPC Status", floor, floor)
    row("stat of a file at depth 1", median_seconds(lambda: client.stat("top"), runs, 200),
        floor)
    row("stat of a file at depth 10", median_seconds(lambda: client.stat(f"{DEEP}/f"), runs,
                                                     200), floor)
    def rename_there_and_back() -> None:
        client.rename(f"{DEEP}/f", f"{DEEP}/g")
        client.rename(f"{DEEP}/g", f"{DEEP}/f")
    row("rename at depth 10", median_seconds(rename_there_and_back, runs, 50) / 2, floor)
    small = median_seconds(lambda: client.listdir("small"), runs)
    row("list a directory of 100 entries (per entry)", small / 100, floor)
    if big_entries:
        big = median_seconds(lambda: client.listdir("big"), max(3, runs // 2))
        row(f"list a directory of {big_entries} entries (per entry)", big / big_entries, floor)
    client.finish(client.initialize())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        progress("starting a cluster (pfs up, shipped defaults)")
        cluster = Cluster(pathlib.Path(tmp), **SHIPPED).start()
        try:
            client = cluster.client()
            client.create("top", 1)
            for depth in range(1, 10):
                client.mkdir("/".join(f"d{i}" for i in range(depth)))
            client.create(f"{DEEP}/f", 1)
            client.mkdir("small")
            for i in range(100):
                client.create(f"small/f{i:03d}", 1)
            client.finish(client.initialize())
            measure(cluster, args.runs, "a small namespace (120 entries)")
        finally:
            cluster.stop()
        progress(f"adding a directory of {args.entries} entries, metaserver stopped")
        namespace = Namespace(pathlib.Path(tmp) / "meta" / "metadata.sqlite3")
        namespace.mkdir(("big",))
        started = time.monotonic()
        for i in range(args.entries):
            namespace.create(("big", f"f{i:07d}"), 65536, 16, [0])
            if i % 10_000 == 9_999:
                progress(f"{i + 1} entries ({time.monotonic() - started:.0f} s)")
        namespace.close()
        cluster = Cluster(pathlib.Path(tmp), **SHIPPED).start()
        try:
            measure(cluster, args.runs, f"with a directory of {args.entries} entries",
                    args.entries)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
