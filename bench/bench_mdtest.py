"""Many clients on the metadata path, as mdtest measures it: aggregate operations per second.

    python bench/bench_mdtest.py [--files 200] [--clients 1,2,4,8] [--runs 3]

Starts its own cluster (`pfs up`, shipped defaults) in a temporary directory. For each N, N
client processes (one `pfs.Client` each) start together and, in turn, create (and close, empty)
`--files` files, stat each, and delete each: first every process in a directory of its own,
then all of them in one shared directory. Each phase's rate is all processes' operations over
the time from the common start to the last one's end; medians of `--runs` runs.
"""
from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import statistics
import sys
import time

from pfs.cli.bench import progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

PHASES = ("create", "stat", "delete")


def worker(env: dict, directory: str, prefix: str, files: int, start, results) -> None:
    """One client process: the three phases over its files, each begun when all processes are
    ready (`start`, a barrier); puts (phase, seconds from the barrier to its end)."""
    import os
    os.environ.update(env)
    import pfs
    client = pfs.Client()
    client.initialize()
    names = [f"{directory}/{prefix}{i}" for i in range(files)]

    def create(name: str) -> None:
        client.create(name, 1)
        client.close(client.open(name, pfs.PFS_READ_WRITE))
    for phase, action in zip(PHASES, (create, client.stat, client.delete)):
        start.wait()
        began = time.perf_counter()
        for name in names:
            action(name)
        results.put((phase, began, time.perf_counter()))
    client.finish(client.initialize())


def one_run(cluster, n: int, files: int, shared: bool, run: int) -> dict[str, float]:
    """{phase: aggregate operations per second} of one run with n processes."""
    setup = cluster.client()
    directories = [f"md-{run}-{n}-{'shared' if shared else i}" for i in range(n)]
    for d in sorted(set(directories)):
        setup.mkdir(d)
    setup.finish(setup.initialize())
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(n), context.Queue()
    processes = [context.Process(target=worker, args=(cluster.env(), directories[i], f"p{i}-",
                                                      files, start, results))
                 for i in range(n)]
    for p in processes:
        p.start()
    spans: dict[str, list[tuple[float, float]]] = {phase: [] for phase in PHASES}
    for _ in range(n * len(PHASES)):
        phase, began, ended = results.get(timeout=600)
        spans[phase].append((began, ended))
    for p in processes:
        p.join(60)
    return {phase: n * files / (max(e for _, e in s) - min(b for b, _ in s))
            for phase, s in spans.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files per client process")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    progress("starting a cluster (pfs up, shipped defaults)")
    with temporary_cluster(**SHIPPED) as cluster:
        print(f"{'clients':>7} {'directories':<11} " + " ".join(f"{p + '/s':>10}" for p in PHASES))
        for n in counts:
            for shared in (False, True):
                rates = []
                for run in range(args.runs):
                    progress(f"{n} client(s), {'one shared directory' if shared else 'own dirs'}"
                             f", run {run + 1} of {args.runs}")
                    rates.append(one_run(cluster, n, args.files, shared, run))
                medians = [statistics.median(r[p] for r in rates) for p in PHASES]
                print(f"{n:>7} {'shared' if shared else 'own':<11} "
                      + " ".join(f"{m:>10.0f}" for m in medians), flush=True)


if __name__ == "__main__":
    main()
