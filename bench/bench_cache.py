"""The client cache against no cache, side by side in one run (medians).

    python bench/bench_cache.py [--runs 5]

Starts its own cluster (`pfs up`, shipped defaults: 64 KiB blocks, 1 MiB stripe units, 4
fileservers) and measures, per 4 KiB operation:
- random re-reads of a 16 MiB region that is already cached (1024 cache blocks), against the
  same reads by a client whose cache is disabled (PFS_CACHE_BLOCKS=0);
- sequential writes to a private new file, with and without the cache (the cached run includes
  the close that writes everything back).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import sys

import pfs
from pfs.cli.bench import MiB, ScratchFile, median_seconds, progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, Cluster, temporary_cluster  # noqa: E402  (the tests' launcher)

OP = 4096
REGION = 16 * MiB


def random_rereads(cluster: Cluster, runs: int, count: int) -> tuple[float, float]:
    offsets = [random.Random(7).randrange(0, REGION - OP) for _ in range(count)]
    buf = bytearray(OP)
    per_op = {}
    for blocks in (1024, 0):
        client = cluster.client(cache_blocks=blocks)
        with ScratchFile(client, REGION, 4) as f:
            whole = bytearray(REGION)
            f.read_all(whole)  # warm the cache (and check the bytes once)
            assert whole == f.data

            def reread() -> None:
                for offset in offsets:
                    client.read(f.fd, buf, OP, offset)
            progress(f"{count} random 4 KiB re-reads, cache of {blocks} blocks")
            per_op[blocks] = median_seconds(reread, runs) / count
        client.finish(client.initialize())
    return per_op[1024], per_op[0]


def sequential_writes(cluster: Cluster, runs: int, size: int) -> tuple[float, float]:
    data = os.urandom(OP)
    per_op = {}
    for blocks in (1024, 0):
        client = cluster.client(cache_blocks=blocks)

        def write_file() -> None:
            name = f"seq-{os.urandom(6).hex()}"
            client.create(name, 4)
            fd = client.open(name, pfs.PFS_READ_WRITE)
            for offset in range(0, size, OP):
                client.write(fd, data, OP, offset)
            client.close(fd)
            client.delete(name)
        progress(f"{size // OP} sequential 4 KiB writes and a close, cache of {blocks} blocks")
        per_op[blocks] = median_seconds(write_file, runs) / (size // OP)
        client.finish(client.initialize())
    return per_op[1024], per_op[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--write-mib", type=int, default=8)
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults)")
    with temporary_cluster(**SHIPPED) as cluster:
        cached, uncached = random_rereads(cluster, args.runs, args.reads)
        w_cached, w_uncached = sequential_writes(cluster, args.runs, args.write_mib * MiB)
    print(f"client cache vs no cache ({os.cpu_count()} cores), median of {args.runs} runs, "
          "per 4 KiB operation")
    print(f"  random re-reads of a cached 16 MiB region: {cached * 1e6:8.1f} us cached, "
          f"{uncached * 1e6:8.1f} us uncached: x{uncached / cached:.1f}")
    print(f"  sequential writes to a private file:       {w_cached * 1e6:8.1f} us cached, "
          f"{w_uncached * 1e6:8.1f} us uncached: x{w_uncached / w_cached:.1f}")


if __name__ == "__main__":
    main()
