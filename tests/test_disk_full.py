"""A full disk (README, "One of each"): ENOSPC at the client, with a message that says which disk, and nothing
stored is lost. The servers' data directories are small tmpfs mounts, made in a user and mount
namespace of the cluster's own (`unshare`), so the disks really fill up."""
import errno
import os
import shutil
import subprocess

import pytest

import pfs
from clusters import COURSE, Cluster, wait_until


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount_tmpfs(),
                                reason="needs unshare and unprivileged tmpfs mounts")


def small_disk_cluster(data, directory: str, size: str, fileservers: int) -> Cluster:
    """A cluster whose `directory` (meta or fs0) is a tmpfs of `size`."""
    (data / directory).mkdir(parents=True)
    mount = f"mount -t tmpfs -o size={size} tmpfs {data / directory} && exec \"$@\""
    return Cluster(data, **{**COURSE, "fileservers": fileservers},
                   prefix=["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount,
                           "sh"]).start()


def write_file(client: pfs.Client, name: str, data: bytes) -> int:
    assert client.pfs_create(name, 1) == 0, pfs.pfs_last_error()
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    written = client.pfs_write(fd, data, len(data), 0)
    closed = client.pfs_close(fd)
    return -1 if -1 in (written, closed) else 0


def finish(client: pfs.Client | None) -> None:
    """Ends the client's session while its cluster still runs. (Left to the exit of the test
    process, it would find the cluster gone and warn there, after the run's summary, of the
    bytes of the writes that failed on the full disk.)"""
    if client is not None and client._session is not None:
        client.pfs_finish(client._session.client_id)  # -1 for those bytes: expected


def test_full_fileserver_disk_is_enospc(tmp_path):
    cluster = small_disk_cluster(tmp_path / "data", "fs0", "1m", fileservers=1)
    client = None
    try:
        client = cluster.client(cache_blocks=16)
        kept = os.urandom(100_000)
        assert write_file(client, "kept", kept) == 0
        assert write_file(client, "too-big", os.urandom(2 << 20)) == -1
        error = pfs.pfs_last_error()
        assert error.errno == errno.ENOSPC, error
        assert "disk is full" in str(error)
        fd = client.pfs_open("kept", pfs.PFS_READ)
        buf = bytearray(len(kept))
        assert client.pfs_read(fd, buf, len(buf), 0) == len(kept) and buf == kept
        assert client.pfs_close(fd) == 0
        assert client.pfs_delete("too-big") == 0  # its objects go in the background
        attempts = iter(range(100))
        wait_until(lambda: write_file(client, f"after-{next(attempts)}", b"x" * 1000) == 0,
                   timeout=20, what="the deleted file's space to be free again")
    finally:
        finish(client)
        cluster.stop()


def test_full_metadata_disk_is_enospc_and_changes_nothing(tmp_path):
    cluster = small_disk_cluster(tmp_path / "data", "meta", "512k", fileservers=1)
    client = None
    try:
        client = cluster.client()
        created = []
        for i in range(5000):
            name = f"f{i:04d}-" + "n" * 200
            if client.pfs_create(name, 1) == -1:
                break
            created.append(name)
        else:
            pytest.fail("the metadata disk never filled up")
        error = pfs.pfs_last_error()
        assert error.errno == errno.ENOSPC, error
        assert "metaserver's disk is full" in str(error)
        assert created, "nothing could be created at all"
        assert client.pfs_create(name, 1) == -1  # still full, still a clean error
        assert pfs.pfs_last_error().errno == errno.ENOSPC
        listed = {m.filename for m in client.listdir()}
        assert set(created) <= listed and name not in listed
        fd = client.pfs_open(created[0], pfs.PFS_READ_WRITE)
        assert fd > 0, pfs.pfs_last_error()
        assert client.pfs_close(fd) == 0
    finally:
        finish(client)
        cluster.stop()
