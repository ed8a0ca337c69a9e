"""The pfs command against a running cluster: put, ls, stat, get, rm, status, and its errors."""
import os
import subprocess
import sys


def pfs_cmd(cluster, *args, check=True):
    done = subprocess.run([sys.executable, "-m", "pfs", *args], env=cluster.env(),
                          capture_output=True, text=True, timeout=120, cwd=cluster.data_dir)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_put_get_ls_stat_rm(cluster, tmp_path, name):
    local = tmp_path / "in.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    local.write_bytes(data)
    pfs_cmd(cluster, "put", str(local), name, "--stripe-width", "3")
    assert name in pfs_cmd(cluster, "ls").stdout
    stat = pfs_cmd(cluster, "stat", name).stdout
    assert f"size:          {len(data)}" in stat and "stripe width:  3" in stat
    out = tmp_path / "out.bin"
    pfs_cmd(cluster, "get", name, str(out))
    assert out.read_bytes() == data
    pfs_cmd(cluster, "rm", name)
    assert name not in pfs_cmd(cluster, "ls").stdout


def test_status_and_errors_say_what_is_wrong(cluster, tmp_path, name):
    status = pfs_cmd(cluster, "status").stdout
    assert "4 online of 4 expected" in status
    missing = pfs_cmd(cluster, "get", name, str(tmp_path / "x"), check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr
    unreachable = subprocess.run([sys.executable, "-m", "pfs", "ls"], capture_output=True,
                                 text=True, timeout=60, cwd=cluster.data_dir,
                                 env={**os.environ, "PFS_METASERVER": "127.0.0.1:1"})
    assert unreachable.returncode == 1 and "pfs status" in unreachable.stderr
