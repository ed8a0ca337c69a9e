"""The floor PFS is held against: the bare thing it is built on, doing the same work.

Bare servers are raw-bytes gRPC servers in processes of their own, each writing and reading one
local file with pwrite/pread, as a fileserver does, with nothing else: no sessions, no tokens,
no protobuf. A bare client stripes a call over them the way PFS does (1 MiB units, every server
at once) and waits for all of them.

    python bench/floor.py serve --data-dir D     # one bare server (prints its port)

Used by bench/bench_cluster.py; `Floor(n)` starts n servers for a benchmark and stops them.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import threading
from concurrent import futures

import grpc

HEADER = struct.Struct("<QQ")  # offset, length (a read's) or 0 (a write's payload follows)
MiB = 1 << 20
OPTIONS = [("grpc.max_send_message_length", 64 * MiB),
           ("grpc.max_receive_message_length", 64 * MiB), ("grpc.so_reuseport", 0)]
_identity = None  # raw bytes in and out: gRPC's serializers left out


def serve(data_dir: pathlib.Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "object", os.O_RDWR | os.O_CREAT, 0o600)

    def read(request: bytes, context) -> bytes:
        offset, length = HEADER.unpack_from(request)
        return os.pread(fd, length, offset)

    def write(request: bytes, context) -> bytes:
        offset, _ = HEADER.unpack_from(request)
        os.pwrite(fd, memoryview(request)[HEADER.size:], offset)
        return b""

    def echo(request: bytes, context) -> bytes:
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=OPTIONS)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("floor", {
        name: grpc.unary_unary_rpc_method_handler(handler)
        for name, handler in (("Read", read), ("Write", write), ("Echo", echo))})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


class Floor:
    """n bare servers in processes of their own, and a bare client of them."""

    def __init__(self, servers: int) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self._processes = []
        self.stubs = []
        for i in range(servers):
            process = subprocess.Popen(
                [sys.executable, __file__, "serve", "--data-dir", f"{self._tmp.name}/{i}"],
                stdout=subprocess.PIPE, text=True)
            self._processes.append(process)
            channel = grpc.insecure_channel(f"127.0.0.1:{process.stdout.readline().strip()}",
                                            options=OPTIONS)
            self.stubs.append({name: channel.unary_unary(f"/floor/{name}", _identity, _identity)
                               for name in ("Read", "Write", "Echo")})

    def close(self) -> None:
        for process in self._processes:
            process.kill()
            process.wait()
        self._tmp.cleanup()

    def __enter__(self) -> "Floor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what PFS is compared with ----------------------------------------------------------
    def echo(self, payload: bytes = b"") -> None:
        """One bare unary round trip."""
        self.stubs[0]["Echo"](payload)

    def read(self, offset: int, length: int, unit: int = MiB) -> bytes:
        """One bare read of file bytes [offset, offset + length), within one 1 MiB unit, from
        the server that holds them: random reads of a striped file go to every server in turn,
        and gRPC itself takes longer to switch channels than to call one channel again."""
        width = len(self.stubs)
        server, local = (offset // unit) % width, offset // unit // width * unit + offset % unit
        return self.stubs[server]["Read"](HEADER.pack(local, length))

    def write_striped(self, data: memoryview, offset: int, unit: int = MiB,
                      width: int | None = None, copies: int = 1) -> None:
        """Writes `data` as file bytes at `offset`, 1 MiB units dealt over `width` columns
        (default: every server), each column's part in one call to each of its `copies`
        servers (copy k of column c on server k * width + c), all at once (offset and length
        multiples of unit * width)."""
        width = width or len(self.stubs)
        pieces = [bytearray() for _ in range(width)]
        for k in range(0, len(data), unit):
            pieces[(k // unit) % width] += data[k:k + unit]
        local = offset // width
        calls = [self.stubs[k * width + c]["Write"].future(HEADER.pack(local, 0) + bytes(piece))
                 for c, piece in enumerate(pieces) for k in range(copies)]
        for call in calls:
            call.result()

    def read_striped(self, offset: int, dst: memoryview, unit: int = MiB,
                     width: int | None = None) -> None:
        """Reads file bytes at `offset` into `dst`, from the first `width` servers (the first
        copy of each column)."""
        width = width or len(self.stubs)
        share = len(dst) // width
        calls = [stub["Read"].future(HEADER.pack(offset // width, share))
                 for stub in self.stubs[:width]]
        parts = [call.result() for call in calls]
        for k in range(0, len(dst), unit):
            server, at = (k // unit) % width, (k // unit // width) * unit
            dst[k:k + unit] = parts[server][at:at + unit]


def run_in_threads(actions) -> None:
    """Runs the callables at once, one thread each, and waits for all."""
    threads = [threading.Thread(target=action) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one bare raw-bytes gRPC server")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--data-dir", required=True)
    serve(pathlib.Path(parser.parse_args().data_dir))
