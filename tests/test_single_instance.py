"""A second copy started by mistake (README, "One of each"): one server per port and per data directory. The
second one exits non-zero at once, naming the process that holds what it wanted, and the first
one keeps serving as before."""
import os
import subprocess
import sys

import pfs
from clusters import Cluster

QUICK = 30  # seconds: refusing must be immediate, not a hang


def run_pfs(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfs", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=QUICK)


def still_serves(cluster: Cluster, name: str) -> None:
    client = cluster.client()
    assert client.pfs_create(name, 2) == 0, pfs.pfs_last_error()
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, b"still here", 10, 0) == 10
    assert client.pfs_close(fd) == 0
    assert client.pfs_finish(client.pfs_initialize()) == 0


def test_second_metaserver_on_the_same_port_or_directory_refuses(cluster, tmp_path, name):
    port = cluster.address.rsplit(":", 1)[1]
    metaserver_pid = cluster.server_pids("metaserver")[0]
    other = run_pfs("metaserver", "--data-dir", str(tmp_path / "other"), "--port", port,
                    cwd=tmp_path)
    assert other.returncode != 0
    assert "in use" in other.stderr and f"PID {metaserver_pid}" in other.stderr

    same_dir = run_pfs("metaserver", "--data-dir", str(cluster.data_dir / "meta"), "--port", "0",
                       cwd=tmp_path)
    assert same_dir.returncode != 0
    assert "in use by another metaserver" in same_dir.stderr
    assert f"PID {metaserver_pid}" in same_dir.stderr
    still_serves(cluster, name)


def test_second_pfs_up_on_the_same_directory_refuses(cluster, tmp_path, name):
    again = run_pfs("up", "--data-dir", str(cluster.data_dir), "--port", "0", cwd=tmp_path)
    assert again.returncode != 0
    assert f"PID {cluster.process.pid}" in again.stderr
    still_serves(cluster, name)


def test_second_fileserver_on_a_directory_or_address_in_use_refuses(cluster, tmp_path, name):
    same_dir = run_pfs("fileserver", "--data-dir", str(cluster.data_dir / "fs0"),
                       "--metaserver", cluster.address, "--cluster-key-file",
                       str(cluster.key_file), cwd=tmp_path)
    assert same_dir.returncode != 0
    assert "in use by another fileserver" in same_dir.stderr

    # A new fileserver that claims the address of a live one is refused by the metaserver.
    taken = next(iter(cluster.client().fileservers().values()))
    impostor = run_pfs("fileserver", "--data-dir", str(tmp_path / "fsx"), "--metaserver",
                       cluster.address, "--advertise", taken, "--cluster-key-file",
                       str(cluster.key_file), cwd=tmp_path)
    assert impostor.returncode != 0
    assert "already attached" in impostor.stderr
    status = subprocess.run([sys.executable, "-m", "pfs", "status"], cwd=tmp_path,
                            env={**os.environ, "PFS_METASERVER": cluster.address},
                            capture_output=True, text=True, timeout=QUICK)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "OFFLINE" not in status.stdout  # the impostor was never listed
    still_serves(cluster, name)
