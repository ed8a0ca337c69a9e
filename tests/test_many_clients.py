"""Many Clients in one process (README, "Many clients per process"): they share channels,
threads and one session stream, yet each keeps its own session, tokens and cache; finishing or
dropping one leaves the others working.

The bounds asserted on threads and memory are generous (a fraction of what one thread or one
eagerly allocated cache per Client would cost), so that they are not flaky; the benchmark
(bench/bench_sessions.py) measures the real figures.
"""
from __future__ import annotations

import gc
import pathlib
import threading
import weakref

import grpc
import pytest

import pfs
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.client.stream import stream_key
from pfs.runtime import holdings
from clusters import COURSE, Cluster, read_file, wait_until, write_file

CLIENTS = 50
B = COURSE["block_size"]


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    """A cluster of this module's own, so that its session count is ours alone."""
    c = Cluster(tmp_path_factory.mktemp("many"), **COURSE).start()
    yield c
    c.stop()


def live_sessions(cluster: Cluster) -> int:
    with grpc.insecure_channel(cluster.address) as channel:
        return pb_grpc.MetaServerStub(channel).Status(pb.StatusRequest(), timeout=10).sessions


def stats(client: pfs.Client) -> pfs.ExecStat:
    s = pfs.ExecStat()
    assert client.pfs_execstat(s) == 0, pfs.pfs_last_error()
    return s


def rss_bytes() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def many(own_cluster, name):
    """CLIENTS clients, each with a file of its own (`name`-k) holding one dirty cached block
    that it has also read back (a cache hit), and the file open read-write."""
    made: list[tuple[pfs.Client, int]] = []
    for k in range(CLIENTS):
        c = own_cluster.client(cache_blocks=16)
        fd = write_file(c, f"{name}-{k}", bytes([k]) * B, width=1, close=False)
        buf = bytearray(B)
        assert c.pfs_read(fd, buf, B, 0) == B and buf == bytes([k]) * B
        made.append((c, fd))
    yield made
    for c, _ in made:
        if c._session is not None and not c._session.lost:
            c.pfs_finish(c._session.client_id)


def test_each_client_has_its_own_session_tokens_and_cache(own_cluster, many, name):
    assert len({c.pfs_initialize() for c, _ in many}) == CLIENTS
    before = [stats(c) for c, _ in many]
    assert all(s.num_read_hits >= 1 and s.num_invalidations == 0 for s in before)
    # Another client of the same process takes client 0's file: only client 0 is revoked.
    other = own_cluster.client(cache_blocks=16)
    fd = other.pfs_open(f"{name}-0", pfs.PFS_READ_WRITE)
    assert other.pfs_write(fd, b"o" * 10, 10, 0) == 10
    assert other.pfs_close(fd) == 0
    assert other.pfs_finish(other.pfs_initialize()) == 0
    after = [stats(c) for c, _ in many]
    assert after[0].num_invalidations == 1
    for k in range(1, CLIENTS):
        assert after[k] == before[k], f"client {k} was touched by client 0's revocation"
    # Each still reads its own bytes: client 0 the other's write over its own write-back,
    # the rest from their caches.
    buf = bytearray(B)
    c0, fd0 = many[0]
    assert c0.pfs_read(fd0, buf, B, 0) == B and buf == b"o" * 10 + bytes([0]) * (B - 10)
    for k, (c, fd) in enumerate(many[1:], 1):
        assert c.pfs_read(fd, buf, B, 0) == B and buf == bytes([k]) * B
        assert stats(c).num_read_hits == before[k].num_read_hits + 1


def test_finishing_one_leaves_the_others_working(own_cluster, many, name):
    sessions = live_sessions(own_cluster)
    gone, gone_fd = many[0]
    assert gone.pfs_close(gone_fd) == 0
    assert gone.pfs_finish(gone.pfs_initialize()) == 0
    assert live_sessions(own_cluster) == sessions - 1
    for k, (c, fd) in enumerate(many[1:], 1):
        assert c.pfs_write(fd, b"w", 1, B) == 1, pfs.pfs_last_error()
        assert c.pfs_close(fd) == 0, pfs.pfs_last_error()
        assert read_file(c, f"{name}-{k}") == bytes([k]) * B + b"w"
    # The finished one starts afresh on the same shared machinery.
    assert gone.pfs_initialize() > 0
    assert read_file(gone, f"{name}-0") == bytes([0]) * B
    assert gone.pfs_finish(gone.pfs_initialize()) == 0


