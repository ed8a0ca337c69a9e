"""The read and write paths of issue 25 against their floors, side by side in one run.

    python bench/bench_paths.py [--runs 5] [--size-mib 1024]

Starts a cluster (`pfs up`, shipped defaults: 4 fileservers, 64 KiB blocks, 1 MiB stripe units,
1024-block client cache) and 4 bare raw-bytes gRPC servers (bench/floor.py), and measures, each
against what it is built on, the two taking turns within every run (medians of --runs):

- an uncached random 4 KiB read (its token held, every read in a block not read before) against
  one bare 4 KiB read from the server holding the bytes (goal: at most 1.3x its time);
- a cached random 4 KiB read against os.preadv of a page-cached local file (goal: at most 2x);
- a cold sequential read of --size-mib in 4 MiB calls (a client that has cached none of it)
  against the same calls striped by a bare client over the bare servers (goal: >= 0.9 of its
  speed);
- --size-mib written in 4 MiB calls, through close, against the bare striped writes (goal:
  >= 1.0).

JuiceFS is not run here: bench/bench_versus.py runs these workloads through PFS's API, PFS's
mount and JuiceFS side by side, with the same floors.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import sys
import tempfile
import time

import pfs
from pfs.cli.bench import MiB, fresh_name, progress, side_by_side

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from clusters import SHIPPED, Cluster, temporary_cluster  # noqa: E402
from floor import Floor  # noqa: E402

CALL = 4 * MiB
SMALL = 4096
BLOCK = SHIPPED["block_size"]


def verdict(what: str, pfs_seconds: float, floor_seconds: float, goal: str, ok: bool,
            ratio: str) -> None:
    print(f"  {what:<44} PFS {pfs_seconds * 1e6:10.1f} us  floor {floor_seconds * 1e6:10.1f} us"
          f"  {ratio:<14} goal {goal:<8} {'ok' if ok else 'MISSED'}")


def bulk(cluster: Cluster, floor: Floor, runs: int, size: int) -> str:
    """Writes and cold reads, PFS and the floor taking turns every run; returns the name of the
    file written last (kept for the small reads)."""
    data = memoryview(os.urandom(size))
    buf = bytearray(size)
    writer, reader = cluster.client(cache_blocks=1024), cluster.client(cache_blocks=1024)
    times: dict[str, list[float]] = {"write": [], "floor write": [], "read": [], "floor read": []}
    name = ""
    for run in range(runs + 1):  # a first round warms up
        progress(f"bulk round {run} of {runs}" + (" (warming up)" if run == 0 else ""))
        if name:
            writer.delete(name)
        name = fresh_name()

        def write() -> None:
            writer.create(name, 4)
            fd = writer.open(name, pfs.PFS_READ_WRITE)
            for offset in range(0, size, CALL):
                writer.write(fd, data[offset:offset + CALL], CALL, offset)
            writer.close(fd)

        def read() -> None:
            fd = reader.open(name, pfs.PFS_READ)
            for offset in range(0, size, CALL):
                reader.read(fd, memoryview(buf)[offset:offset + CALL], CALL, offset)
            reader.close(fd)  # drops what it cached: every round reads cold
        for what, action in (
                ("floor write", lambda: [floor.write_striped(data[o:o + CALL], o)
                                         for o in range(0, size, CALL)]),
                ("write", write),
                ("floor read", lambda: [floor.read_striped(o, memoryview(buf)[o:o + CALL])
                                        for o in range(0, size, CALL)]),
                ("read", read)):
            started = time.perf_counter()
            action()
            if run:
                times[what].append(time.perf_counter() - started)
        assert buf == data, "read back different bytes"
    median = {what: sorted(t)[len(t) // 2] for what, t in times.items()}
    for what, goal in (("write", 1.0), ("read", 0.9)):
        ratio = median[f"floor {what}"] / median[what]
        label = {"write": f"{size // MiB} MiB written in 4 MiB calls, close",
                 "read": "cold sequential read of it, 4 MiB calls"}[what]
        verdict(label, median[what], median[f"floor {what}"], f">= {goal}", ratio >= goal,
                f"{ratio:.2f} speed ({size / MiB / median[what]:.0f} MiB/s)")
    for client in (writer, reader):
        client.finish(client.initialize())
    return name


def small(cluster: Cluster, floor: Floor, runs: int, name: str, size: int) -> None:
    """4 KiB reads of the file `name` (`size` bytes) that the bulk phase left."""
    rng = random.Random(25)
    client = cluster.client(cache_blocks=1024)
    fd = client.open(name, pfs.PFS_READ)
    buf = bytearray(SMALL)
    client.read(fd, buf, SMALL, 0)  # the token, for the whole file
    repeat = min(100, (size // BLOCK - 1) // (3 * runs))  # reads of a file never read twice
    blocks = iter(rng.sample(range(1, size // BLOCK), 3 * runs * repeat))  # never one twice

    def uncached() -> None:
        client.read(fd, buf, SMALL, next(blocks) * BLOCK + rng.randrange(BLOCK // SMALL) * SMALL)
    progress("uncached random 4 KiB reads")
    median = side_by_side({"floor": lambda: floor.read(rng.randrange(size // SMALL) * SMALL,
                                                      SMALL),
                           "pfs": uncached}, 3 * runs, repeat)
    ratio = median["pfs"] / median["floor"]
    verdict("uncached random 4 KiB read, token held", median["pfs"], median["floor"], "<= 1.3x",
            ratio <= 1.3, f"{ratio:.2f}x time")

    region = 16 * MiB
    chunk = 256 << 10  # below the streaming size, so that the cache keeps what it reads
    for offset in range(0, region, chunk):
        client.read(fd, bytearray(chunk), chunk, offset)
    with tempfile.NamedTemporaryFile() as local:
        local.write(os.urandom(region))
        local.flush()
        os.preadv(local.fileno(), [bytearray(region)], 0)  # in the page cache
        view = [memoryview(buf)]
        offsets = [rng.randrange(region // SMALL) * SMALL for _ in range(4096)]
        mine, theirs = iter(offsets * 1000), iter(offsets * 1000)
        progress("cached random 4 KiB reads")
        median = side_by_side({
            "floor": lambda: os.preadv(local.fileno(), view, next(theirs)),
            "pfs": lambda: client.read(fd, buf, SMALL, next(mine))}, 3 * runs, 2000)
    ratio = median["pfs"] / median["floor"]
    verdict("cached random 4 KiB read vs os.preadv", median["pfs"], median["floor"], "<= 2x",
            ratio <= 2, f"{ratio:.2f}x time")
    client.close(fd)
    client.finish(client.initialize())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MiB
    progress("starting a cluster (pfs up, shipped defaults) and 4 bare servers")
    with temporary_cluster(**SHIPPED) as cluster, Floor(4) as floor:
        print(f"PFS's read and write paths against their floors ({os.cpu_count()} cores), "
              f"median of {args.runs} alternated runs")
        name = bulk(cluster, floor, args.runs, size)
        small(cluster, floor, args.runs, name, size)


if __name__ == "__main__":
    main()
