"""Measuring a running cluster: `pfs bench`, and the pieces the scripts in bench/ share.

Invariant: machines are shared and noisy, so every figure is a median of several runs, and
comparisons are ratios of things measured side by side in one run; scratch files are deleted.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
import uuid
from typing import Callable

from pfs.client import PFS_READ_WRITE, Client

from .arguments import add_command, at_least_one, metaserver
from .console import Console

MiB = 1 << 20


def side_by_side(actions: dict[str, Callable[[], object]], runs: int,
                 repeat: int = 1) -> dict[str, float]:
    """The median over `runs` of the time each action takes (averaged over `repeat` calls); the
    actions take turns within each run, so that they share the machine's state and load."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(runs):
        for name, action in actions.items():
            start = time.perf_counter()
            for _ in range(repeat):
                action()
            times[name].append((time.perf_counter() - start) / repeat)
    return {name: statistics.median(t) for name, t in times.items()}


def print_ratios(times: dict[str, dict[str, list[float]]]) -> None:
    """Prints each phase's median under two settings (`times[setting][phase]`, microseconds),
    and the first's over the second's."""
    first, second = times
    phases = list(times[first])
    w = max(len("phase"), *(len(p) for p in phases))
    print(f"{'phase':<{w}} {first + ' µs':>12} {second + ' µs':>12} {first + '/' + second:>16}")
    for phase in phases:
        a, b = (statistics.median(times[label][phase]) for label in (first, second))
        print(f"{phase:<{w}} {a:>12.0f} {b:>12.0f} {a / b:>16.2f}")


def median_seconds(action: Callable[[], object], runs: int, repeat: int = 1) -> float:
    """The median over `runs` of the time one `action()` takes (averaged over `repeat` calls)."""
    return side_by_side({"": action}, runs, repeat)[""]


def fresh_name() -> str:
    """A unique name for a scratch file."""
    return f"bench-{uuid.uuid4().hex[:10]}"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


class ScratchFile:
    """A uniquely named file of `size` random bytes, deleted on exit."""

    def __init__(self, client: Client, size: int, width: int, chunk: int = 4 * MiB) -> None:
        self.client, self.size, self.width, self.chunk = client, size, width, chunk
        self.name = fresh_name()
        self.data = os.urandom(size)

    def __enter__(self) -> "ScratchFile":
        self.client.create(self.name, self.width)
        self.fd = self.client.open(self.name, PFS_READ_WRITE)
        self.write_all()
        return self

    def write_all(self) -> None:
        """Writes the whole file, through close: writes return before they are stored."""
        view = memoryview(self.data)
        for offset in range(0, self.size, self.chunk):
            piece = view[offset:offset + self.chunk]
            self.client.write(self.fd, piece, len(piece), offset)
        self.client.close(self.fd)
        self.fd = self.client.open(self.name, PFS_READ_WRITE)

    def read_all(self, buf: bytearray) -> None:
        view = memoryview(buf)
        for offset in range(0, self.size, self.chunk):
            self.client.read(self.fd, view[offset:offset + self.chunk],
                             min(self.chunk, self.size - offset), offset)

    def __exit__(self, *exc: object) -> None:
        self.client.close(self.fd)
        self.client.delete(self.name)


def latencies(client: Client, f: ScratchFile, rounds: int) -> None:
    """One line each: a create + open + close + delete cycle (of files as wide as `f`), and
    4 KiB random reads of the open scratch file `f`."""
    names = iter([fresh_name() for _ in range(rounds * 20)])

    def cycle() -> None:
        name = next(names)
        client.create(name, f.width)
        client.close(client.open(name, PFS_READ_WRITE))
        client.delete(name)
    per_call = median_seconds(cycle, rounds, repeat=20) / 4
    print(f"  create, open, close, delete: {per_call * 1e3:6.2f} ms per call")
    rng = random.Random(1)
    buf = bytearray(4096)
    read = median_seconds(lambda: client.read(f.fd, buf, 4096, rng.randrange(f.size - 4096)),
                          rounds, repeat=200)
    print(f"  4 KiB random read, cache off: {read * 1e6:6.0f} us")


def run(size_mib: int, rounds: int, metaserver: str | None = None) -> int:
    """`pfs bench`: write and read a file of `size_mib` MiB (at least 1) striped over 1 server
    and over all of them, `rounds` times (at least 1), then the latency of namespace calls and
    of small reads."""
    if size_mib < 1 or rounds < 1:
        raise ValueError(f"pfs bench needs at least 1 MiB and 1 round, not {size_mib} MiB and "
                         f"{rounds} rounds")
    # The cache off: measure the wire and the fileservers, not the cache.
    client = Client(metaserver, cache_blocks=0)
    client.initialize()
    try:
        servers = len(client.fileservers())
        size = size_mib * MiB
        buf = bytearray(size)
        print(f"pfs bench: {size_mib} MiB in 4 MiB calls, median of {rounds}, "
              f"client cache off, metaserver {client.metaserver}")
        widths = sorted({1, servers})
        progress(f"stripe widths {widths}: writing and reading {size_mib} MiB x {rounds}, "
                 "taking turns")
        with contextlib.ExitStack() as stack:
            files = {w: stack.enter_context(ScratchFile(client, size, w)) for w in widths}
            actions: dict[str, Callable[[], object]] = {}
            for width, f in files.items():
                actions[f"write {width}"] = f.write_all
                actions[f"read {width}"] = lambda f=f: f.read_all(buf)
            median = side_by_side(actions, rounds)
            for f in files.values():
                f.read_all(buf)
                if buf != f.data:
                    print("pfs bench: read back different bytes!", file=sys.stderr)
                    return 1
            for width in widths:
                write, read = median[f"write {width}"], median[f"read {width}"]
                print(f"  stripe width {width}: write {size / MiB / write:8.1f} MiB/s   "
                      f"read {size / MiB / read:8.1f} MiB/s")
            if servers > 1:
                print(f"  width {servers} vs width 1: "
                      f"write x{median['write 1'] / median[f'write {servers}']:.2f}, "
                      f"read x{median['read 1'] / median[f'read {servers}']:.2f}")
            progress("latency of namespace calls and 4 KiB reads")
            latencies(client, files[servers], rounds)  # the full-width file, still open
    finally:
        client.finish(client.initialize())
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    return run(args.size_mib, args.rounds, metaserver())


def register(sub) -> None:
    """bench."""
    p = add_command(sub, "bench", "measure striped read/write throughput", """\
Write (through close) and read a scratch file at stripe width 1 and at full width, and show the
throughput; then the latency of create, open, close and delete, and of a 4 KiB random read
(each a median of several rounds; the client cache is off). Scratch files are deleted
afterwards.""", cmd_bench)
    p.add_argument("--size-mib", type=at_least_one(int), default=64, metavar="M",
                   help="size of the scratch file in MiB, at least 1 (default %(default)s)")
    p.add_argument("--rounds", type=at_least_one(int), default=5, metavar="N",
                   help="runs per measurement; the median is shown (default %(default)s)")
