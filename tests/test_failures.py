"""Clients and servers that die: others proceed, and what was acknowledged survives."""
import os
import signal
import subprocess
import sys
import threading

import pfs
from clusters import Cluster, RemoteClient, COURSE


def write_in_thread(client: pfs.Client, fd: int, data: bytes, offset: int) -> threading.Thread:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(
        client.pfs_write(fd, data, len(data), offset)), daemon=True)
    thread.result = result
    thread.start()
    return thread


def test_killed_client_does_not_block_others(cluster, clients, name):
    """A client killed while holding a write token (and dirty cached data) loses its tokens as
    soon as its stream breaks; another client's conflicting write then proceeds, and what the
    dead client had closed before is intact."""
    a = RemoteClient(cluster)
    fa = a.call("pfs_create", name, 2)
    fa = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
    assert a.call("pfs_write", fa, b"k" * 1000, 1000, 0) == 1000
    assert a.call("pfs_close", fa) == 0
    fa = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
    assert a.call("pfs_write", fa, b"z" * 10, 10, 0) == 10  # holds the write token, dirty
    a.kill()
    b = clients(1)
    fb = b.pfs_open(name, pfs.PFS_READ_WRITE)
    writer = write_in_thread(b, fb, b"b" * 100, 500)
    writer.join(timeout=20)  # far less than the lease: the broken stream frees the token
    assert writer.result == [100]
    buf = bytearray(1000)
    assert b.pfs_read(fb, buf, 1000, 0) == 1000
    assert buf[10:500] == b"k" * 490 and buf[500:600] == b"b" * 100
    assert b.pfs_close(fb) == 0


def test_client_cut_off_loses_tokens_when_lease_runs_out(cluster, clients, name):
    """A client that stops answering without its stream breaking (SIGSTOP) is evicted when its
    lease (3 s in the tests' clusters) runs out; the waiting writer then proceeds."""
    a = RemoteClient(cluster)
    a.call("pfs_create", name, 2)
    fa = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
    assert a.call("pfs_write", fa, b"s" * 100, 100, 0) == 100
    os.kill(a.process.pid, signal.SIGSTOP)
    try:
        b = clients(1)
        fb = b.pfs_open(name, pfs.PFS_READ_WRITE)
        writer = write_in_thread(b, fb, b"b" * 10, 0)
        writer.join(timeout=30)
        assert writer.result == [10]
        assert b.pfs_close(fb) == 0
    finally:
        os.kill(a.process.pid, signal.SIGCONT)
        a.kill()


def test_cluster_killed_and_restarted_serves_closed_files(tmp_path):
    """SIGKILL to every server at once, then `pfs up` on the same data directory: every file is
    as it was after its last close or fsync, with its metadata."""
    cluster = Cluster(tmp_path / "data", **COURSE).start()
    contents = {f"file-{i}": os.urandom(700 * i + 13) for i in range(1, 6)}
    try:
        client = cluster.client()
        for n, data in contents.items():
            assert client.pfs_create(n, 1 + len(n) % 4) == 0
            fd = client.pfs_open(n, pfs.PFS_READ_WRITE)
            assert client.pfs_write(fd, data, len(data), 0) == len(data)
            assert client.pfs_close(fd) == 0
        synced = os.urandom(3000)
        assert client.pfs_create("synced", 4) == 0
        fd = client.pfs_open("synced", pfs.PFS_READ_WRITE)
        assert client.pfs_write(fd, synced, len(synced), 0) == len(synced)
        assert client.pfs_fsync(fd) == 0  # still open when the cluster dies
        contents["synced"] = synced
        before = {}
        for n in contents:
            fd2 = client.pfs_open(n, pfs.PFS_READ) if n != "synced" else fd
            meta = pfs.Metadata()
            assert client.pfs_fstat(fd2, meta) == 0
            before[n] = meta
            if n != "synced":
                client.pfs_close(fd2)
    finally:
        cluster.kill()
    cluster.start()
    try:
        client = cluster.client()
        for n, data in contents.items():
            fd = client.pfs_open(n, pfs.PFS_READ)
            meta = pfs.Metadata()
            assert client.pfs_fstat(fd, meta) == 0
            assert meta.file_size == len(data)
            assert (meta.ctime, meta.recipe) == (before[n].ctime, before[n].recipe)
            buf = bytearray(len(data) + 10)
            assert client.pfs_read(fd, buf, len(buf), 0) == len(data)
            assert buf[:len(data)] == data
            assert client.pfs_close(fd) == 0
        client.pfs_finish(client.pfs_initialize())
    finally:
        cluster.stop()


def test_exit_without_finish_keeps_written_data(cluster, clients, name):
    """A program that writes and exits without pfs_close or pfs_finish keeps its data, as a
    POSIX program does: exit writes back and ends the session (and does not hang)."""
    program = (f"import pfs\npfs.pfs_initialize()\npfs.pfs_create({name!r}, 2)\n"
               f"fd = pfs.pfs_open({name!r}, pfs.PFS_READ_WRITE)\n"
               f"assert pfs.pfs_write(fd, b'kept at exit', 12, 0) == 12\n")
    done = subprocess.run([sys.executable, "-c", program], env=cluster.env(), timeout=60,
                          capture_output=True, text=True, cwd=cluster.data_dir)
    assert done.returncode == 0, done.stderr
    client = clients(1)
    fd = client.pfs_open(name, pfs.PFS_READ)
    buf = bytearray(20)
    assert client.pfs_read(fd, buf, 20, 0) == 12 and buf[:12] == b"kept at exit"
    assert client.pfs_close(fd) == 0


def test_ctrl_c_stops_every_server_cleanly(tmp_path):
    """Ctrl-C reaches the whole process group: every server stops by itself (and says so),
    none has to be killed. A few rounds, as where the signal lands varies."""
    for round_ in range(3):
        cluster = Cluster(tmp_path / f"data{round_}", **COURSE).start()
        os.killpg(cluster.process.pid, signal.SIGINT)
        try:
            assert cluster.process.wait(15) == 0
        finally:
            cluster.kill()
        log = cluster.log.read_text()
        assert log.count(" stopped") == 5 and "metaserver stopped" in log, log[-2000:]
