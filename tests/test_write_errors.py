"""A write that was not stored is never reported as stored (README, "What fsync and close
promise").

A client writes 8 MiB and fsyncs; then a fileserver holding some of the next stripes stalls
(SIGSTOP), crashes and stays down for a while (SIGKILL, its supervisor paused), or refuses the
writes (its disk is full); meanwhile the client writes 8 MiB more. After the fault it calls
fsync, writes, reads, or nothing, and then closes. Whatever happened, the calls' return values
must tell the truth: every byte of a write that returned its length is in the file if close
returned 0; close returns 0 only when all of it is; a failed fsync or close names the bytes
not stored; a failure sticks until the bytes are stored; and the stored file never holds bytes
(zeros included) that no write put there.
"""
import contextlib
import errno
import os
import re
import signal
import time

import pytest

import pfs
from clusters import Cluster, wait_until
from test_disk_full import _can_mount_tmpfs, small_disk_cluster

MiB = 1 << 20
#: 1 MiB stripe units over 4 fileservers, as shipped; a small cache, so writes stream.
LAYOUT = dict(fileservers=4, block_size=64 * 1024, stripe_blocks=16)
AFTER = ["fsync", "write", "read", "close"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("write-errors"), lease_seconds=10.0, **LAYOUT).start()
    yield c
    c.stop()


@pytest.fixture
def client(cluster, monkeypatch):
    monkeypatch.setenv("PFS_RETRY_SECONDS", "2")
    c = cluster.client(cache_blocks=64)
    yield c
    if c._session is not None and not c._session.lost:
        c.pfs_finish(c._session.client_id)


@pytest.fixture
def reader(cluster):
    """A client without a cache that reads what is stored (started before any fault)."""
    c = cluster.client(cache_blocks=0)
    yield c
    c.pfs_finish(c.pfs_initialize())


def holder_of(client: pfs.Client, fd: int, offset: int) -> str:
    """The address of the fileserver holding the file's byte `offset`."""
    meta = pfs.Metadata()
    assert client.pfs_fstat(fd, meta) == 0
    unit = offset // (meta.recipe.block_size * meta.recipe.stripe_blocks)
    return client.fileservers()[meta.recipe.servers[unit % meta.recipe.stripe_width]]


class Writer:
    """Runs the scenario's calls and remembers what each one promised."""

    def __init__(self, client: pfs.Client, name: str, width: int = 4) -> None:
        self.client, self.name = client, name
        assert client.pfs_create(name, width) == 0, pfs.pfs_last_error()
        self.fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
        self.acknowledged = bytearray()  # what successful writes put in the file, in order
        self.durable = 0  # bytes surely stored: up to the last successful fsync
        self.failures: list[OSError] = []

    def write(self, data: bytes) -> None:
        result = self.client.pfs_write(self.fd, data, len(data), len(self.acknowledged))
        if result == len(data):
            self.acknowledged += data
        else:  # a failed write may be stored in part; nothing after it is written
            assert result == -1
            self.failed()

    def fsync(self) -> bool:
        if self.client.pfs_fsync(self.fd) == 0:
            self.durable = len(self.acknowledged)
            return True
        self.failed()
        return False

    def close(self) -> bool:
        if self.client.pfs_close(self.fd) == 0:
            return True
        self.failed()
        return False

    def failed(self) -> None:
        error = pfs.pfs_last_error()
        assert isinstance(error, OSError) and error.errno, error
        self.failures.append(error)


def unstored_ranges(error: OSError) -> list[tuple[int, int]]:
    """The byte ranges a failure says are not stored ("bytes A-B, C-D of ...")."""
    found = re.search(r"bytes ((?:\d+-\d+(?:, )?)+)", str(error))
    assert found, f"the failure does not say which bytes are not stored: {error}"
    return [tuple(int(n) for n in r.split("-")) for r in found.group(1).split(", ")]


def stored_file(reader: pfs.Client, name: str) -> bytes:
    fd = reader.pfs_open(name, pfs.PFS_READ)
    meta = pfs.Metadata()
    assert reader.pfs_fstat(fd, meta) == 0
    buf = bytearray(meta.file_size)
    assert reader.pfs_read(fd, buf, len(buf), 0) == meta.file_size, pfs.pfs_last_error()
    assert reader.pfs_close(fd) == 0
    return bytes(buf)


