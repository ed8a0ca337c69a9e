"""How many round trips the read path makes, counted on real servers (a regression shows here):
every unary call a Client makes passes a counting gRPC interceptor installed on its channels,
which tells metaserver calls from fileserver calls by their service. The session stream's
messages (heartbeats, revocation answers) are not calls and are not counted. The metaserver's
own questions to the fileservers (an object's length) are counted in its debug log.

Shipped block size (64 KiB), so that a 4 KiB read is smaller than a block.
"""
import errno
import os

import grpc
import pytest

import pfs
from pfs.protocol import receipts, transport
from pfs.protocol import wire
from pfs.protocol.tokenmodes import WRITE

from clusters import SHIPPED, temporary_cluster

KiB, MiB = 1 << 10, 1 << 20
# What a read of 4 KiB may fetch: its unit, its checksum and the reply's header.
ONE_UNIT_REPLY = wire.CHECKSUM_UNIT + 4 + 12


class Calls(grpc.UnaryUnaryClientInterceptor):
    """Every unary call made on the channels it is installed on: (server kind, method, reply
    bytes when they are raw)."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, int | None]] = []
        self.messages: list[tuple[str, object, object]] = []  # metaserver (method, request, reply)

    def intercept_unary_unary(self, continuation, details, request):
        reply = continuation(details, request)
        kind = "fileserver" if details.method.startswith("/pfs.fileserver") else "metaserver"
        result = reply.result() if reply.exception() is None else None
        size = len(result) if isinstance(result, bytes) else None
        method = details.method.rsplit("/", 1)[-1]
        self.made.append((kind, method, size))
        if kind == "metaserver":
            self.messages.append((method, request, result))
        return reply

    def last(self, method: str):
        """(request, reply) of the latest metaserver call of `method`."""
        return next((q, r) for m, q, r in reversed(self.messages) if m == method)

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
        with temporary_cluster(**SHIPPED, extra_args=("--log-level", "debug")) as cluster:
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
    # Takes the token; a random read (not at 0, where a first read counts as sequential), so
    # that no read-ahead is in flight while the next read's calls are counted.
    assert client.read(fd, buf, len(buf), 64 * KiB) == len(buf)
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


def _length_questions(cluster) -> int:
    """How many times the metaserver has asked a fileserver for an object's length."""
    return cluster.log.read_text(errors="replace").count("the length of file")


def test_a_close_or_fsync_after_a_write_asks_no_fileserver_its_length(counted, monkeypatch):
    """The receipts of the writes show the metaserver the bytes stored (sizes.py): a close or
    fsync that grows the file is one metaserver call, and the fileservers are not asked; a
    client that shows none (an older one) makes the metaserver ask, and is believed too."""
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=0)
    client.create("receipted", 4)
    fd = client.open("receipted", pfs.PFS_READ_WRITE)
    asked = _length_questions(cluster)
    assert client.write(fd, data[:3 * MiB], 3 * MiB, 0) == 3 * MiB
    made = calls.during(lambda: client.fsync(fd))
    assert [m for m, _ in made["metaserver"]] == ["ReportSize"]
    assert len(calls.last("ReportSize")[0].receipts) == 1
    assert client.write(fd, data[:100], 100, 3 * MiB) == 100
    made = calls.during(lambda: client.close(fd))
    assert [m for m, _ in made["metaserver"]] == ["Close"]
    assert len(calls.last("Close")[0].receipts) == 1
    assert _length_questions(cluster) == asked
    assert client.stat("receipted").file_size == 3 * MiB + 100
    monkeypatch.setattr(receipts.Kept, "showing", lambda self, recipe, size: [])
    _write_and_close(client, "unreceipted", data[:5000])
    assert client.stat("unreceipted").file_size == 5000
    assert _length_questions(cluster) == asked + 1
    client.finish(client.initialize())


def _write_and_close(client, name: str, data: bytes) -> None:
    client.create(name, 1)
    fd = client.open(name, pfs.PFS_READ_WRITE)
    assert client.write(fd, data, len(data), 0) == len(data)
    client.close(fd)


def test_a_reopen_uses_the_tokens_kept_since_its_close(counted):
    """A file closed here keeps its tokens in the lock cache: reopening it is granted no token
    (the Open says the caller holds it already), and its read and write ask for none."""
    cluster, calls, data = counted
    client = cluster.client(cache_blocks=1024)
    _write_and_close(client, "kept", data[:4 * KiB])
    assert calls.last("Close")[1].kept
    buf = bytearray(4 * KiB)

    def cycle() -> None:
        fd = client.open("kept", pfs.PFS_READ_WRITE)
        assert client.read(fd, buf, len(buf), 0) == len(buf)
        assert client.write(fd, b"again", 5, 4 * KiB) == 5
        client.close(fd)
    made = calls.during(cycle)
    assert [m for m, _ in made["metaserver"]] == ["Open", "Close"]
    reply = calls.last("Open")[1]
    assert not reply.HasField("grant") and [(t.start, t.mode) for t in reply.held] == [(0, WRITE)]
    assert [m for m, _ in made["fileserver"]] == ["Read", "Write"]
    assert buf == data[:4 * KiB]
    assert client.stat("kept").file_size == 4 * KiB + 5
    client.finish(client.initialize())


