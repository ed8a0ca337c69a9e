"""PFS against the bare thing it is built on, side by side in one run (medians of --runs).

    python bench/bench_cluster.py [--runs 3] [--size-mib 256] [--only NAME]

Starts a cluster (`pfs up`, shipped defaults: 4 fileservers, 64 KiB blocks, 1 MiB stripe units,
1024-block client cache) and 4 bare raw-bytes gRPC servers (bench/floor.py), and measures:

- bulk: a sequential write of --size-mib in 4 MiB calls, through close, with the default cache
  and with the cache off; a cold sequential read of it; each against the same calls striped by a
  bare client over the bare servers (target: PFS >= 0.8 of the floor);
- namespace: create, open, close and delete against one bare unary call (target >= 0.5);
- small: an uncached 4 KiB random read against one bare 4 KiB read from the server holding those
  bytes (target >= 0.7), and a cached 4 KiB re-read against os.preadv of a page-cached local
  file (target >= 0.33);
- parallel: 4 threads of one client reading 4 files against one thread, in 64 KiB calls (target
  >= 1.5x: a thread waits for each call, so threads overlap) and in 4 MiB calls (no target: one
  thread keeps this machine's 2 cores busy already); and 4 client processes writing disjoint
  quarters of one file against a file each (target >= 0.9).

A ratio is PFS's speed over the floor's: 1.0 is as fast as the bare thing.
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
from clusters import SHIPPED, Cluster, RemoteClient, temporary_cluster  # noqa: E402
from floor import Floor, run_in_threads  # noqa: E402

CALL = 4 * MiB
SMALL = 4096


def row(what: str, pfs_seconds: float, floor_seconds: float, target: float | None,
        detail: str = "") -> None:
    ratio = floor_seconds / pfs_seconds
    verdict = "" if target is None else ("  ok" if ratio >= target else f"  below {target}")
    print(f"  {what:<46} {pfs_seconds * 1e3:10.3f} ms  floor {floor_seconds * 1e3:9.3f} ms "
          f" ratio {ratio:5.2f}{verdict} {detail}")


def bulk(cluster: Cluster, floor: Floor, runs: int, size: int) -> None:
    """Each round writes and reads with the floor and with each PFS configuration in turn, so
    that they share the machine's state (page cache, other load); a first round warms up."""
    print(f"bulk: {size // MiB} MiB in 4 MiB calls, width 4 (ratio: against bare striped gRPC)")
    data = memoryview(os.urandom(size))
    buf = bytearray(size)
    configs = {"default cache": 1024, "cache off": 0}
    writers = {label: cluster.client(cache_blocks=blocks) for label, blocks in configs.items()}
    readers = {label: cluster.client(cache_blocks=blocks) for label, blocks in configs.items()}
    times: dict[str, list[float]] = {}

    def timed(what: str, action, counted: bool) -> None:
        started = time.perf_counter()
        action()
        if counted:
            times.setdefault(what, []).append(time.perf_counter() - started)

    def pfs_write(client, name: str) -> None:
        client.create(name, 4)
        fd = client.open(name, pfs.PFS_READ_WRITE)
        for offset in range(0, size, CALL):
            client.write(fd, data[offset:offset + CALL], CALL, offset)
        client.close(fd)

    def pfs_read(client, name: str) -> None:
        fd = client.open(name, pfs.PFS_READ)
        for offset in range(0, size, CALL):
            client.read(fd, memoryview(buf)[offset:offset + CALL], CALL, offset)
        client.close(fd)  # drops what it cached: every round reads cold

    for round_ in range(runs + 1):
        counted = round_ > 0
        progress(f"round {round_} of {runs}" + ("" if counted else " (warming up)"))
        timed("floor write", lambda: [floor.write_striped(data[o:o + CALL], o)
                                      for o in range(0, size, CALL)], counted)
        timed("floor read", lambda: [floor.read_striped(o, memoryview(buf)[o:o + CALL])
                                     for o in range(0, size, CALL)], counted)
        for label in configs:
            name = fresh_name()
            timed(f"write {label}", lambda: pfs_write(writers[label], name), counted)
            timed(f"read {label}", lambda: pfs_read(readers[label], name), counted)
            assert buf == data, "read back different bytes"
            writers[label].delete(name)
    median = {what: sorted(t)[len(t) // 2] for what, t in times.items()}
    for label in configs:
        row(f"sequential write + close, {label}", median[f"write {label}"],
            median["floor write"], 0.8, f"({size / MiB / median[f'write {label}']:.0f} MiB/s)")
        row(f"cold sequential read, {label}", median[f"read {label}"], median["floor read"],
            0.8, f"({size / MiB / median[f'read {label}']:.0f} MiB/s)")
    for client in [*writers.values(), *readers.values()]:
        client.finish(client.initialize())


def namespace(cluster: Cluster, floor: Floor, runs: int) -> None:
    print("namespace calls (ratio: against one bare unary call)")
    client = cluster.client()
    names = [fresh_name() for _ in range(runs * 100)]
    it = iter(names)
    timings = {"create": [], "open": [], "close": [], "delete": []}

    def cycle() -> None:
        name = next(it)
        for step, action in (("create", lambda: client.create(name, 4)),
                             ("open", lambda: client.open(name, pfs.PFS_READ_WRITE)),
                             ("close", lambda: client.close(fd)),
                             ("delete", lambda: client.delete(name))):
            started = time.perf_counter()
            result = action()
            timings[step].append(time.perf_counter() - started)
            if step == "open":
                fd = result
    bare = side_by_side({"floor": floor.echo, "cycle": cycle}, runs, repeat=100)["floor"]
    for step, times in timings.items():
        row(step, sorted(times)[len(times) // 2], bare, 0.5)
    client.finish(client.initialize())


def small(cluster: Cluster, floor: Floor, runs: int) -> None:
    print("small reads, 4 KiB (ratio: against a bare 4 KiB read; os.preadv of a cached file)")
    region = 16 * MiB
    data = os.urandom(region)
    rng = random.Random(7)
    offsets = [rng.randrange(region // SMALL) * SMALL for _ in range(2000)]
    floor.write_striped(memoryview(data), 0)
    buf = bytearray(SMALL)
    name = fresh_name()
    writer = cluster.client()
    writer.create(name, 4)
    fd = writer.open(name, pfs.PFS_READ_WRITE)
    writer.write(fd, data, region, 0)
    writer.close(fd)
    with tempfile.NamedTemporaryFile() as local:
        local.write(data)
        local.flush()
        view = [memoryview(buf)]
        floors = {0: ("uncached 4 KiB random read", 0.7, 200,
                      lambda: floor.read(rng.randrange(region // SMALL) * SMALL, SMALL)),
                  1024: ("cached 4 KiB random re-read", 0.33, 2000,
                         lambda: os.preadv(local.fileno(), view,
                                           rng.randrange(region // SMALL) * SMALL))}
        for cache_blocks, (what, target, repeat, bare) in floors.items():
            client = cluster.client(cache_blocks=cache_blocks)
            fd = client.open(name, pfs.PFS_READ)
            chunk = 256 << 10  # below the streaming size, so that the cache keeps what it reads
            for offset in range(0, region, chunk):
                client.read(fd, bytearray(chunk), chunk, offset)
            it = iter(offsets * 1000)
            median = side_by_side({"floor": bare,
                                   "pfs": lambda: client.read(fd, buf, SMALL, next(it))},
                                  runs * 3, repeat)
            row(what, median["pfs"], median["floor"], target)
            client.close(fd)
            client.finish(client.initialize())
    writer.delete(name)
    writer.finish(writer.initialize())


def parallel(cluster: Cluster, floor: Floor, runs: int) -> None:
    print("parallel work (ratio: against one thread; against a file per process)")
    size = 32 * MiB
    client = cluster.client(cache_blocks=0)
    names = [fresh_name() for _ in range(4)]
    data = os.urandom(size)
    floor.write_striped(memoryview(data), 0)
    for name in names:
        client.create(name, 4)
        fd = client.open(name, pfs.PFS_READ_WRITE)
        client.write(fd, data, size, 0)
        client.close(fd)
    fds = [client.open(name, pfs.PFS_READ) for name in names]
    bufs = [bytearray(size) for _ in names]
    for call, target in ((64 << 10, 1.5), (CALL, None)):
        length = size if call == CALL else size // 8  # as many calls as is quick

        def read_file(k: int) -> None:
            for offset in range(0, length, call):
                client.read(fds[k], memoryview(bufs[k])[offset:offset + call], call, offset)

        def bare_read_file(k: int) -> None:  # the same calls to the bare servers
            for offset in range(0, length, call):
                if call == CALL:
                    floor.read_striped(offset, memoryview(bufs[k])[offset:offset + call])
                else:
                    floor.read(offset, call)
        median = side_by_side({
            "one": lambda: [read_file(k) for k in range(4)],
            "four": lambda: run_in_threads([lambda k=k: read_file(k) for k in range(4)]),
            "bare one": lambda: [bare_read_file(k) for k in range(4)],
            "bare four": lambda: run_in_threads([lambda k=k: bare_read_file(k)
                                                 for k in range(4)])}, runs)
        row(f"4 threads reading 4 files, {call >> 10} KiB calls, vs 1", median["four"],
            median["one"], target)
        row("  the same calls to bare gRPC, 4 threads vs 1", median["bare four"],
            median["bare one"], None)
    for fd in fds:
        client.close(fd)
    for name in names:
        client.delete(name)

    quarter = 32 * MiB
    workers = [RemoteClient(cluster, cache_blocks=1024) for _ in range(4)]
    try:
        def write_all(targets) -> float:
            started = time.perf_counter()
            for worker, (name, offset) in zip(workers, targets):
                worker.send("open_write_close", name, ord("w"), quarter, offset)
            for worker in workers:
                assert worker.receive(timeout=300) == 0
            return time.perf_counter() - started
        shared_times, own_times = [], []
        for _ in range(runs):
            shared = fresh_name()
            client.create(shared, 4)
            fd = client.open(shared, pfs.PFS_READ_WRITE)
            client.ftruncate(fd, 4 * quarter)  # IOR's shared file: each writes its quarter
            client.close(fd)
            shared_times.append(write_all([(shared, k * quarter) for k in range(4)]))
            own = [fresh_name() for _ in range(4)]
            for name in own:
                client.create(name, 4)
            own_times.append(write_all([(name, 0) for name in own]))
            for name in [shared, *own]:
                client.delete(name)
        row("4 processes writing a shared file, vs a file each", sorted(shared_times)[runs // 2],
            sorted(own_times)[runs // 2], 0.9)
    finally:
        for worker in workers:
            worker.close()
    client.finish(client.initialize())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--only", choices=["bulk", "namespace", "small", "parallel"])
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults) and 4 bare servers")
    with temporary_cluster(**SHIPPED) as cluster, Floor(4) as floor:
        print(f"PFS against bare gRPC on this machine ({os.cpu_count()} cores), "
              f"median of {args.runs} runs")
        if args.only in (None, "bulk"):
            bulk(cluster, floor, args.runs, args.size_mib * MiB)
        if args.only in (None, "namespace"):
            namespace(cluster, floor, args.runs)
        if args.only in (None, "small"):
            small(cluster, floor, args.runs)
        if args.only in (None, "parallel"):
            parallel(cluster, floor, args.runs)


if __name__ == "__main__":
    main()
