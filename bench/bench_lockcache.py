"""What the lock cache (tokens kept after close, pfs/client/lockcache.py) costs and saves on small
files, side by side: the same phases with PFS_LOCK_CACHE_FILES at its default and at 0 (every
token released at close), alternated, medians of `--runs` runs, and their ratio.

    python bench/bench_lockcache.py [--files 200] [--runs 5]

Starts its own cluster (`pfs up`, shipped defaults). Phases, each over `--files` files of 4 KiB:
- write: create, open, write 4 KiB, close (one client);
- reopen: the same client opens, reads 4 KiB and closes each file it wrote (its tokens kept);
- other: a second client opens, reads and closes each (the first's kept tokens are revoked);
- back: the first client reopens, reads and closes each again (the second's are revoked).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import pfs
from pfs.cli.bench import progress
from pfs.metadata import DEFAULT_LOCK_CACHE_FILES

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

PHASES = ("write", "reopen", "other", "back")
DATA = os.urandom(4096)


def client(cluster, kept_files: int) -> pfs.Client:
    os.environ["PFS_LOCK_CACHE_FILES"] = str(kept_files)
    return cluster.client(cache_blocks=1024)


def one_run(cluster, kept_files: int, files: int, tag: str) -> dict[str, float]:
    """{phase: microseconds per file}."""
    first, second = client(cluster, kept_files), client(cluster, kept_files)
    names = [f"lc-{tag}-{i}" for i in range(files)]
    buf = bytearray(len(DATA))

    def write(name: str) -> None:
        first.create(name, 1)
        fd = first.open(name, pfs.PFS_READ_WRITE)
        first.write(fd, DATA, len(DATA), 0)
        first.close(fd)

    def read_with(c: pfs.Client):
        def read(name: str) -> None:
            fd = c.open(name, pfs.PFS_READ)
            c.read(fd, buf, len(buf), 0)
            c.close(fd)
        return read
    timings = {}
    for phase, action in zip(PHASES, (write, read_with(first), read_with(second),
                                      read_with(first))):
        began = time.perf_counter()
        for name in names:
            action(name)
        timings[phase] = (time.perf_counter() - began) / files * 1e6
    assert buf == DATA
    for c in (first, second):
        c.finish(c.initialize())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults)")
    settings = {"kept": DEFAULT_LOCK_CACHE_FILES, "released": 0}
    with temporary_cluster(**SHIPPED) as cluster:
        results: dict[str, list[dict[str, float]]] = {label: [] for label in settings}
        for run in range(args.runs):
            for label, kept_files in settings.items():  # alternated, run by run
                progress(f"run {run + 1} of {args.runs}: tokens {label} at close")
                results[label].append(one_run(cluster, kept_files, args.files,
                                              f"{run}-{label}"))
        print(f"{'phase':<8} {'kept µs':>9} {'released µs':>12} {'kept/released':>14}")
        for phase in PHASES:
            kept, released = (statistics.median(r[phase] for r in results[label])
                              for label in settings)
            print(f"{phase:<8} {kept:>9.0f} {released:>12.0f} {kept / released:>14.2f}")


if __name__ == "__main__":
    main()
