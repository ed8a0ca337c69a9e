"""What the write receipts (pfs/protocol/receipts.py) save at a close or fsync that grows a
file, side by side: the same calls with the receipts shown to the metaserver and without (it
then asks the fileserver for the object's length, as before receipts), alternated file by file
(the machine's load drifts), medians of each call's time over `--runs` runs, and their ratio.

    python bench/bench_receipts.py [--files 100] [--runs 3]

Starts its own cluster (`pfs up`, shipped defaults). Phases, each over `--files` files:
- close: create, open, write 4 KiB; the close alone is timed (it waits for the write, which
  is written behind);
- close, stored: the same, the write stored before the close is timed (the Close call alone);
- fsync: create, open, write 4 KiB; the fsync alone is timed (then the file is closed);
- wide close: create 4 wide, open, write 1 MiB; the close alone is timed.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import pfs
from pfs.cli.bench import print_ratios, progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

PHASES = {"close": (1, 4096), "close, stored": (1, 4096), "fsync": (1, 4096),
          "wide close": (4, 1 << 20)}
SETTINGS = ("shown", "asked")
DATA = os.urandom(1 << 20)


def timed(c: pfs.Client, name: str, phase: str, shown: bool) -> float:
    """Microseconds of the phase's timed call on a new file."""
    width, size = PHASES[phase]
    c.create(name, width)
    fd = c.open(name, pfs.PFS_READ_WRITE)
    if not shown:  # an older client's: no receipts
        c._fds[fd].receipts.showing = lambda recipe, end: []
    c.write(fd, DATA, size, 0)
    if phase == "close, stored":
        c._state.cache.flush(c._fds[fd])
        c._state.dataplane.settle(c._fds[fd])
    began = time.perf_counter()
    c.fsync(fd) if phase == "fsync" else c.close(fd)
    took = (time.perf_counter() - began) * 1e6
    if phase == "fsync":
        c.close(fd)
    return took


def measured(files: int, runs: int) -> dict[str, dict[str, list[float]]]:
    """Each phase's microseconds, file by file, with the receipts shown and without."""
    times: dict = {label: {phase: [] for phase in PHASES} for label in SETTINGS}
    progress("starting a cluster (pfs up, shipped defaults)")
    with temporary_cluster(**SHIPPED) as cluster:
        c = cluster.client(cache_blocks=1024)
        for run in range(runs):
            progress(f"run {run + 1} of {runs}")
            for phase in PHASES:
                for i in range(files):
                    for label in SETTINGS:
                        name = f"rc-{run}-{phase.replace(' ', '').replace(',', '-')}-{label}-{i}"
                        times[label][phase].append(timed(c, name, phase, label == "shown"))
        c.finish(c.initialize())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times = measured(args.files, args.runs)
    print_ratios(times)


if __name__ == "__main__":
    main()
