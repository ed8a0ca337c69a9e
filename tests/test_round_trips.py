"""How many round trips the read path makes, counted on real servers (a regression shows here):
every unary call a Client makes passes a counting gRPC interceptor installed on its channels,
which tells metaserver calls from fileserver calls by their service. The session stream's
messages (heartbeats, revocation answers) are not calls and are not counted.

Shipped block size (64 KiB), so that a 4 KiB read is smaller than a block.
"""
import os

import grpc
import pytest

import pfs
from pfs.protocol import transport
from pfs.protocol import wire

from clusters import SHIPPED, temporary_cluster

KiB, MiB = 1 << 10, 1 << 20
# What a read of 4 KiB may fetch: its unit, its checksum and the reply's header.
ONE_UNIT_REPLY = wire.CHECKSUM_UNIT + 4 + 12


class Calls(grpc.UnaryUnaryClientInterceptor):
    """Every unary call made on the channels it is installed on: (server kind, method, reply
    bytes when they are raw)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, int | None]] = []

    def intercept_unary_unary(self, continuation, details, request):
        reply = continuation(details, request)
        kind = "fileserver" if details.method.startswith("/pfs.fileserver") else "metaserver"
        result = reply.result() if reply.exception() is None else None
        size = len(result) if isinstance(result, bytes) else None
        self.made.append((kind, details.method.rsplit("/", 1)[-1], size))
        return reply

    def during(self, action) -> dict[str, list[tuple[str, int | None]]]:
        """The calls `action()` makes, by server kind."""
        first = len(self.made)
        action()
        made = self.made[first:]
        return {kind: [(m, n) for k, m, n in made if k == kind]
                for kind in ("metaserver", "fileserver")}


@pytest.fixture(scope="module")
def counted():
    """A cluster whose Clients' calls are all counted (its channels are made after the
    interceptor is in place: channels are shared per address, and its addresses are new)."""
    calls = Calls()
    plain = transport.Credentials.channel
    transport.Credentials.channel = lambda self, address: grpc.intercept_channel(
        plain(self, address), calls)
    try:
        with temporary_cluster(**SHIPPED) as cluster:
            writer = cluster.client(cache_blocks=0)
            data = os.urandom(8 * MiB)
            writer.create("big", 4)
            fd = writer.open("big", pfs.PFS_READ_WRITE)
            writer.write(fd, data, len(data), 0)
            writer.close(fd)
            writer.create("small", 1)
            fd = writer.open("small", pfs.PFS_READ_WRITE)
            writer.write(fd, data[:4 * KiB], 4 * KiB, 0)
            writer.close(fd)
            yield cluster, calls, data
            writer.finish(writer.initialize())
    finally:
        transport.Credentials.channel = plain


def test_an_uncached_random_read_with_its_token_is_one_fileserver_call_of_its_unit(counted):
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=1024)
    fd = client.open("big", pfs.PFS_READ)
    buf = bytearray(4 * KiB)
    assert client.read(fd, buf, len(buf), 0) == len(buf)  # takes the token
    at = 5 * MiB + 12 * KiB
    made = calls.during(lambda: client.read(fd, buf, len(buf), at))
    assert buf == data[at:at + len(buf)]
    assert made["metaserver"] == []
    assert len(made["fileserver"]) == 1
    method, reply = made["fileserver"][0]
    assert method == "Read" and reply <= ONE_UNIT_REPLY  # not its block, nor read-ahead
    client.close(fd)
    client.finish(client.initialize())


def test_a_cached_read_makes_no_call(counted):
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=1024)
    fd = client.open("big", pfs.PFS_READ)
    buf = bytearray(4 * KiB)
    at = 3 * MiB + 64 * KiB + 8 * KiB
    client.read(fd, buf, len(buf), at)
    fetched = calls.during(lambda: client.read(fd, buf, len(buf), at))  # missed again: cached
    assert [m for m, _ in fetched["fileserver"]] == ["Read"]
    made = calls.during(lambda: [client.read(fd, buf, len(buf), at + k * 4 * KiB)
                                 for k in (-2, 1, 0)])
    assert made == {"metaserver": [], "fileserver": []}
    assert buf == data[at:at + len(buf)]
    assert client.execstat().num_read_hits == 3
    client.close(fd)
    client.finish(client.initialize())


def test_open_read_close_of_a_small_file(counted):
    """Open, read 4 KiB and close a file of 4 KiB: Open (which grants the read's token, nothing
    being in its way) and Close at the metaserver, one Read at a fileserver."""
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=1024)
    buf = bytearray(4 * KiB)

    def cycle() -> None:
        fd = client.open("small", pfs.PFS_READ)
        assert client.read(fd, buf, len(buf), 0) == len(buf)
        client.close(fd)
    made = calls.during(cycle)
    assert buf == data[:4 * KiB]
    assert [m for m, _ in made["fileserver"]] == ["Read"]
    assert [m for m, _ in made["metaserver"]] == ["Open", "Close"]
    client.finish(client.initialize())


def test_create_write_close_of_a_small_file(counted):
    """Create, open, write 4 KiB and close: Create, Open (granting the write's token) and
    Close at the metaserver, one Write at a fileserver."""
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=1024)

    def cycle() -> None:
        client.create("new-small", 1)
        fd = client.open("new-small", pfs.PFS_READ_WRITE)
        assert client.write(fd, data[:4 * KiB], 4 * KiB, 0) == 4 * KiB
        client.close(fd)
    made = calls.during(cycle)
    assert [m for m, _ in made["fileserver"]] == ["Write"]
    assert [m for m, _ in made["metaserver"]] == ["Create", "Open", "Close"]
    reader = cluster.client(cache_blocks=0)
    buf = bytearray(4 * KiB)
    fd = reader.open("new-small", pfs.PFS_READ)
    assert reader.read(fd, buf, len(buf), 0) == len(buf) and buf == data[:4 * KiB]
    reader.close(fd)
    for c in (client, reader):
        c.finish(c.initialize())


def test_an_open_grants_nothing_in_another_clients_way(counted):
    """A file open for writing elsewhere: an open for reading takes no token with it (that
    would take the writer's away unasked); its first read asks for one, and sees the writer's
    cached bytes."""
    cluster, calls, data = counted
    writer, reader = cluster.client(cache_blocks=16), cluster.client(cache_blocks=0)
    writer.create("shared-small", 1)
    wfd = writer.open("shared-small", pfs.PFS_READ_WRITE)
    assert writer.write(wfd, b"w" * 100, 100, 0) == 100  # cached, under its WRITE token
    opened = []
    made = calls.during(lambda: opened.append(reader.open("shared-small", pfs.PFS_READ)))
    assert [m for m, _ in made["metaserver"]] == ["Open"]
    assert writer.execstat().num_writebacks == 0  # nothing was taken from the writer yet
    buf = bytearray(100)
    made = calls.during(lambda: reader.read(opened[0], buf, 100, 0))
    assert [m for m, _ in made["metaserver"]] == ["Acquire"]
    assert buf == b"w" * 100
    assert writer.execstat().num_writebacks == 1
    for c, fd in ((writer, wfd), (reader, opened[0])):
        c.close(fd)
        c.finish(c.initialize())
