"""Micro-benchmark of the C core against the pure-Python reference.

A 4 MiB buffer is striped in 64 KiB stripe units (block_size 4096 x stripe_blocks 16) over 4
servers: stripe math, scatter into per-server buffers and gather back, in C (pfs._native) and in
the reference (pfs._native.reference, which moves one byte at a time), measured side by side in
one run, median of --runs. A plain copy of the same 4 MiB (bytes(bytearray)) is the floor.

Then the cache's hit path: BlockTable.read and BlockTable.write of a 4 KiB and a 4 MiB range
that is all cached (64 KiB blocks in a 128-block cache), passed the same block memory and flag
arrays every call as the cache does, against a plain memoryview slice copy of the same bytes.

Then CRC32C of 4 KiB and 4 MiB buffers: the implementation this CPU gets (crc32c) and the
portable tables (crc32c_sw), and a 4 MiB buffer's CRCs per 4 KiB unit (unit_crcs, verify_units),
each run timed next to a memoryview copy of the same bytes, in turns, median of --runs.

Run against the installed package: python bench/bench_native.py [--runs 7]
[--only stripes|hits|crc32c]
"""
import argparse
import os
import statistics
import time
from typing import Callable

from pfs._native import BlockTable, checksum, plan_stripes
from pfs._native import reference as ref
from pfs.cli.bench import side_by_side

SIZE = 4 << 20
BLOCK_SIZE, STRIPE_BLOCKS, WIDTH = 4096, 16, 4
OFFSET = 0


