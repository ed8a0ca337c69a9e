"""Fencing (docs/consistency.md): once the metaserver has ended a session, nothing that session still does
reaches stored data or returns stale data.

Each test freezes a client process (SIGSTOP) past its lease while it holds tokens and dirty
cached bytes; another client then writes the same bytes and closes. When the frozen client is
resumed, whatever it does fails with ENOTCONN and a message saying what it lost, and the other
client's closed write stays, byte for byte.
"""
import errno
import os
import signal
import threading
import time

import pytest

import pfs
from pfs.protocol.capability import CAPABILITY_SECONDS
from pfs_servers.fileserver.fencing import NotAdmitted, SessionTable
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


def test_a_paused_client_stops_serving_cached_reads_at_its_lease(short_lease, name):
    """The cache's fast path (one C call, without the Client's checks) serves a cached read
    while the lease holds, and compares the lease's deadline itself: a client paused past its
    lease, its token given to a writer meanwhile, never returns the old bytes."""
    make_file(short_lease, name)
    a = RemoteClient(short_lease, cache_blocks=16)
    try:
        fd = a.call("pfs_open", name, pfs.PFS_READ)
        assert a.call("pfs_read", fd, B, 4 * B) == (B, b"i" * B)  # a whole block: cached
        assert a.call("fast_read", fd, 10, 4 * B + 20) == (10, b"i" * 10)  # the fast path
        a.pause()
        try:
            overwrite_and_close(short_lease, name, {4 * B: b"b" * B})
        finally:
            a.resume()
        assert a.call("fast_read", fd, 10, 4 * B + 40) == (-1, b"")
        n, data = a.call("pfs_read", fd, 10, 4 * B + 40)
        assert (n, data) in ((10, b"b" * 10), (-1, b"")), (n, data)
    finally:
        a.close()


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


def test_a_fileserver_keeps_a_fence_as_long_as_a_capability_could_outlive_it():
    """A session begun after a fileserver attached (at or above the floor its welcome gave)
    is served without any message; once fenced it is refused for as long as any capability of
    it could still be unexpired, by the metaserver's clock; then the fence is forgotten, so the
    table does not grow with every session that ever ended."""
    now = [0.0]
    table = SessionTable(clock=lambda: now[0])
    table.install([0, 3], new_sessions_from=10)
    table.renew(lease_ends=1e9, metaserver_time=1000.0)
    for served in (0, 3, 10, 11):
        with table.serving(served):
            pass
    for never_or_ended in (1, 4, 9):  # below the floor, not in the table
        with pytest.raises(NotAdmitted), table.serving(never_or_ended):
            pass
    table.fence(11, fenced_at=1000.0)
    table.fence(3, fenced_at=1000.0)
    now[0] = CAPABILITY_SECONDS - 1  # the metaserver's clock: 1000 + this, by the last renewal
    table.renew(lease_ends=1e9, metaserver_time=0.0)
    for fenced in (3, 11):
        with pytest.raises(NotAdmitted), table.serving(fenced):
            pass
    now[0] = CAPABILITY_SECONDS + 1  # every capability of session 11 has expired
    table.renew(lease_ends=1e9, metaserver_time=0.0)
    with table.serving(11):  # (its calls are refused by their expired capabilities instead)
        pass
    with pytest.raises(NotAdmitted), table.serving(3):
        pass


def test_a_write_refused_as_fenced_while_a_revocation_waits_for_it(short_lease, name):
    """A write in flight to a stalled fileserver, and a revocation of its range waiting for it
    to be stored; the client is evicted (it cannot acknowledge) and fenced, and once the
    fileserver runs again it refuses the write. The client learns that its session is lost,
    and its calls fail with ENOTCONN at once: nothing waits on another forever."""
    make_file(short_lease, name)
    a = RemoteClient(short_lease, cache_blocks=0, PFS_RETRY_SECONDS="60")
    other = short_lease.client(cache_blocks=0)
    stalled = None
    try:
        fd = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        holder = other.fileservers()[a.call("pfs_fstat", fd)["servers"][0]]
        stalled = short_lease.fileserver_pid(holder)
        os.kill(stalled, signal.SIGSTOP)
        assert a.call("pfs_write", fd, b"a" * B, B, 0) == B  # in flight (write-behind)
        overwrite = threading.Thread(target=overwrite_and_close,
                                     args=(short_lease, name, {0: b"b" * B}))
        overwrite.start()  # its token is revoked from `a`, which waits for its write
        wait_until(lambda: f"client {a.client_id} session ended: it did not acknowledge"
                   in short_lease.log.read_text(), timeout=30, what="the eviction")
        os.kill(stalled, signal.SIGCONT)
        stalled = None
        overwrite.join(60)
        assert not overwrite.is_alive()
        assert a.call("pfs_close", fd, timeout=30) == -1
        assert a.call("last_errno") == errno.ENOTCONN
    finally:
        if stalled is not None:
            os.kill(stalled, signal.SIGCONT)
        a.close()
        assert other.pfs_finish(other.pfs_initialize()) == 0
    assert read_all(short_lease, name, len(INITIAL)) == b"b" * B + INITIAL[B:]


def test_a_paused_client_keeping_tokens_of_a_closed_file_loses_them(short_lease, name):
    """Tokens a client keeps after closing a file (its lock cache) do not hold anyone up: a
    frozen keeper's tokens are taken by another client's open at once. Frozen past its lease,
    its session ends and the rest go with it: resumed, it gets ENOTCONN rather than reopening
    the file with them, and the other client's write stands."""
    make_file(short_lease, name)
    a = RemoteClient(short_lease, cache_blocks=16)
    try:
        fd = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        assert a.call("pfs_write", fd, b"a" * B, B, 0) == B
        assert a.call("pfs_close", fd) == 0                       # its tokens stay, unused
        a.pause()
        try:
            overwrite_and_close(short_lease, name, {0: b"b" * B})  # takes them: no waiting
            time.sleep(2 * LEASE)                                  # a's lease runs out
        finally:
            a.resume()
        assert a.call("pfs_open", name, pfs.PFS_READ_WRITE) == -1
        assert a.call("last_errno") == errno.ENOTCONN
    finally:
        a.close()
    assert read_all(short_lease, name, len(INITIAL)) == b"b" * B + INITIAL[B:]
