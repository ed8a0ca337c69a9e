"""PFS against bare gRPC to the same servers, side by side in one run (medians).

    python bench/bench_cluster.py [--runs 7]

Starts its own cluster (`pfs up`, shipped defaults: 4 fileservers, 64 KiB blocks, 1 MiB stripe
units) in a temporary directory and measures:
- a token round trip (Acquire with no conflict) against a bare metaserver call (Status), and a
  write that must revoke another client's token first (two clients taking turns);
- a 4 MiB striped read and write (width 4, client cache off) against one bare 4 MiB gRPC call
  to one fileserver and against four bare 1 MiB calls to the four fileservers at once.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

import grpc

import pfs
from pfs._proto import fileserver_pb2 as fs_pb
from pfs._proto import fileserver_pb2_grpc as fs_grpc
from pfs._proto import metaserver_pb2 as meta_pb
from pfs._proto import metaserver_pb2_grpc as meta_grpc
from pfs.bench import MiB, ScratchFile, median_seconds, progress

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from clusters import SHIPPED, Cluster, temporary_cluster  # noqa: E402  (the tests' launcher)

RAW_FILE_ID = 1 << 40  # an object id no PFS file will have for a long while


def row(what: str, seconds: float, baseline: float | None = None, unit: str = "") -> None:
    ratio = f"{seconds / baseline:8.2f}x" if baseline else " " * 9
    print(f"  {what:<52} {seconds * 1e3:9.3f} ms {ratio} {unit}")


def token_round_trips(cluster: Cluster, runs: int) -> None:
    print("token round trips (ratio: against a bare Status call to the metaserver)")
    a, b = cluster.client(cache_blocks=0), cluster.client(cache_blocks=0)
    with grpc.insecure_channel(cluster.address) as channel:
        stub = meta_grpc.MetaServerStub(channel)
        bare = median_seconds(lambda: stub.Status(meta_pb.StatusRequest()), runs, repeat=200)
    row("bare gRPC Status", bare)
    with ScratchFile(a, 4096, 1) as f:
        fb = b.open(f.name, pfs.PFS_READ_WRITE)
        progress("Acquire round trips")
        file_id = a._fds[f.fd].file_id

        def acquire_token() -> None:
            # The client's own session call, as an operation makes it; the grant is recorded
            # as applied so that later revocations do not wait for it.
            a._session.applied(a._session.acquire(file_id, 0, 1, pfs.client.READ).grant_seq)
        acquire = median_seconds(acquire_token, runs, repeat=200)
        row("token Acquire, no conflict", acquire, bare)
        progress("writes that revoke the other client's token")
        one = b"x"

        def ping_pong() -> None:
            a.write(f.fd, one, 1, 0)
            b.write(fb, one, 1, 0)
        turn = median_seconds(ping_pong, runs, repeat=50) / 2
        row("1-byte write revoking the other client's token", turn, bare)
        b.close(fb)
    for c in (a, b):
        c.finish(c.initialize())


def striped_io(cluster: Cluster, runs: int) -> None:
    size = 4 * MiB
    print("4 MiB reads and writes (ratio: against one bare 4 MiB gRPC call to one fileserver)")
    client = cluster.client(cache_blocks=0)
    stubs = [fs_grpc.FileServerStub(grpc.insecure_channel(address, options=pfs.transport.CHANNEL_OPTIONS))
             for address in client.fileservers().values()]
    data = os.urandom(size)
    session = client._session.metadata  # bare calls need a session too
    stubs[0].Write(fs_pb.WriteRequest(file_id=RAW_FILE_ID, offset=0, data=data), metadata=session)
    for stub in stubs:
        stub.Write(fs_pb.WriteRequest(file_id=RAW_FILE_ID, offset=0, data=data[:MiB]),
                   metadata=session)
    progress("bare gRPC")
    raw_read = median_seconds(lambda: stubs[0].Read(
        fs_pb.ReadRequest(file_id=RAW_FILE_ID, offset=0, length=size), metadata=session),
        runs, repeat=5)
    raw_write = median_seconds(lambda: stubs[0].Write(
        fs_pb.WriteRequest(file_id=RAW_FILE_ID, offset=0, data=data), metadata=session),
        runs, repeat=5)

    def parallel(call) -> None:
        for future in [call(stub) for stub in stubs]:
            future.result()
    par_read = median_seconds(lambda: parallel(lambda s: s.Read.future(
        fs_pb.ReadRequest(file_id=RAW_FILE_ID, offset=0, length=MiB), metadata=session)),
        runs, repeat=5)
    par_write = median_seconds(lambda: parallel(lambda s: s.Write.future(
        fs_pb.WriteRequest(file_id=RAW_FILE_ID, offset=0, data=data[:MiB]), metadata=session)),
        runs, repeat=5)
    row("bare gRPC: one 4 MiB Read", raw_read, raw_read)
    row("bare gRPC: four 1 MiB Reads at once, one per server", par_read, raw_read)
    buf = bytearray(size)
    for width in (1, len(stubs)):
        progress(f"pfs width {width}")
        with ScratchFile(client, size, width) as f:
            read = median_seconds(lambda: client.read(f.fd, buf, size, 0), runs, repeat=5)
            assert buf == f.data
            row(f"pfs_read 4 MiB, stripe width {width}", read, raw_read,
                f"({size / MiB / read:.0f} MiB/s)")
            write = median_seconds(lambda: client.write(f.fd, f.data, size, 0), runs, repeat=5)
            row(f"pfs_write 4 MiB, stripe width {width}", write, raw_write,
                f"({size / MiB / write:.0f} MiB/s)")
    row("bare gRPC: one 4 MiB Write", raw_write, raw_write)
    row("bare gRPC: four 1 MiB Writes at once, one per server", par_write, raw_write)
    client.finish(client.initialize())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults)")
    with temporary_cluster(**SHIPPED) as cluster:
        print(f"PFS vs bare gRPC on this machine ({os.cpu_count()} cores), "
              f"median of {args.runs} runs")
        token_round_trips(cluster, args.runs)
        striped_io(cluster, args.runs)


if __name__ == "__main__":
    main()