def test_another_clients_write_takes_the_kept_tokens_and_sees_the_bytes(counted):
    """Tokens kept after a close are taken from the cache when another client opens the file
    for writing (its Open grants them: no Acquire, no revocation to wait for); each client then
    reads the other's bytes, the first through a grant of its own at its reopen."""
    cluster, calls, data = counted
    first, second = cluster.client(cache_blocks=64), cluster.client(cache_blocks=64)
    _write_and_close(first, "taken", data[:8 * KiB])
    buf = bytearray(8 * KiB)

    def overwrite() -> None:
        fd = second.open("taken", pfs.PFS_READ_WRITE)
        assert second.read(fd, buf, len(buf), 0) == len(buf)
        assert second.write(fd, b"2" * 100, 100, 50) == 100
        second.close(fd)
    made = calls.during(overwrite)
    assert [m for m, _ in made["metaserver"]] == ["Open", "Close"]
    assert calls.last("Open")[1].HasField("grant")
    assert buf == data[:8 * KiB]
    expected = data[:50] + b"2" * 100 + data[150:8 * KiB]
    fd = first.open("taken", pfs.PFS_READ)  # its kept WRITE token went to the second client
    assert calls.last("Open")[1].HasField("grant")  # (the second's kept one taken)
    assert first.read(fd, buf, len(buf), 0) == len(buf) and buf == expected
    first.close(fd)
    stats = first.execstat()
    assert stats.num_writebacks == 0 and stats.num_invalidations == 0  # nothing was cached
    for c in (first, second):
        c.finish(c.initialize())


def test_delete_and_rename_of_a_file_closed_with_kept_tokens_are_not_busy(counted):
    """A closed file is not open anywhere, whatever tokens its last client keeps."""
    cluster, calls, data = counted
    writer, other = cluster.client(cache_blocks=64), cluster.client(cache_blocks=64)
    _write_and_close(writer, "closed-kept", data[:4 * KiB])
    assert calls.last("Close")[1].kept
    other.rename("closed-kept", "closed-kept-2")
    assert other.stat("closed-kept-2").file_size == 4 * KiB
    with pytest.raises(FileNotFoundError):
        writer.open("closed-kept", pfs.PFS_READ)
    other.delete("closed-kept-2")
    _write_and_close(writer, "closed-kept-3", data[:4 * KiB])
    deleted = calls.last("Close")[0].file_id
    writer.delete("closed-kept-3")  # by the keeper itself, who gives its tokens up
    assert len(writer._state.lockcache) == 1  # (the one the other client renamed)
    with pytest.raises(OSError) as gone:
        writer.open("closed-kept-3", pfs.PFS_READ)
    assert gone.value.errno == errno.ENOENT
    _write_and_close(writer, "closed-kept-4", data[:4 * KiB])
    assert deleted in calls.last("Close")[0].release
    for c in (writer, other):
        c.finish(c.initialize())


def test_the_lock_cache_is_bounded_and_gives_evicted_tokens_up_with_a_close(counted,
                                                                            monkeypatch):
    """PFS_LOCK_CACHE_FILES files keep their tokens; the least recently closed beyond that are
    given up with the next Close, not by a call of their own."""
    cluster, calls, data = counted
    monkeypatch.setenv("PFS_LOCK_CACHE_FILES", "2")
    client = cluster.client(cache_blocks=64)
    ids = []
    for k in range(3):
        _write_and_close(client, f"bounded-{k}", data[:100])
        ids.append(calls.last("Close")[0].file_id)
    assert len(client._state.lockcache) == 2
    made = calls.during(lambda: _write_and_close(client, "bounded-3", data[:100]))
    assert [m for m, _ in made["metaserver"]] == ["Create", "Open", "Close"]
    assert list(calls.last("Close")[0].release) == ids[:1]  # (the third close evicted it)
    client.finish(client.initialize())


def test_a_revocation_of_kept_tokens_is_answered_at_once(counted):
    """A reader that opened the file while its writer had it open got no token with its open;
    once the writer closed it (keeping its tokens), the reader's first read asks for one, and
    the writer gives its kept WRITE token up at once (nothing is cached under it)."""
    cluster, calls, data = counted
    writer, reader = cluster.client(cache_blocks=64), cluster.client(cache_blocks=64)
    writer.create("revoked-kept", 1)
    wfd = writer.open("revoked-kept", pfs.PFS_READ_WRITE)
    assert writer.write(wfd, data[:100], 100, 0) == 100
    rfd = reader.open("revoked-kept", pfs.PFS_READ)
    assert not calls.last("Open")[1].HasField("grant")  # the writer's was in the way
    writer.close(wfd)
    assert calls.last("Close")[1].kept
    buf = bytearray(100)
    made = calls.during(lambda: reader.read(rfd, buf, 100, 0))
    assert [m for m, _ in made["metaserver"]] == ["Acquire"] and buf == data[:100]
    assert writer._session.lost is None
    assert writer.execstat().num_writebacks == 0 and writer.execstat().num_invalidations == 0
    reader.close(rfd)
    for c in (writer, reader):
        c.finish(c.initialize())
