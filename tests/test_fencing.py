"""Fencing (docs/consistency.md): once the metaserver has ended a session, nothing that session still does
reaches stored data or returns stale data.

Each test freezes a client process (SIGSTOP) past its lease while it holds tokens and dirty
cached bytes; another client then writes the same bytes and closes. When the frozen client is
resumed, whatever it does fails with ENOTCONN and a message saying what it lost, and the other
client's closed write stays, byte for byte.
"""
import errno
import threading
import time

import pytest

import pfs
from clusters import COURSE, Cluster, RemoteClient, read_file, wait_until, write_file

LEASE = 2.0
B = COURSE["block_size"]
INITIAL = b"i" * (8 * B)


@pytest.fixture(scope="module")
def short_lease(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("fencing"), lease_seconds=LEASE, **COURSE).start()
    yield c
    c.stop()


def make_file(cluster: Cluster, name: str, data: bytes = INITIAL) -> None:
    """`name` holding `data`, written by a client of its own that then finishes."""
    setup = cluster.client()
    write_file(setup, name, data)
    assert setup.pfs_finish(setup.pfs_initialize()) == 0


def read_all(cluster: Cluster, name: str, size: int) -> bytes:
    """`size` bytes of `name` as stored, read by a fresh client without a cache."""
    reader = cluster.client(cache_blocks=0)
    data = read_file(reader, name, size)
    assert reader.pfs_finish(reader.pfs_initialize()) == 0
    return data


def overwrite_and_close(cluster: Cluster, name: str, pieces: dict[int, bytes]) -> None:
    """Another client writes `pieces` (offset -> bytes) and closes: its write must stay."""
    b = cluster.client()
    fd = b.pfs_open(name, pfs.PFS_READ_WRITE)
    for offset, data in pieces.items():
        assert b.pfs_write(fd, data, len(data), offset) == len(data), pfs.pfs_last_error()
    assert b.pfs_close(fd) == 0
    assert b.pfs_finish(b.pfs_initialize()) == 0


@pytest.mark.parametrize("after_resume", ["close", "fsync", "read", "write"])
def test_client_paused_past_its_lease_cannot_overwrite_or_read_stale(short_lease, name,
                                                                       after_resume):
    make_file(short_lease, name)
    a = RemoteClient(short_lease, cache_blocks=16)
    try:
        fd = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        assert a.call("pfs_write", fd, b"a" * B, B, 0) == B        # dirty in its cache
        assert a.call("pfs_read", fd, B, 4 * B) == (B, b"i" * B)   # cached, under a read token
        a.pause()
        try:
            overwrite_and_close(short_lease, name, {0: b"b" * B, 4 * B: b"b" * B})
        finally:
            a.resume()
        if after_resume == "close":
            result = a.call("pfs_close", fd)
        elif after_resume == "fsync":
            result = a.call("pfs_fsync", fd)
        elif after_resume == "read":
            result, stale = a.call("pfs_read", fd, B, 4 * B)
            assert stale == b""
        else:
            result = a.call("pfs_write", fd, b"w" * 10, 10, 100)
        assert result == -1
        assert a.call("last_errno") == errno.ENOTCONN
        message = a.call("last_error")
        assert "were never stored and are lost" in message, message
        assert "pfs_initialize" in message
    finally:
        a.close()
    expected = bytearray(INITIAL)
    expected[0:B] = expected[4 * B:5 * B] = b"b" * B
    assert read_all(short_lease, name, len(INITIAL)) == bytes(expected)


def test_client_paused_mid_write_does_not_overwrite_a_later_close(short_lease, name):
    """A write still sending when its client froze: the rest of it is refused at the
    fileservers, so the other client's closed write is intact everywhere."""
    size = 64 << 20
    make_file(short_lease, name, b"")
    a = RemoteClient(short_lease, cache_blocks=0)
    try:
        fd = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        started = time.monotonic()
        assert a.call("write_pattern", fd, ord("x"), size, 0) == [size, 0]
        whole = time.monotonic() - started  # how long one such write takes here
        a.send("write_pattern", fd, ord("a"), size, 0)
        time.sleep(whole / 3)
        a.pause()
        try:
            overwrite_and_close(short_lease, name, {0: b"b" * size})
        finally:
            a.resume()
        n, err = a.receive(timeout=120)
        assert (n, err) in ((size, 0), (-1, errno.ENOTCONN))
        if n == size:  # it finished before freezing: its later close must fail instead
            assert a.call("pfs_close", fd) == -1
    finally:
        a.close()
    assert read_all(short_lease, name, size) == b"b" * size


def test_ended_session_is_refused_at_every_fileserver(short_lease, name):
    """The fileservers refuse a session the metaserver ended, even one that still knows its key."""
    make_file(short_lease, name)
    a = short_lease.client()
    fd = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fd, b"a" * B, B, 0) == B
    session, dataplane, f = a._session, a._dataplane, a._fds[fd]
    assert a.pfs_finish(a.pfs_initialize()) == 0
    with pytest.raises(OSError) as refused:
        dataplane.write(f, 0, memoryview(b"late" * 100))  # write-behind: refused when settled
        dataplane.settle(f)
    assert refused.value.errno == errno.ENOTCONN
    assert "ended" in str(refused.value)
    assert read_all(short_lease, name, len(INITIAL))[:B] == b"a" * B
    assert session.lost is not None  # a refusal gives the session up


@pytest.mark.timeout(120)  # a writer that waits for the stuck handler instead hangs here
def test_client_that_ignores_a_revocation_is_evicted_and_fenced(short_lease, name):
    """A client that keeps its heartbeats going but never acknowledges a revocation (a stuck
    handler) is evicted; the waiting writer proceeds, the evicted client's late write-back is
    refused, and its own calls fail with ENOTCONN."""
    make_file(short_lease, name)
    a = short_lease.client()
    fd = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fd, b"a" * B, B, 0) == B
    release = threading.Event()
    gave_up = threading.Event()  # the stuck handler stopped waiting for `release` on its own
    handle = a._session._on_revoke

    def stuck(revoke):
        if not release.wait(60):
            gave_up.set()
        return handle(revoke)
    a._session._on_revoke = stuck
    try:
        overwrite_and_close(short_lease, name, {0: b"b" * B})
        assert not gave_up.is_set()  # the writer went ahead while a's handler was still stuck
        wait_until(lambda: a._session.lost is not None, timeout=10, what="a to learn it was evicted")
    finally:
        release.set()
    buf = bytearray(B)
    assert a.pfs_read(fd, buf, B, 0) == -1
    assert pfs.pfs_last_error().errno == errno.ENOTCONN
    assert read_all(short_lease, name, len(INITIAL))[:B] == b"b" * B
