"""The benchmarks' phases over a "target": PFS's Python API (`Api`, a pfs.Client) or os calls on a
directory (`Directory`: a PFS mount, a JuiceFS mount, a local directory).

Rule: a phase makes the same calls in the same order on every target, so that their times
compare; targets take turns within every round (the order reversed every other round, a first
round to warm up, left out) and figures are medians of the rounds.
"""
from __future__ import annotations

import os
import pathlib
import statistics
import time
from typing import Callable

import pfs

MiB, CALL, SMALL = 1 << 20, 4 << 20, 4096
SMALL_PHASES = {"create": "create+write 4 KiB+close", "stat": "stat", "cat": "open+read+close",
                "unlink": "delete"}


class Api:
    """PFS's Python API: one Client, its POSIX-like calls."""

    def __init__(self, client: pfs.Client) -> None:
        self.c = client

    def write(self, name: str, data: memoryview, fsync: bool) -> None:
        """`data` in 4 MiB calls to a new file (the layout's widest), fsync if asked, close."""
        self.c.create(name, self.c.layout().widest())
        fd = self.c.open(name, pfs.PFS_READ_WRITE)
        for off in range(0, len(data), CALL):
            self.c.pwrite(fd, data[off:off + CALL], min(CALL, len(data) - off), off)
        if fsync:
            self.c.fsync(fd)
        self.c.close(fd)

    def open(self, name: str) -> int:
        return self.c.open(name, pfs.PFS_READ)

    def reader(self, fd: int) -> Callable[[memoryview, int], object]:
        return lambda view, off: self.c.pread(fd, view, len(view), off)

    def close(self, fd: int) -> None:
        self.c.close(fd)  # drops what it cached of the file: the next open reads cold

    def delete(self, name: str) -> None:
        self.c.delete(name)

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


class Directory:
    """os calls on files below `root`: a PFS mount's side, JuiceFS's, a local directory's."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    def write(self, name: str, data: memoryview, fsync: bool) -> None:
        fd = os.open(self.root / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        for off in range(0, len(data), CALL):
            os.pwrite(fd, data[off:off + CALL], off)
        if fsync:
            os.fsync(fd)
        os.close(fd)

    def open(self, name: str) -> int:
        fd = os.open(self.root / name, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold: none in the page cache
        return fd

    def reader(self, fd: int) -> Callable[[memoryview, int], object]:
        return lambda view, off: os.preadv(fd, [view], off)

    def close(self, fd: int) -> None:
        os.close(fd)

    def delete(self, name: str) -> None:
        os.unlink(self.root / name)

    # small files
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


def read_at(target, name: str, buf: bytearray, offsets: list[int], size: int) -> None:
    """A fresh open of `name`, `size`-byte reads at `offsets`, close."""
    fd = target.open(name)
    read, view = target.reader(fd), memoryview(buf)[:size]
    for off in offsets:
        read(view, off)
    target.close(fd)


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def rounds(targets: dict, runs: int):
    """(round, label, target) in the order targets take turns: round 0 warms up."""
    for run in range(runs + 1):
        order = list(targets.items()) if run % 2 else list(reversed(targets.items()))
        for label, target in order:
            yield run, label, target


def measure_small(targets: dict, runs: int, files: int) -> dict[str, dict[str, float]]:
    """Median seconds of each small-file phase (`files` files of 4 KiB in a new directory),
    by phase and target."""
    data = os.urandom(SMALL)
    times: dict = {phase: {label: [] for label in targets} for phase in SMALL_PHASES}
    for run, label, target in rounds(targets, runs):
        target.mkdir(f"small-{label}-{run}")
        names = [f"small-{label}-{run}/f{i}" for i in range(files)]
        for phase in SMALL_PHASES:
            seconds = timed(getattr(target, phase), names, data)
            if run:
                times[phase][label].append(seconds)
    return medians(times)


def medians(times: dict) -> dict:
    return {phase: {label: statistics.median(t) for label, t in by.items()}
            for phase, by in times.items()}


def print_small(medians_: dict, files: int, labels: list[str],
                ratios: list[tuple[str, str]], goal: float | None = None) -> None:
    """The small-file rates by target, and the ratios `a/b` of their speeds."""
    print(f"\n{files} small files (4 KiB), per second " + "".join(f"{x:>10}" for x in labels)
          + "".join(f"{a + '/' + b:>14}" for a, b in ratios)
          + (f"   goal >= {goal}" if goal else ""))
    for phase, what in SMALL_PHASES.items():
        row = medians_[phase]
        line = f"  {what:<31}" + "".join(f"{files / row[x]:10.0f}" for x in labels)
        shown = [row[b] / row[a] for a, b in ratios]
        line += "".join(f"{r:14.3f}" for r in shown)
        if goal:
            line += "   " + ("ok" if all(r >= goal for r in shown) else "MISSED")
        print(line)
