"""What the lock cache (tokens kept after close, pfs/client/lockcache.py) costs and saves on small
files, side by side: the same phases with PFS_LOCK_CACHE_FILES at its default and at 0 (every
token released at close), alternated file by file (the machine's load drifts), medians of each
file's time over `--runs` runs, and their ratio.

    python bench/bench_lockcache.py [--files 200] [--runs 3]

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
import sys
import time

import pfs
from pfs.cli.bench import print_ratios, progress
from pfs.metadata import DEFAULT_LOCK_CACHE_FILES

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

PHASES = ("write", "reopen", "other", "back")
SETTINGS = {"kept": DEFAULT_LOCK_CACHE_FILES, "released": 0}
DATA = os.urandom(4096)


def client(cluster, kept_files: int) -> pfs.Client:
    os.environ["PFS_LOCK_CACHE_FILES"] = str(kept_files)  # (read when the session starts)
    return cluster.client(cache_blocks=1024)


def write(c: pfs.Client, name: str) -> None:
    c.create(name, 1)
    fd = c.open(name, pfs.PFS_READ_WRITE)
    c.write(fd, DATA, len(DATA), 0)
    c.close(fd)


def read(c: pfs.Client, name: str) -> None:
    buf = bytearray(len(DATA))
    fd = c.open(name, pfs.PFS_READ)
    c.read(fd, buf, len(buf), 0)
    c.close(fd)
    assert buf == DATA


def one_run(cluster, files: int, run: int, times: dict) -> None:
    """Adds each file's microseconds to times[setting][phase]."""
    pairs = {label: (client(cluster, n), client(cluster, n)) for label, n in SETTINGS.items()}
    for phase in PHASES:
        for i in range(files):
            for label, (first, second) in pairs.items():
                name = f"lc-{run}-{label}-{i}"
                action, who = {"write": (write, first), "reopen": (read, first),
                               "other": (read, second), "back": (read, first)}[phase]
                began = time.perf_counter()
                action(who, name)
                times[label][phase].append((time.perf_counter() - began) * 1e6)
    for pair in pairs.values():
        for c in pair:
            c.finish(c.initialize())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults)")
    times = {label: {phase: [] for phase in PHASES} for label in SETTINGS}
    with temporary_cluster(**SHIPPED) as cluster:
        for run in range(args.runs):
            progress(f"run {run + 1} of {args.runs}")
            one_run(cluster, args.files, run, times)
    print_ratios(times)


if __name__ == "__main__":
    main()
