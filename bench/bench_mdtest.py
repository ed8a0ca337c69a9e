"""Many clients on the metadata path, as mdtest measures it: aggregate operations per second.

    python bench/bench_mdtest.py [--files 200] [--clients 1,2,4,8] [--runs 3]

Starts its own cluster (`pfs up`, shipped defaults) in a temporary directory. For each N, N
client processes (one `pfs.Client` each) start together and, in turn, create (and close, empty)
`--files` files, stat each, and delete each: first every process in a directory of its own,
then all of them in one shared directory. Each phase's rate is all processes' operations over
the time from the common start to the last one's end; medians of `--runs` runs. Beside each
rate, how busy the metaserver was meanwhile (its CPU time over that span, as a share of one
core): a rate that stops growing with N while that share is well below 100% is held back by
something else than the metaserver's one event loop.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import statistics
import sys
import threading
import time

from pfs.cli.bench import progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

PHASES = ("create", "stat", "delete")
#: How often the metaserver's CPU time is sampled.
SAMPLE_SECONDS = 0.05


class CpuSamples:
    """(perf_counter, CPU seconds) of one process, sampled in a thread of this one until
    stopped: its share of a core over any span within them."""

    def __init__(self, pid: int) -> None:
        self._stat = pathlib.Path(f"/proc/{pid}/stat")
        self._tick = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            fields = self._stat.read_text().rpartition(")")[2].split()
            self.samples.append((time.perf_counter(), (int(fields[11]) + int(fields[12]))
                                 / self._tick))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def share(self, began: float, ended: float) -> float:
        """CPU seconds over wall seconds between the samples nearest `began` and `ended`."""
        first = min(self.samples, key=lambda s: abs(s[0] - began))
        last = min(self.samples, key=lambda s: abs(s[0] - ended))
        return (last[1] - first[1]) / max(last[0] - first[0], SAMPLE_SECONDS)


def worker(env: dict, directory: str, prefix: str, files: int, start, results) -> None:
    """One client process: the three phases over its files, each begun when all processes are
    ready (`start`, a barrier); puts (phase, seconds from the barrier to its end)."""
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


def one_run(cluster, n: int, files: int, shared: bool, run: int
            ) -> dict[str, tuple[float, float]]:
    """{phase: (aggregate operations per second, the metaserver's share of a core)} of one
    run with n processes."""
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
    metaserver = CpuSamples(cluster.server_pids("metaserver")[0])
    for p in processes:
        p.start()
    spans: dict[str, list[tuple[float, float]]] = {phase: [] for phase in PHASES}
    for _ in range(n * len(PHASES)):
        phase, began, ended = results.get(timeout=600)
        spans[phase].append((began, ended))
    for p in processes:
        p.join(60)
    metaserver.stop()
    result = {}
    for phase, s in spans.items():
        began, ended = min(b for b, _ in s), max(e for _, e in s)
        result[phase] = (n * files / (ended - began), metaserver.share(began, ended))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files per client process")
    parser.add_argument("--clients", default="1,2,4,8")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]
    progress("starting a cluster (pfs up, shipped defaults)")
    with temporary_cluster(**SHIPPED) as cluster:
        print(f"{'clients':>7} {'directories':<11} "
              + " ".join(f"{p + '/s (metaserver busy)':>26}" for p in PHASES))
        for n in counts:
            for shared in (False, True):
                rates = []
                for run in range(args.runs):
                    progress(f"{n} client(s), {'one shared directory' if shared else 'own dirs'}"
                             f", run {run + 1} of {args.runs}")
                    rates.append(one_run(cluster, n, args.files, shared, run))
                cells = [f"{statistics.median(r[p][0] for r in rates):.0f} "
                         f"({statistics.median(r[p][1] for r in rates):.0%})" for p in PHASES]
                print(f"{n:>7} {'shared' if shared else 'own':<11} "
                      + " ".join(f"{c:>26}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
