"""How the metaserver holds up as sessions pile up: memory, and a fresh client's latency.

    python bench/bench_sessions.py [--counts 100,1000,5000]

Starts a cluster (`pfs up`, shipped defaults) and, for each count in turn, brings the number of
live sessions up to it: each is a real session (Register, then its stream with heartbeats every
quarter lease, acknowledged by the metaserver), all held by one asyncio process. At each count
it reports the metaserver's resident memory, how long the new sessions took to set up, and the
median time of a fresh client's create + open + close + delete (a new process each time, with
the sessions alive).
"""
from __future__ import annotations

import argparse
import asyncio
import pathlib
import subprocess
import sys
import tempfile
import time

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.bench import progress
from pfs.transport import CHANNEL_OPTIONS, session_metadata

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402  (the tests' launcher)

SESSIONS_PER_CHANNEL = 200  # streams share a connection; many connections spread the load
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


class Sessions:
    """Many live sessions, each heartbeating, on a few channels."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task] = []
        self.lease = 10.0

    async def add(self, count: int, parallel: int = 50) -> None:
        semaphore = asyncio.Semaphore(parallel)

        async def one(k: int) -> None:
            async with semaphore:
                await self._start(k)
        await asyncio.gather(*(one(len(self.tasks) + k) for k in range(count)))

    async def _start(self, k: int) -> None:
        while len(self.channels) <= k // SESSIONS_PER_CHANNEL:
            self.channels.append(grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS))
        stub = pb_grpc.MetaServerStub(self.channels[k // SESSIONS_PER_CHANNEL])
        reply = await stub.Register(pb.RegisterRequest(hostname="bench", pid=k), timeout=60)
        self.lease = reply.lease_seconds

        async def heartbeats():
            seq = 0
            while True:
                seq += 1
                yield pb.ClientMessage(heartbeat=pb.Heartbeat(seq=seq))
                await asyncio.sleep(self.lease / 4)
        stream = stub.Session(heartbeats(),
                              metadata=session_metadata(reply.client_id, reply.session_key))

        async def drain() -> None:
            async for _ in stream:
                pass
        self.tasks.append(asyncio.get_running_loop().create_task(drain()))

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for channel in self.channels:
            await channel.close()


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cycle_seconds(address: str) -> float:
    done = subprocess.run([sys.executable, "-c", CYCLE], capture_output=True, text=True,
                          env={"PFS_METASERVER": address, "PATH": ""}, timeout=300,
                          cwd=tempfile.gettempdir())  # not the source tree: the installed pfs
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return float(done.stdout)


async def run(counts: list[int]) -> None:
    with temporary_cluster(**SHIPPED) as cluster:
        metaserver = cluster.server_pids("metaserver")[0]
        sessions = Sessions(cluster.address)
        print(f"{'sessions':>9} {'setup s':>9} {'RSS MiB':>9} {'create+open+close+delete':>26}")
        print(f"{0:>9} {'':>9} {rss_mib(metaserver):9.1f} "
              f"{cycle_seconds(cluster.address) * 1e3:23.1f} ms")
        try:
            for count in counts:
                progress(f"bringing the sessions up to {count}")
                started = time.perf_counter()
                await sessions.add(count - len(sessions.tasks))
                setup = time.perf_counter() - started
                await asyncio.sleep(sessions.lease / 2)  # a few rounds of heartbeats
                alive = sum(not t.done() for t in sessions.tasks)
                cycle = await asyncio.get_running_loop().run_in_executor(
                    None, cycle_seconds, cluster.address)
                print(f"{alive:>9} {setup:9.1f} {rss_mib(metaserver):9.1f} "
                      f"{cycle * 1e3:23.1f} ms")
        finally:
            await sessions.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000,5000")
    args = parser.parse_args()
    print("metaserver with many live sessions (shipped defaults, lease 10 s)")
    asyncio.run(run([int(c) for c in args.counts.split(",")]))


if __name__ == "__main__":
    main()