@pytest.mark.timeout(120)
def test_a_client_slow_to_give_up_a_token_delays_no_other(own_cluster, many, name):
    """Client 0's revocation handler is stuck (as when an operation of its holds its lock);
    meanwhile a revocation of client 1, which comes down the same stream and runs on the same
    pool, is answered, and the stream's heartbeats go on (client 1's lease is renewed)."""
    (slow, _), (quick, _) = many[0], many[1]
    release = threading.Event()
    handle = slow._session._on_revoke
    slow._session._on_revoke = lambda revoke: (release.wait(30), handle(revoke))[1]
    other = own_cluster.client(cache_blocks=16)
    try:
        stuck = threading.Thread(target=lambda: other.pfs_write(
            other.pfs_open(f"{name}-0", pfs.PFS_READ_WRITE), b"x", 1, 0), daemon=True)
        stuck.start()  # waits for client 0
        renewed = quick._session._lease_ends
        fd = other.pfs_open(f"{name}-1", pfs.PFS_READ_WRITE)
        assert other.pfs_write(fd, b"y", 1, 0) == 1  # client 1 gave its token up
        assert stats(quick).num_invalidations == 1
        wait_until(lambda: quick._session._lease_ends > renewed, timeout=10,
                   what="a heartbeat acknowledgement while client 0's revocation is stuck")
        assert not release.is_set()  # (client 0's handler is still waiting for it)
    finally:
        release.set()
    stuck.join(30)
    assert not stuck.is_alive()
    assert other.pfs_finish(other.pfs_initialize()) == 0


def test_client_dropped_without_finish_ends_its_session(own_cluster, name):
    """A Client the program drops is garbage-collected, and its session ends with it: the
    metaserver's session count drops, and the tokens it held go to others at once. Also when
    its last call failed (the thread keeps that error for pfs_last_error)."""
    keep = own_cluster.client()
    sessions = live_sessions(own_cluster)

    def drop_one() -> None:
        c = own_cluster.client()
        write_file(c, name, b"d" * B, width=2, close=False)  # holds the tail's WRITE token
        assert live_sessions(own_cluster) == sessions + 1
        assert c.pfs_close(12345) == -1
    drop_one()
    wait_until(lambda: gc.collect() >= 0 and live_sessions(own_cluster) == sessions,
               timeout=20, what="the dropped client's session to end")
    fd = keep.pfs_open(name, pfs.PFS_READ_WRITE)
    assert keep.pfs_write(fd, b"k", 1, 0) == 1  # not held up by the dropped client's token
    assert keep.pfs_close(fd) == 0
    assert keep.pfs_finish(keep.pfs_initialize()) == 0


def test_client_dropped_while_its_metaserver_is_gone_is_collected(tmp_path, name):
    """A Client the program drops while its session waits for a metaserver that went away is
    garbage-collected all the same: its stream stops trying to rejoin (and to warn that the
    metaserver is gone) once no session of the process is left on it."""
    cluster = Cluster(tmp_path / "gone", **COURSE).start()

    def left_waiting() -> tuple[weakref.ref, tuple]:
        """A client whose cluster is gone, noticed; (a weak reference to it, its stream)."""
        try:
            client = cluster.client()
            write_file(client, name, b"d" * B, width=1)
        finally:
            cluster.stop()
        wait_until(lambda: client._session.recovering, timeout=20,
                   what="the client to notice that its metaserver is gone")
        return weakref.ref(client), stream_key(cluster.address, client._state.credentials)
    dropped, stream = left_waiting()
    wait_until(lambda: gc.collect() >= 0 and dropped() is None and holdings.holders(stream) == 0,
               timeout=20, what="the dropped client and its session stream to go")


def test_threads_and_memory_stay_bounded_as_clients_are_added(own_cluster, name):
    """Each Client with a cache of 2 MiB (4096 blocks of 512 bytes) that it barely uses, opening
    and reading a shared file: the process grows by far less than a thread or a cache each."""
    writer = own_cluster.client()
    write_file(writer, name, b"s" * (8 * B), width=4)
    assert writer.pfs_finish(writer.pfs_initialize()) == 0
    made = []

    def add(n: int) -> None:
        for _ in range(n):
            c = own_cluster.client(cache_blocks=4096)
            fd = c.pfs_open(name, pfs.PFS_READ)
            buf = bytearray(B)
            assert c.pfs_read(fd, buf, B, 0) == B and buf == b"s" * B
            made.append(c)
    try:
        add(5)
        threads, rss = threading.active_count(), rss_bytes()
        add(CLIENTS)
        assert threading.active_count() - threads <= CLIENTS // 2
        assert rss_bytes() - rss <= CLIENTS * (1 << 20)  # an eager cache alone is 2 MiB
    finally:
        for c in made:
            c.pfs_finish(c.pfs_initialize())
