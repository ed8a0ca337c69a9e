"""Measuring a running cluster: `pfs bench`, and the pieces the scripts in bench/ share.

Machines are shared and noisy, so every figure is a median of several runs, and comparisons are
ratios of things measured side by side in one run.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from typing import Callable

from .client import PFS_READ_WRITE, Client

MiB = 1 << 20


def median_seconds(action: Callable[[], object], runs: int, repeat: int = 1) -> float:
    """The median over `runs` of the time one `action()` takes (averaged over `repeat` calls)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(repeat):
            action()
        times.append((time.perf_counter() - start) / repeat)
    return statistics.median(times)


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


class ScratchFile:
    """A uniquely named file of `size` random bytes, deleted on exit."""

    def __init__(self, client: Client, size: int, width: int, chunk: int = 4 * MiB) -> None:
        self.client, self.size, self.width, self.chunk = client, size, width, chunk
        self.name = f"bench-{uuid.uuid4().hex[:10]}"
        self.data = os.urandom(size)

    def __enter__(self) -> "ScratchFile":
        self.client.create(self.name, self.width)
        self.fd = self.client.open(self.name, PFS_READ_WRITE)
        self.write_all()
        return self

    def write_all(self) -> None:
        view = memoryview(self.data)
        for offset in range(0, self.size, self.chunk):
            piece = view[offset:offset + self.chunk]
            self.client.write(self.fd, piece, len(piece), offset)

    def read_all(self, buf: bytearray) -> None:
        view = memoryview(buf)
        for offset in range(0, self.size, self.chunk):
            self.client.read(self.fd, view[offset:offset + self.chunk],
                             min(self.chunk, self.size - offset), offset)

    def __exit__(self, *exc: object) -> None:
        self.client.close(self.fd)
        self.client.delete(self.name)


def run(size_mib: int, rounds: int) -> int:
    """`pfs bench`: write and read a file striped over 1 server and over all of them."""
    client = Client(cache_blocks=0)  # measure the wire and the fileservers, not the cache
    client.initialize()
    try:
        servers = len(client.fileservers())
        size = size_mib * MiB
        buf = bytearray(size)
        results = {}
        print(f"pfs bench: {size_mib} MiB in 4 MiB calls, median of {rounds}, "
              f"client cache off, metaserver {client.metaserver}")
        for width in sorted({1, servers}):
            progress(f"width {width}: writing and reading {size_mib} MiB x {rounds}")
            with ScratchFile(client, size, width) as f:
                write = median_seconds(f.write_all, rounds)
                read = median_seconds(lambda: f.read_all(buf), rounds)
                if bytes(buf) != f.data:
                    print("pfs bench: read back different bytes!", file=sys.stderr)
                    return 1
            results[width] = (write, read)
            print(f"  stripe width {width}: write {size / MiB / write:8.1f} MiB/s   "
                  f"read {size / MiB / read:8.1f} MiB/s")
        if servers > 1:
            (w1, r1), (wn, rn) = results[1], results[servers]
            print(f"  width {servers} vs width 1: write x{w1 / wn:.2f}, read x{r1 / rn:.2f}")
    finally:
        client.finish(client.initialize())
    return 0
