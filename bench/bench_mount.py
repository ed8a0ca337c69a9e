"""`pfs mount` against the Python API on the same cluster, side by side (medians of --runs,
the two alternated in each round so that they share the machine's state).

    python bench/bench_mount.py [--runs 5] [--size-mib 128] [--reads 2000] [--files 1000]

Starts a cluster (`pfs up`, shipped defaults) and mounts it (`pfs mount`, in a temporary
directory), then measures with os.pwrite/os.pread loops on the mount and Client.pwrite/pread
on a Client of this process (fio is not used: both sides run the same Python loop):

- write: --size-mib in 4 MiB calls to a new file, then fsync and close;
- read: the same file read back in 4 MiB calls, from a fresh open (no client-cached blocks);
- random 4 KiB reads: --reads reads at random 4 KiB-aligned offsets of that file.

Then small files, --files of them in a directory of their own, phase by phase: create+write
4 KiB+close, stat, open+read+close, unlink; through the API, the mount and a local directory
(the temporary directory's disk), the three alternated likewise.

A ratio is the mount's speed over the API's (or the local directory's): 1.0 is as fast.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

import pfs
from pfs.metadata import DEFAULT_CACHE_BLOCKS

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from clusters import SHIPPED, temporary_cluster, wait_until  # noqa: E402

MiB, CALL, SMALL = 1 << 20, 4 << 20, 4096


class Api:
    """The Python API's side: one Client, POSIX calls."""

    def __init__(self, client: pfs.Client) -> None:
        self.c = client

    def write(self, name: str, data: memoryview) -> None:
        self.c.create(name, self.c.layout().widest())
        fd = self.c.open(name, pfs.PFS_READ_WRITE)
        for off in range(0, len(data), CALL):
            self.c.pwrite(fd, data[off:off + CALL], min(CALL, len(data) - off), off)
        self.c.fsync(fd)
        self.c.close(fd)

    def read(self, name: str, buf: bytearray, offsets: list[int], size: int) -> None:
        fd = self.c.open(name, pfs.PFS_READ)
        view = memoryview(buf)
        for off in offsets:
            self.c.pread(fd, view[:size], size, off)
        self.c.close(fd)

    # small files (names relative to the root)
    def mkdir(self, name: str) -> None:
        self.c.mkdir(name)

    def create(self, names: list[str], data: bytes) -> None:
        for name in names:
            self.c.create(name, 1)
            fd = self.c.open(name, pfs.PFS_READ_WRITE)
            self.c.pwrite(fd, data, len(data), 0)
            self.c.close(fd)

    def stat(self, names: list[str], data: bytes) -> None:
        for name in names:
            self.c.stat(name)

    def cat(self, names: list[str], data: bytes) -> None:
        buf = bytearray(len(data))
        for name in names:
            fd = self.c.open(name, pfs.PFS_READ)
            self.c.pread(fd, buf, len(buf), 0)
            self.c.close(fd)

    def unlink(self, names: list[str], data: bytes) -> None:
        for name in names:
            self.c.delete(name)


