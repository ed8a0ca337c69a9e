"""What copies and checksums cost, side by side in one run (medians of --runs).

    python bench/bench_replicas.py [--runs 5] [--size-mib 64]

Starts a cluster (`pfs up`, shipped defaults: 4 fileservers, 1 MiB stripe units) and 4 bare
raw-bytes gRPC servers (bench/floor.py), and measures:

- copies: a sequential write of --size-mib in 4 MiB calls through close, and a cold read of it,
  cache off, for a file 2 wide with one copy and with two (all 4 fileservers busy); against the
  same calls striped by a bare client over 2 bare servers, and sending each column's part to
  2 bare servers at once (the same copies, over 4 servers);
- checksums: the CRC32C work one call does, timed alone (a write's piece CRCs at the client; a
  read's units checked at the client; the checksum file's share of a fileserver's store and
  read), against the whole call, on the 4 KiB and 4 MiB paths.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

import pfs
from pfs.cli.bench import MiB, fresh_name, progress, side_by_side
from pfs.protocol import checksums, wire

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from clusters import SHIPPED, Cluster, temporary_cluster  # noqa: E402
from floor import Floor  # noqa: E402
from pfs_servers.fileserver.store import StripeStore  # noqa: E402

CALL = 4 * MiB
SMALL = 4096


def copies(cluster: Cluster, floor: Floor, runs: int, size: int) -> None:
    print(f"copies: {size // MiB} MiB in 4 MiB calls, width 2, cache off "
          "(ratio: PFS time over the floor's)")
    data = memoryview(os.urandom(size))
    buf = bytearray(size)
    client = cluster.client(cache_blocks=0)

    def pfs_write(name: str, replicas: int) -> None:
        client.create(name, 2, replicas)
        fd = client.open(name, pfs.PFS_READ_WRITE)
        for offset in range(0, size, CALL):
            client.write(fd, data[offset:offset + CALL], CALL, offset)
        client.close(fd)

    def pfs_read(name: str) -> None:
        fd = client.open(name, pfs.PFS_READ)
        for offset in range(0, size, CALL):
            client.read(fd, memoryview(buf)[offset:offset + CALL], CALL, offset)
        client.close(fd)

    written: dict[int, list[str]] = {1: [], 2: []}  # each round writes a new file

    def write_new(replicas: int) -> None:
        written[replicas].append(fresh_name())
        pfs_write(written[replicas][-1], replicas)

    actions = {
        "floor write, 1 copy": lambda: [floor.write_striped(data[o:o + CALL], o, width=2)
                                        for o in range(0, size, CALL)],
        "floor write, 2 copies": lambda: [floor.write_striped(data[o:o + CALL], o, width=2,
                                                              copies=2)
                                          for o in range(0, size, CALL)],
        "floor read": lambda: [floor.read_striped(o, memoryview(buf)[o:o + CALL], width=2)
                               for o in range(0, size, CALL)],
    }
    for replicas in written:
        actions[f"pfs write, {replicas} copies"] = lambda r=replicas: write_new(r)
        actions[f"pfs read, {replicas} copies"] = lambda r=replicas: pfs_read(written[r][-1])
    progress(f"{runs} rounds of each, in turn")
    median = side_by_side(actions, runs)
    assert buf == data, "read back different bytes"
    for replicas in (1, 2):
        floor_write = median[f"floor write, {replicas} cop{'y' if replicas == 1 else 'ies'}"]
        row(f"write + close, {replicas} copies", median[f"pfs write, {replicas} copies"],
            floor_write, size)
        row(f"cold read, {replicas} copies", median[f"pfs read, {replicas} copies"],
            median["floor read"], size)
    write_cost = median["pfs write, 2 copies"] / median["pfs write, 1 copies"]
    floor_cost = median["floor write, 2 copies"] / median["floor write, 1 copy"]
    read_cost = median["pfs read, 2 copies"] / median["pfs read, 1 copies"]
    print(f"  two copies over one: writes take {write_cost:.2f}x the time (the floor's "
          f"{floor_cost:.2f}x), reads {read_cost:.2f}x")
    for name in written[1] + written[2]:
        client.delete(name)
    client.finish(client.initialize())


def row(what: str, pfs_seconds: float, floor_seconds: float, size: int) -> None:
    print(f"  {what:<28} {pfs_seconds * 1e3:9.1f} ms ({size / MiB / pfs_seconds:5.0f} MiB/s)  "
          f"floor {floor_seconds * 1e3:8.1f} ms  ratio {floor_seconds / pfs_seconds:5.2f}")


def checksum_cost(cluster: Cluster, runs: int) -> None:
    print("checksums: the CRC work of one call, alone, against the whole call (share of it)")
    client = cluster.client(cache_blocks=0)
    name = fresh_name()
    client.create(name, 4, 1)
    fd = client.open(name, pfs.PFS_READ_WRITE)
    big, small = os.urandom(CALL), os.urandom(SMALL)
    client.write(fd, big, CALL, 0)
    buf = bytearray(CALL)
    reply_big = wire.read_reply(0, wire_crcs(big), big)
    reply_small = wire.read_reply(0, wire_crcs(small), small)
    with tempfile.TemporaryDirectory() as tmp:
        store = StripeStore(pathlib.Path(tmp))
        bare = os.open(os.path.join(tmp, "bare"), os.O_RDWR | os.O_CREAT, 0o600)
        crcs_big, crcs_small = wire_crcs(big), wire_crcs(small)
        store.write(1, 0, crcs_big, big)
        os.pwrite(bare, big, 0)
        progress(f"{runs} rounds of each, in turn")
        median = side_by_side({
            "pfs write 4 MiB": lambda: client.write(fd, big, CALL, 0) and client.fsync(fd),
            "pfs read 4 MiB": lambda: client.read(fd, buf, CALL, 0),
            "pfs write 4 KiB": lambda: client.write(fd, small, SMALL, 0) and client.fsync(fd),
            "pfs read 4 KiB": lambda: client.read(fd, buf, SMALL, 8192),
            "client crcs 4 MiB": lambda: wire.write_request(1, 0, big),
            "client check 4 MiB": lambda: check(reply_big),
            "client crcs 4 KiB": lambda: wire.write_request(1, 0, small),
            "client check 4 KiB": lambda: check(reply_small),
            "store write 4 MiB": lambda: store.write(1, 0, crcs_big, big),
            "bare pwrite 4 MiB": lambda: os.pwrite(bare, big, 0),
            "store read 4 MiB": lambda: store.read(1, 0, CALL),
            "bare pread 4 MiB": lambda: os.pread(bare, CALL, 0),
            "store write 4 KiB": lambda: store.write(1, 0, crcs_small, small),
            "bare pwrite 4 KiB": lambda: os.pwrite(bare, small, 0),
            "store read 4 KiB": lambda: store.read(1, 0, SMALL),
            "bare pread 4 KiB": lambda: os.pread(bare, SMALL, 0),
        }, runs, repeat=20)
        os.close(bare)
    for size in ("4 KiB", "4 MiB"):
        for op, client_part, store_op, bare_op in (
                ("write", "crcs", "store write", "bare pwrite"),
                ("read", "check", "store read", "bare pread")):
            call = median[f"pfs {op} {size}"]
            at_client = median[f"client {client_part} {size}"]
            at_server = max(0.0, median[f"{store_op} {size}"] - median[f"{bare_op} {size}"])
            print(f"  {op} {size}: call {call * 1e3:8.3f} ms; CRCs at the client "
                  f"{at_client * 1e6:7.1f} us, checksums at the fileserver "
                  f"{at_server * 1e6:7.1f} us: {100 * (at_client + at_server) / call:4.1f}%")
    client.close(fd)
    client.delete(name)
    client.finish(client.initialize())


def check(reply: bytes) -> None:
    """What a reading client does with a reply's checksums."""
    _, crcs, data = wire.parse_read_reply(reply)
    assert checksums.first_bad(data, crcs) is None


def wire_crcs(data: bytes):
    return wire.parse_write(wire.write_request(1, 0, data))[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--only", choices=["copies", "checksums"])
    args = parser.parse_args()
    progress("starting a cluster (pfs up, shipped defaults) and 4 bare servers")
    with temporary_cluster(**SHIPPED) as cluster, Floor(4) as floor:
        print(f"copies and checksums on this machine ({os.cpu_count()} cores), "
              f"median of {args.runs} runs")
        if args.only in (None, "copies"):
            copies(cluster, floor, args.runs, args.size_mib * MiB)
        if args.only in (None, "checksums"):
            checksum_cost(cluster, args.runs)


if __name__ == "__main__":
    main()