def median_seconds(fn: Callable[[], object], runs: int, label: str) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        print(f"  {label}: run {i + 1}/{runs} {times[-1] * 1e3:9.3f} ms", flush=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per variant (median is shown)")
    parser.add_argument("--only", choices=["stripes", "hits", "crc32c"],
                        help="run one part (default: all)")
    args = parser.parse_args()
    parts = {"stripes": bench_stripes, "hits": bench_hits, "crc32c": bench_crc32c}
    for name, part in parts.items():
        if args.only in (None, name):
            part(args.runs)
            print()


def bench_stripes(runs: int) -> None:
    """Stripe math, scatter and gather of 4 MiB, in C and in the reference."""
    src = os.urandom(SIZE)
    layout = (OFFSET, SIZE, BLOCK_SIZE, STRIPE_BLOCKS, WIDTH)
    print(f"{SIZE >> 20} MiB, block_size={BLOCK_SIZE}, stripe_blocks={STRIPE_BLOCKS} "
          f"({BLOCK_SIZE * STRIPE_BLOCKS >> 10} KiB stripe units), width={WIDTH}, "
          f"{runs} runs each", flush=True)

    staging = bytearray(src)
    dst = bytearray(SIZE)

    def c_plan():
        return plan_stripes(*layout)

    plan = c_plan()
    bufs = plan.scatter(src)

    def c_all():
        p = plan_stripes(*layout)
        p.gather(p.scatter(src), dst)

    def ref_all():
        ref.stripe_segments(*layout)
        ref.gather(*layout, ref.scatter(*layout, src))

    # The C results are checked against the reference before anything is timed.
    assert bufs == ref.scatter(*layout, src)
    plan.gather(bufs, dst)
    assert dst == src

    # (variant, median seconds, whether it moves the 4 MiB, so that GiB/s means something)
    rows = [
        ("memcpy floor: bytes(bytearray)", median_seconds(lambda: bytes(staging), runs,
                                                          "memcpy"), True),
        ("C plan_stripes", median_seconds(c_plan, runs, "C plan"), False),
        ("C scatter", median_seconds(lambda: plan.scatter(src), runs, "C scatter"), True),
        ("C gather", median_seconds(lambda: plan.gather(bufs, dst), runs, "C gather"), True),
        ("C plan + scatter + gather", median_seconds(c_all, runs, "C total"), True),
        ("reference plan + scatter + gather", median_seconds(ref_all, runs, "reference"),
         True),
    ]
    floor, c_total, ref_total = rows[0][1], rows[4][1], rows[5][1]

    print()
    print(f"{'variant':36} {'median ms':>11} {'GiB/s':>8}")
    for name, seconds, moves_data in rows:
        rate = f"{SIZE / seconds / 2**30:8.2f}" if moves_data else f"{'-':>8}"
        print(f"{name:36} {seconds * 1e3:11.3f} {rate}")
    print()
    print(f"speed-up, C over reference: {ref_total / c_total:,.0f}x (target >= 10x)")
    print(f"C scatter + gather vs two plain copies: {c_total / (2 * floor):.2f}x the floor")


def bench_hits(runs: int) -> None:
    """BlockTable.read and .write of cached ranges (one C call each: lookups, LRU touches, one
    memmove per block), the cache's same long-lived buffers every call, against a memoryview copy
    of the same bytes; the 4 KiB cases are timed 10000 calls at a time."""
    B, capacity, reps = 64 << 10, 128, 10000
    bt = BlockTable(capacity)
    for block in range(capacity):
        bt.insert(1, block)
    memory, ready = bytearray(os.urandom(capacity * B)), bytearray([1] * capacity)
    dirty = bytearray(capacity)
    mem = memoryview(memory)
    rows = []
    for size, offset, n in ((4 << 10, 3 * B + 100, reps), (4 << 20, 0, 1)):
        dst, src = bytearray(size), os.urandom(size)
        out, inp = memoryview(dst), memoryview(src)
        nblocks = -(-size // B)
        assert bt.read(1, offset, size, memory, B, ready, dst) == (size, nblocks)
        assert dst == memory[offset:offset + size]
        assert bt.write(1, offset, size, memory, B, ready, dirty, src) == (size, nblocks)
        assert memory[offset:offset + size] == src

        def c_read(size=size, offset=offset, n=n, dst=dst):
            for _ in range(n):
                bt.read(1, offset, size, memory, B, ready, dst)

        def c_write(size=size, offset=offset, n=n, src=src):
            for _ in range(n):
                bt.write(1, offset, size, memory, B, ready, dirty, src)

        def view_copy(size=size, offset=offset, n=n, out=out):
            for _ in range(n):
                out[:] = mem[offset:offset + size]

        def view_copy_in(size=size, offset=offset, n=n, inp=inp):
            for _ in range(n):
                mem[offset:offset + size] = inp

        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        for name, fn in ((f"C BlockTable.read, {label} hit", c_read),
                         (f"memoryview copy out, {label}", view_copy),
                         (f"C BlockTable.write, {label} hit", c_write),
                         (f"memoryview copy in, {label}", view_copy_in)):
            rows.append((name, size, median_seconds(fn, runs, name) / n))
    print()
    print(f"hits (block_size {B >> 10} KiB, {capacity} blocks cached), per call:")
    print(f"{'variant':36} {'median us':>11} {'GiB/s':>8}")
    for name, size, seconds in rows:
        print(f"{name:36} {seconds * 1e6:11.3f} {size / seconds / 2**30:8.2f}")


def bench_crc32c(runs: int) -> None:
    """CRC32C throughput against a memoryview copy of the same bytes, the variants of a size taking
    turns in each run (pfs.cli.bench.side_by_side); 4 KiB calls are timed 10000 at a time, 4 MiB ones
    50 at a time."""
    unit = 4 << 10
    fast, table = f"crc32c ({checksum.IMPLEMENTATION})", "crc32c_sw (slicing-by-8)"
    print(f"CRC32C, {runs} runs, the variants of a size in turns:")
    print(f"{'variant':36} {'median us':>11} {'GB/s':>8}")
    medians = {}
    for size, calls in ((4 << 10, 10000), (4 << 20, 50)):
        src, dst = os.urandom(size), memoryview(bytearray(size))
        crcs = checksum.unit_crcs(src, unit)
        # The C results are checked before anything is timed (the reference is quick on 4 KiB).
        assert checksum.crc32c(src) == checksum.crc32c_sw(src)
        assert size > unit or checksum.crc32c(src) == ref.crc32c(src)
        assert checksum.verify_units(src, unit, 0, crcs) == -1

        def memcpy(src=src, dst=dst):
            dst[:] = src

        variants = {"memcpy (memoryview copy)": memcpy,
                    fast: lambda src=src: checksum.crc32c(src),
                    table: lambda src=src: checksum.crc32c_sw(src)}
        if size > unit:
            variants[f"unit_crcs, {len(crcs)} units"] = \
                lambda src=src: checksum.unit_crcs(src, unit)
            variants[f"verify_units, {len(crcs)} units"] = \
                lambda src=src, crcs=crcs: checksum.verify_units(src, unit, 0, crcs)
        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        for name, seconds in side_by_side(variants, runs, repeat=calls).items():
            medians[label, name] = seconds
            print(f"{label} {name:30} {seconds * 1e6:11.3f} {size / seconds / 1e9:8.2f}")
    print()
    memcpy_4m = medians["4 MiB", "memcpy (memoryview copy)"]
    for name in (fast, table, "unit_crcs, 1024 units"):
        print(f"4 MiB {name} takes {medians['4 MiB', name] / memcpy_4m:.2f}x a 4 MiB memcpy")

if __name__ == "__main__":
    main()