class Mounted:
    """os calls on files below `root`: the mount's side (and a local directory's, for small
    files)."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def write(self, name: str, data: memoryview) -> None:
        fd = os.open(self.root / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        for off in range(0, len(data), CALL):
            os.pwrite(fd, data[off:off + CALL], off)
        os.fsync(fd)
        os.close(fd)

    def read(self, name: str, buf: bytearray, offsets: list[int], size: int) -> None:
        fd = os.open(self.root / name, os.O_RDONLY)
        view = memoryview(buf)
        for off in offsets:
            os.preadv(fd, [view[:size]], off)
        os.close(fd)

    # small files (also the local directory's side)
    def mkdir(self, name: str) -> None:
        os.mkdir(self.root / name)

    def create(self, names: list[str], data: bytes) -> None:
        for name in names:
            fd = os.open(self.root / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
            os.write(fd, data)
            os.close(fd)

    def stat(self, names: list[str], data: bytes) -> None:
        for name in names:
            os.stat(self.root / name)

    def cat(self, names: list[str], data: bytes) -> None:
        for name in names:
            fd = os.open(self.root / name, os.O_RDONLY)
            os.read(fd, len(data))
            os.close(fd)

    def unlink(self, names: list[str], data: bytes) -> None:
        for name in names:
            os.unlink(self.root / name)


SMALL_PHASES = ("create", "stat", "cat", "unlink")


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def measure(sides: dict, runs: int, size: int, reads: int) -> dict[str, dict[str, list[float]]]:
    data = memoryview(os.urandom(size))
    buf = bytearray(CALL)
    sequential = list(range(0, size, CALL))
    rng = random.Random(1)
    scattered = [rng.randrange(size // SMALL) * SMALL for _ in range(reads)]
    times = {phase: {side: [] for side in sides} for phase in ("write", "read", "random")}
    for run in range(runs + 1):  # round 0 warms up
        order = list(sides.items()) if run % 2 else list(reversed(sides.items()))
        for label, side in order:
            name = f"bench-{label}-{run}"
            results = (timed(side.write, name, data),
                       timed(side.read, name, buf, sequential, CALL),
                       timed(side.read, name, buf, scattered, SMALL))
            if run:
                for phase, seconds in zip(times, results):
                    times[phase][label].append(seconds)
    return times


def measure_small(sides: dict, runs: int, files: int) -> dict[str, dict[str, list[float]]]:
    data = os.urandom(SMALL)
    times = {phase: {side: [] for side in sides} for phase in SMALL_PHASES}
    for run in range(runs + 1):  # round 0 warms up
        order = list(sides.items()) if run % 2 else list(reversed(sides.items()))
        for label, side in order:
            side.mkdir(f"small-{label}-{run}")
            names = [f"small-{label}-{run}/f{i}" for i in range(files)]
            for phase in SMALL_PHASES:
                seconds = timed(getattr(side, phase), names, data)
                if run:
                    times[phase][label].append(seconds)
    return times


def report_small(times: dict, files: int) -> None:
    print(f"\n{files} small files (4 KiB)   API            mount          local dir      "
          "mount/API  mount/local")
    for phase, what in zip(SMALL_PHASES, ("create+write+close", "stat", "open+read+close",
                                          "unlink")):
        api, mount, local = (statistics.median(times[phase][s]) for s in ("api", "mount",
                                                                          "local"))
        print(f"{what:<22} {files / api:8.0f} /s     {files / mount:8.0f} /s     "
              f"{files / local:8.0f} /s     {api / mount:6.2f}     {local / mount:6.3f}")


def report(times: dict, size: int, reads: int) -> None:
    print("phase                         API            mount          ratio (mount/API speed)")
    for phase, unit, amount in (("write", "MiB/s", size / MiB), ("read", "MiB/s", size / MiB),
                                ("random", "reads/s", reads)):
        api, mount = (statistics.median(times[phase][s]) for s in ("api", "mount"))
        print(f"{phase + (' 4 KiB' if phase == 'random' else ' 4 MiB'):<22} "
              f"{amount / api:10.1f} {unit:<7} {amount / mount:10.1f} {unit:<7} "
              f"{api / mount:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    with temporary_cluster(**SHIPPED) as cluster, tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "mnt"
        root.mkdir()
        daemon = subprocess.Popen([sys.executable, "-m", "pfs", "mount", str(root)],
                                  env=cluster.env(), cwd=tmp, stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: os.path.ismount(root), 60, "the mount")
            client = cluster.client(cache_blocks=DEFAULT_CACHE_BLOCKS)
            print(f"{args.size_mib} MiB, medians of {args.runs} alternated runs, shipped "
                  "defaults; os.pwrite/os.pread loops on the mount, Client.pwrite/pread in "
                  "Python (fio not used)")
            report(measure({"api": Api(client), "mount": Mounted(root)}, args.runs,
                           args.size_mib * MiB, args.reads), args.size_mib * MiB, args.reads)
            local = pathlib.Path(tmp) / "local"
            local.mkdir()
            report_small(measure_small({"api": Api(client), "mount": Mounted(root),
                                        "local": Mounted(local)}, args.runs, args.files),
                         args.files)
            client.finish(client.initialize())
        finally:
            subprocess.run(["fusermount3", "-u", "-z", str(root)], capture_output=True)
            daemon.wait(timeout=60)


if __name__ == "__main__":
    main()