@contextlib.contextmanager
def stalled(cluster: Cluster, address: str):
    """The fileserver at `address` frozen for 8 seconds from now."""
    pid = cluster.fileserver_pid(address)
    os.kill(pid, signal.SIGSTOP)
    until = time.monotonic() + 8
    try:
        yield
        time.sleep(max(0.0, until - time.monotonic()))
    finally:
        os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def crashed(cluster: Cluster, address: str):
    """The fileserver at `address` killed, and restarted by `pfs up` only when the block ends
    (its supervisor is paused meanwhile)."""
    pid = cluster.fileserver_pid(address)
    os.kill(cluster.process.pid, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        yield
    finally:
        os.kill(cluster.process.pid, signal.SIGCONT)
    wait_until(lambda: all_online(cluster), timeout=30, what="the fileserver to be restarted")


def all_online(cluster: Cluster) -> bool:
    """Whether every fileserver is online (a client can start with one of them still down)."""
    probe = pfs.Client(metaserver=cluster.address, cache_blocks=0)
    if probe.pfs_initialize() == -1:
        return False
    layout = probe.layout()
    assert probe.pfs_finish(probe.pfs_initialize()) == 0
    return layout.fileservers_online == layout.fileservers


def run(cluster: Cluster, client: pfs.Client, name: str, fault, after: str) -> Writer:
    w = Writer(client, name)
    first = os.urandom(8 * MiB)
    w.write(first[:4 * MiB])
    w.write(first[4 * MiB:])
    assert w.fsync(), w.failures
    with fault(cluster, holder_of(client, w.fd, 9 * MiB)):
        second = os.urandom(8 * MiB)
        w.write(second[:4 * MiB])
        w.write(second[4 * MiB:])
        time.sleep(3)  # long enough for the writes in flight to give up
        if after == "fsync":
            w.fsync()
        elif after == "write":
            w.write(b"t" * 4096)
        elif after == "read":
            buf = bytearray(4096)
            if client.pfs_read(w.fd, buf, len(buf), 9 * MiB) == 4096:
                assert bytes(buf) == w.acknowledged[9 * MiB:9 * MiB + 4096]
            else:
                w.failed()
        closed = w.close()
    if not closed:  # the failure stuck: it names bytes that were written
        for start, end in unstored_ranges(w.failures[-1]):
            assert 8 * MiB <= start <= end < len(w.acknowledged) + 4 * MiB
        closed = w.close()  # the fault is over: now they are stored
    assert closed, w.failures
    return w


def check(reader: pfs.Client, w: Writer) -> None:
    """Close returned 0: every acknowledged byte is stored, and nothing else."""
    assert stored_file(reader, w.name) == bytes(w.acknowledged)


@pytest.mark.parametrize("after", AFTER)
def test_stalled_fileserver(cluster, client, reader, name, after):
    check(reader, run(cluster, client, name, stalled, after))


@pytest.mark.parametrize("after", AFTER)
def test_crashed_fileserver_is_sticky_until_restarted(cluster, client, reader, name, after):
    w = run(cluster, client, name, crashed, after)
    check(reader, w)
    assert w.failures, "nothing failed while a fileserver was down"
    # What failed said so: bytes not stored, or the fileserver down.
    assert all("not stored" in str(f) or f.errno == errno.EHOSTDOWN for f in w.failures), \
        w.failures


def test_close_while_down_fails_until_stored_then_succeeds(cluster, client, reader, name):
    """Close after close (and fsync) fails while the bytes cannot be stored, each naming them;
    once the fileserver is back, close stores them and succeeds."""
    w = Writer(client, name)
    data = os.urandom(12 * MiB)
    w.write(data[:8 * MiB])
    assert w.fsync()
    with crashed(cluster, holder_of(client, w.fd, 9 * MiB)):
        w.write(data[8 * MiB:])
        assert not w.close() and not w.close() and not w.fsync()
        for failure in w.failures:
            assert any(start < 12 * MiB and 8 * MiB <= end for start, end in
                       unstored_ranges(failure)), failure
    assert w.close(), w.failures
    assert stored_file(reader, name) == data


def test_session_lost_with_unstored_bytes_says_what_was_lost(cluster, client, reader, name):
    """Finishing with bytes that cannot be stored ends the session all the same: finish fails,
    saying what was lost. A reader that saw the larger size meanwhile (fstat asks the writer)
    is then shown the stored size again, and reads only stored bytes: never zeros."""
    w = Writer(client, name)
    data = os.urandom(12 * MiB)
    w.write(data[:8 * MiB])
    assert w.fsync()
    fd = reader.pfs_open(name, pfs.PFS_READ)
    meta = pfs.Metadata()
    with crashed(cluster, holder_of(client, w.fd, 9 * MiB)):
        w.write(data[8 * MiB:])
        assert reader.pfs_fstat(fd, meta) == 0 and meta.file_size == 12 * MiB
        assert client.pfs_finish(client.pfs_initialize()) == -1
        message = str(pfs.pfs_last_error())
        assert "bytes sent to the fileservers" in message and "lost" in message, message
    assert reader.pfs_fstat(fd, meta) == 0 and meta.file_size == 8 * MiB
    buf = bytearray(12 * MiB)
    assert reader.pfs_read(fd, buf, len(buf), 0) == 8 * MiB
    assert buf[:8 * MiB] == data[:8 * MiB]
    assert reader.pfs_close(fd) == 0
    assert stored_file(reader, name) == data[:8 * MiB]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare and unprivileged tmpfs mounts")
@pytest.mark.parametrize("after", AFTER)
def test_refused_write_is_sticky_until_the_disk_has_room(tmp_path, monkeypatch, after):
    """The fileserver refuses writes (its disk is full): fsync and close fail with ENOSPC,
    naming the bytes, until a file is deleted to make room; then close stores them."""
    monkeypatch.setenv("PFS_RETRY_SECONDS", "1")
    cluster = small_disk_cluster(tmp_path / "data", "fs0", "6m", fileservers=1)
    try:
        client, reader = cluster.client(cache_blocks=64), cluster.client(cache_blocks=0)
        ballast = Writer(client, "ballast", width=1)
        ballast.write(os.urandom(3 * MiB))
        assert ballast.close()
        w = Writer(client, "data", width=1)
        data = os.urandom(5 * MiB)
        w.write(data[:MiB])
        assert w.fsync()
        w.write(data[MiB:])
        if after == "fsync":
            assert not w.fsync() and not w.fsync()  # sticky
        elif after == "write":
            w.write(b"t" * 4096)
        elif after == "read":
            buf = bytearray(4096)
            if client.pfs_read(w.fd, buf, 4096, 4 * MiB) != 4096:
                w.failed()
        assert not w.close()
        assert all(f.errno == errno.ENOSPC for f in w.failures), w.failures
        assert all(unstored_ranges(f) for f in w.failures)
        assert client.pfs_delete("ballast") == 0
        wait_until(w.close, timeout=30, what="room on the disk for the unstored bytes")
        assert stored_file(reader, "data") == bytes(w.acknowledged)
        client.pfs_finish(client.pfs_initialize())
        reader.pfs_finish(reader.pfs_initialize())
    finally:
        cluster.stop()
