"""Fileservers as members of the cluster (README, "Fileservers that fail"): a member keeps its
place under its name even when it comes back with its data lost, `pfs status` says so, lost
bytes are EIO and never zeros, and a member that is down leaves the cluster degraded, not
closed."""
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import pfs
from clusters import COURSE, Cluster, RemoteClient, read_file, wait_until, write_file

CONTENT = bytes(range(256)) * 16  # 4 KiB: 1 KiB stripe units over 4 fileservers


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "data", lease_seconds=3.0, **COURSE).start()
    yield c
    c.stop()


@contextlib.contextmanager
def member_down(cluster: Cluster, name: str):
    """Fileserver `name` (fs0...) killed; `pfs up` restarts it when the block ends."""
    os.kill(cluster.process.pid, signal.SIGSTOP)  # its supervisor waits meanwhile
    try:
        os.kill(fileserver_pid(cluster, name), signal.SIGKILL)
        yield cluster.data_dir / name
    finally:
        os.kill(cluster.process.pid, signal.SIGCONT)


def fileserver_pid(cluster: Cluster, name: str) -> int:
    for pid in cluster.server_pids("fileserver"):
        if str(cluster.data_dir / name).encode() in open(f"/proc/{pid}/cmdline", "rb").read():
            return pid
    raise AssertionError(f"no fileserver {name}")


def status(cluster: Cluster) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfs", "status"], capture_output=True, text=True,
                          timeout=30, env=cluster.env(), cwd=cluster.data_dir)


def all_online(cluster: Cluster) -> bool:
    return status(cluster).returncode == 0  # it fails while a member is offline


def test_a_receipt_from_before_a_member_lost_its_data_is_not_believed(cluster):
    """A write's receipt names the fileserver's data directory and process: once the member has
    lost its data (and restarted), a close showing a receipt from before is not believed, the
    fileserver is asked, and the size, which it no longer holds, is refused."""
    client = cluster.client(cache_blocks=0)
    assert client.pfs_create("f", 1) == 0
    fd = client.pfs_open("f", pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, CONTENT, len(CONTENT), 0) == len(CONTENT)
    f = client._fds[fd]
    wait_until(lambda: f.receipts.showing(f.recipe, len(CONTENT)), what="the write's receipt")
    members = json.loads(subprocess.run(
        [sys.executable, "-m", "pfs", "status", "--json"], capture_output=True, text=True,
        timeout=30, env=cluster.env(), cwd=cluster.data_dir).stdout)["fileservers"]
    name = next(m["name"] for m in members if m["index"] == f.recipe.servers[0])
    with member_down(cluster, name) as directory:
        shutil.rmtree(directory)
    wait_until(lambda: all_online(cluster), timeout=30, what=f"{name} to be back")
    assert client.pfs_close(fd) == -1
    assert "never written" in str(pfs.pfs_last_error())
    client.pfs_finish(client.pfs_initialize())
    other = cluster.client(cache_blocks=0)
    assert other.stat("f").file_size == 0  # the writer's size, never made durable, withdrawn
    other.pfs_finish(other.pfs_initialize())


@pytest.mark.parametrize("lost", ["data directory", "objects"])
def test_member_that_lost_its_data_keeps_its_place_and_reads_fail_with_eio(cluster, lost):
    client = cluster.client(cache_blocks=0)
    write_file(client, "f", CONTENT, width=4)
    assert client.pfs_finish(client.pfs_initialize()) == 0
    with member_down(cluster, "fs1") as directory:
        if lost == "objects":  # the disk's files gone, the directory and its identity kept
            shutil.rmtree(directory / "objects")
        else:
            shutil.rmtree(directory)
    wait_until(lambda: all_online(cluster), timeout=30, what="fs1 to be back")
    shown = status(cluster)
    assert "fs1" in shown.stdout and "OFFLINE" not in shown.stdout, shown.stdout
    assert "lost its data" in shown.stdout, shown.stdout  # objects gone are data lost too
    members = json.loads(subprocess.run(
        [sys.executable, "-m", "pfs", "status", "--json"], capture_output=True, text=True,
        timeout=30, env=cluster.env(), cwd=cluster.data_dir).stdout)["fileservers"]
    index = next(f["index"] for f in members if f["name"] == "fs1")
    reader = cluster.client(cache_blocks=0)
    fd = reader.pfs_open("f", pfs.PFS_READ)
    meta = pfs.Metadata()
    assert reader.pfs_fstat(fd, meta) == 0
    buf = bytearray(len(CONTENT))
    assert reader.pfs_read(fd, buf, len(buf), 0) == -1
    error = pfs.pfs_last_error()
    assert error.errno == errno.EIO and "'f'" in str(error), error
    assert "fileserver fs1 " in str(error), error
    column = next(c for c, s in enumerate(meta.recipe.servers) if s != index)
    unit = slice(column * 1024, (column + 1) * 1024)  # a stripe unit another member holds
    assert reader.pfs_read(fd, buf, 1024, unit.start) == 1024 and buf[:1024] == CONTENT[unit]
    assert reader.pfs_close(fd) == 0
    reader.pfs_finish(reader.pfs_initialize())


def test_a_member_down_leaves_the_cluster_degraded_not_closed(cluster):
    before = cluster.client(cache_blocks=0)
    write_file(before, "kept", CONTENT, width=4)
    with member_down(cluster, "fs2"):
        wait_until(lambda: "OFFLINE" in status(cluster).stdout, timeout=30,
                   what="fs2 to be seen offline")
        shown = status(cluster)
        assert shown.returncode != 0 and "offline: fs2" in shown.stderr, shown
        client = cluster.client(cache_blocks=0)  # new clients still start
        assert client.pfs_create("wide", 4) == -1
        error = pfs.pfs_last_error()
        assert error.errno == errno.EHOSTDOWN and "online" in str(error), error
        write_file(client, "narrow", b"placed on the others", width=3)
        assert read_file(client, "narrow") == b"placed on the others"
        client.pfs_finish(client.pfs_initialize())
    wait_until(lambda: all_online(cluster), timeout=30, what="fs2 to be back")
    assert read_file(before, "kept") == CONTENT
    before.pfs_finish(before.pfs_initialize())


def test_an_extension_reads_zeros_not_bytes_left_by_a_dead_writer(cluster):
    """A writer that dies after its bytes reached the fileservers but before the file's size
    covered them leaves them beyond the end; extending the file must not bring them back."""
    setup = cluster.client()
    assert setup.pfs_create("grown", 4) == 0
    writer = RemoteClient(cluster, cache_blocks=0)
    fd = writer.call("pfs_open", "grown", pfs.PFS_READ_WRITE)
    assert writer.call("pfs_write", fd, b"x" * 3000, 3000, 0) == 3000
    time.sleep(1)  # the write-behind has reached the fileservers
    writer.kill()
    fd = setup.pfs_open("grown", pfs.PFS_READ_WRITE)
    assert setup.pfs_ftruncate(fd, 4000) == 0
    buf = bytearray(4000)
    assert setup.pfs_read(fd, buf, 4000, 0) == 4000 and buf == bytes(4000)
    assert setup.pfs_close(fd) == 0
    setup.pfs_finish(setup.pfs_initialize())
