"""Many real Clients: what each costs its process and the metaserver, and whether a lease holds.

    python bench/bench_sessions.py [--processes 4] [--clients 300] [--hold 10]
    python bench/bench_sessions.py --processes 8 --clients 1250 --hold 60   # 10,000 for a minute

Starts a cluster (`pfs up`, shipped defaults, lease 10 s) and a shared 1 MiB file, then as a job
of many ranks would, `--processes` processes each make `--clients` pfs.Client objects, one after
another: initialize, open the shared file, read 4 KiB, and keep the session. Once all are up,
they hold their sessions for `--hold` seconds, then each Client reads 4 KiB again (a Client whose
session was lost fails that read: a session lost) and finishes.

Reported: the time until every Client was up; per process, the median time of one Client's
initialize + open + read, and the threads and resident memory each Client after the first added;
sessions lost; the metaserver's resident memory per session; and, while the Clients are set up
and again while they are held, the median time of a fresh client process's session start and
create + open + close + delete (a new process each time).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

SHARED = "bench-sessions-shared"
CYCLE = """
import pfs, sys, time, uuid
client = pfs.Client(cache_blocks=0)
times = []
for _ in range(5):
    name = f"cycle-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    client.initialize()
    client.create(name, 4)
    fd = client.open(name, pfs.PFS_READ_WRITE)
    client.close(fd)
    client.delete(name)
    times.append(time.perf_counter() - started)
client.finish(client.initialize())
print(sorted(times)[2])
"""


def rss_mib(pid: str | int = "self") -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- one process of many Clients -----------------------------------------------------------
def rank(count: int) -> None:
    """Makes `count` Clients, says how it went (a JSON line), holds them until told on stdin,
    then checks and finishes them (another JSON line)."""
    import pfs

    clients, setups = [], []
    buf = bytearray(4096)

    def one() -> None:
        started = time.perf_counter()
        client = pfs.Client()
        assert client.pfs_initialize() > 0, pfs.pfs_last_error()
        fd = client.pfs_open(SHARED, pfs.PFS_READ)
        assert fd > 0 and client.pfs_read(fd, buf, 4096, 0) == 4096, pfs.pfs_last_error()
        setups.append(time.perf_counter() - started)
        clients.append((client, fd))
    one()
    threads, rss = threading.active_count(), rss_mib()
    for _ in range(count - 1):
        one()
    extra = max(1, count - 1)
    print(json.dumps({"setup_ms": statistics.median(setups) * 1e3,
                      "threads_per_client": (threading.active_count() - threads) / extra,
                      "rss_mib_per_client": (rss_mib() - rss) / extra,
                      "threads": threading.active_count(), "rss_mib": rss_mib()}), flush=True)
    sys.stdin.readline()
    lost = sum(c.pfs_read(fd, buf, 4096, 0) != 4096 for c, fd in clients)
    for c, _ in clients:
        c.pfs_finish(c.pfs_initialize())
    print(json.dumps({"lost": lost}), flush=True)


# --- the run --------------------------------------------------------------------------------
def cycle_seconds(address: str) -> float:
    done = subprocess.run([sys.executable, "-c", CYCLE], capture_output=True, text=True,
                          env={"PFS_METASERVER": address, "PATH": ""}, timeout=300,
                          cwd=tempfile.gettempdir())  # not the source tree: the installed pfs
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(done.stdout)


def cycles_until(address: str, done: threading.Event, into: list[float]) -> None:
    while not done.is_set():
        into.append(cycle_seconds(address))


def run(processes: int, clients: int, hold: float) -> None:
    import pfs

    with temporary_cluster(**SHIPPED) as cluster:
        metaserver = cluster.server_pids("metaserver")[0]
        writer = pfs.Client(metaserver=cluster.address)
        writer.initialize()
        writer.create(SHARED, 4)
        fd = writer.open(SHARED, pfs.PFS_READ_WRITE)
        writer.write(fd, b"s" * (1 << 20), 1 << 20, 0)
        writer.close(fd)
        writer.finish(writer.initialize())
        idle_rss = rss_mib(metaserver)
        idle_cycle = statistics.median(cycle_seconds(cluster.address) for _ in range(3))

        started = time.perf_counter()
        ranks = [subprocess.Popen([sys.executable, __file__, "--rank", str(clients)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=cluster.env(), cwd=tempfile.gettempdir())
                 for _ in range(processes)]
        during_setup: list[float] = []
        up = threading.Event()
        timer = threading.Thread(target=cycles_until, args=(cluster.address, up, during_setup))
        timer.start()
        reports = [json.loads(r.stdout.readline() or "{}") for r in ranks]
        setup = time.perf_counter() - started
        up.set()
        timer.join()
        if not all(reports):
            raise SystemExit("a process failed to set up its clients (see above)")
        held_rss = rss_mib(metaserver)
        during_hold: list[float] = []
        hold_ends = time.monotonic() + hold
        while time.monotonic() < hold_ends or not during_hold:
            during_hold.append(cycle_seconds(cluster.address))
            time.sleep(min(1.0, max(0.0, hold_ends - time.monotonic())))
        for r in ranks:
            r.stdin.write("check\n")
            r.stdin.flush()
        lost = sum(json.loads(r.stdout.readline() or '{"lost": -1}')["lost"] for r in ranks)
        for r in ranks:
            r.wait(120)

    total = processes * clients
    print(f"{total} Clients in {processes} processes ({clients} each), shipped defaults")
    print(f"  all up in                              {setup:8.1f} s")
    print(f"  one Client's initialize+open+read      {_spread([r['setup_ms'] for r in reports])} ms"
          " (median per process)")
    print(f"  threads per extra Client               "
          f"{_spread([r['threads_per_client'] for r in reports], 3)}"
          f"   ({_spread([r['threads'] for r in reports], 0)} per process)")
    print(f"  client memory per extra Client         "
          f"{_spread([r['rss_mib_per_client'] * 1024 for r in reports], 0)} KiB"
          f"   ({_spread([r['rss_mib'] for r in reports], 0)} MiB per process)")
    print(f"  sessions lost after {hold:g} s held         {lost}")
    print(f"  metaserver memory                      {idle_rss:.0f} MiB idle, {held_rss:.0f} MiB "
          f"held: {(held_rss - idle_rss) * 1024 / total:.1f} KiB per session")
    print(f"  fresh process create+open+close+delete {idle_cycle * 1e3:.1f} ms idle, "
          f"{statistics.median(during_setup or [float('nan')]) * 1e3:.1f} ms during setup "
          f"({len(during_setup)} runs), {statistics.median(during_hold) * 1e3:.1f} ms held")


def _spread(values, digits: int = 1) -> str:
    values = sorted(values)
    return f"{values[0]:.{digits}f}-{values[-1]:.{digits}f}" if values[0] != values[-1] \
        else f"{values[0]:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--clients", type=int, default=300, help="Clients per process")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds all are held")
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)  # a process of the run
    args = parser.parse_args()
    if args.rank:
        rank(args.rank)
    else:
        run(args.processes, args.clients, args.hold)


if __name__ == "__main__":
    main()
