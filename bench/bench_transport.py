"""What one metadata call costs in transport, and what carrying it on a stream would save.

    python bench/bench_transport.py [--runs 7] [--calls 500]

Side by side in one run, medians of --runs alternated rounds of --calls each:

- `Client.stat` of a file on a `pfs up` cluster (shipped defaults): one unary Stat to the
  metaserver, a grpc.aio server;
- a bare unary echo of 64 bytes to a bare grpc.aio server in a process of its own (what every
  metaserver call costs before PFS does anything);
- the same 64 bytes sent and answered on one bidirectional stream to that server, opened once
  (what a namespace call carried on the session's stream would cost in transport).
"""
from __future__ import annotations

import argparse
import asyncio
import pathlib
import queue
import subprocess
import sys

import grpc

from pfs.cli.bench import progress, side_by_side

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from clusters import SHIPPED, temporary_cluster  # noqa: E402

PAYLOAD = b"x" * 64


async def _serve() -> None:
    """A bare grpc.aio server: a unary echo and a stream that answers each message with it."""
    async def echo(request: bytes, context) -> bytes:
        return request

    async def stream(requests, context):
        async for request in requests:
            yield request
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bare", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Stream": grpc.stream_stream_rpc_method_handler(stream)})])
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    await server.start()
    await server.wait_for_termination()


class StreamCalls:
    """Calls on one open stream: each message sent waits for its answer."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._answers = channel.stream_stream("/bare/Stream")(iter(self._outbox.get, None))

    def call(self, message: bytes) -> bytes:
        self._outbox.put(message)
        return next(self._answers)

    def close(self) -> None:
        self._outbox.put(None)  # the end of the requests ends the stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", choices=["serve"], help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(_serve())
        return
    server = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE,
                              text=True)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.stdout.readline().strip()}")
        unary, stream = channel.unary_unary("/bare/Echo"), StreamCalls(channel)
        with temporary_cluster(**SHIPPED) as cluster:
            client = cluster.client()
            client.create("probe", 1)
            actions = {"Client.stat": lambda: client.stat("probe"),
                       "bare unary (grpc.aio)": lambda: unary(PAYLOAD),
                       "bare stream message": lambda: stream.call(PAYLOAD)}
            progress("warming up")
            side_by_side(actions, 1, args.calls)
            progress(f"{args.runs} alternated rounds of {args.calls} calls")
            median = side_by_side(actions, args.runs, args.calls)
            client.finish(client.initialize())
        stream.close()
        channel.close()
    finally:
        server.kill()
        server.wait()
    unary_time = median["bare unary (grpc.aio)"]
    print(f"one call, medians of {args.runs} rounds of {args.calls}")
    for name, seconds in median.items():
        print(f"  {name:<24} {seconds * 1e6:8.0f} us  {seconds / unary_time:5.2f}x the bare unary")


if __name__ == "__main__":
    main()
