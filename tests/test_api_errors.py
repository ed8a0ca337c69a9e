"""Every documented failure of the C-like API: the call returns -1, pfs_last_error() says why (an OSError with
errno), nothing raises, and what was stored is intact."""
import errno
import os
import pathlib
import signal
import subprocess
import sys

import pytest

import pfs
from clusters import wait_until

CONTENT = bytes(range(256)) * 8  # 2048 bytes


@pytest.fixture
def stored(clients, name):
    """A client with `name` holding CONTENT, open read-write, and a check that it is intact."""
    client = clients(1)
    assert client.pfs_create(name, 3) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, CONTENT, len(CONTENT), 0) == len(CONTENT)
    yield client, fd
    reader = clients(1)
    rfd = reader.pfs_open(name, pfs.PFS_READ)
    buf = bytearray(4096)
    assert reader.pfs_read(rfd, buf, 4096, 0) == len(CONTENT)
    assert buf[:len(CONTENT)] == CONTENT
    assert reader.pfs_close(rfd) == 0


def fails(result, code):
    assert result == -1
    error = pfs.pfs_last_error()
    assert isinstance(error, OSError) and error.errno == code, error
    assert str(error)  # a message, not just a number
    return error


def test_initialize_fails_when_metaserver_unreachable():
    client = pfs.Client(metaserver="127.0.0.1:1")
    fails(client.pfs_initialize(), errno.EHOSTDOWN)


@pytest.mark.parametrize("variable", ["PFS_CACHE_BLOCKS", "PFS_RETRY_SECONDS"])
def test_initialize_fails_for_a_setting_that_is_not_a_number(cluster, monkeypatch, variable):
    monkeypatch.setenv(variable, "lots")
    error = fails(pfs.Client(metaserver=cluster.address).pfs_initialize(), errno.EINVAL)
    assert variable in str(error)


def test_module_initialize_returns_minus_one_for_a_bad_setting(cluster, tmp_path):
    """pfs.pfs_initialize() with PFS_CACHE_BLOCKS=abc: -1 and EINVAL naming it, no exception;
    with a good setting, a session, as usual (in a process of its own: the module's client is
    the process's)."""
    script = ("import os, pfs\n"
              "print(pfs.pfs_initialize(), pfs.pfs_last_error().errno, pfs.pfs_last_error())\n"
              "os.environ['PFS_CACHE_BLOCKS'] = '16'\n"
              "client_id = pfs.pfs_initialize()\n"
              "print(client_id > 0, pfs.pfs_finish(client_id))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cluster.env(PFS_CACHE_BLOCKS="abc"), cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith(f"-1 {errno.EINVAL} ") and "PFS_CACHE_BLOCKS" in first
    assert second == "True 0"


def test_initialize_fails_while_fileservers_are_missing(tmp_path):
    """A metaserver expecting 2 fileservers, none running: clients may not start yet."""
    address_file = tmp_path / "address"
    meta = subprocess.Popen([sys.executable, "-m", "pfs", "metaserver", "--data-dir",
                             str(tmp_path), "--port", "0", "--fileservers", "2",
                             "--address-file", str(address_file)], cwd=tmp_path,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(address_file.exists, what="the metaserver to listen")
        client = pfs.Client(metaserver=address_file.read_text().strip())
        error = fails(client.pfs_initialize(), errno.EHOSTDOWN)
        assert "0 of 2 fileservers" in str(error)
    finally:
        meta.terminate()
        meta.wait(20)


@pytest.mark.parametrize("bad, code", [
    ("a//b", errno.EINVAL), ("a/", errno.EINVAL), ("a\0b", errno.EINVAL), (".", errno.EINVAL),
    ("..", errno.EINVAL), ("a/./b", errno.EINVAL), ("a/../b", errno.EINVAL),
    ("x" * 256, errno.ENAMETOOLONG), ("é" * 128, errno.ENAMETOOLONG),
    ("/".join(["d"] * 2100), errno.ENAMETOOLONG), (b"bytes", errno.EINVAL),
    ("", errno.EEXIST), ("/", errno.EEXIST),  # the root exists
    ("no-such-dir/x", errno.ENOENT)])
def test_create_rejects_bad_paths(clients, bad, code):
    fails(clients(1).pfs_create(bad, 1), code)


def test_create_fails_for_existing_name_and_bad_width(stored, name):
    client, _ = stored
    fails(client.pfs_create(name, 1), errno.EEXIST)
    fails(client.pfs_create(name + "-w0", 0), errno.EINVAL)
    fails(client.pfs_create(name + "-w5", 5), errno.EINVAL)  # 4 fileservers
    fails(client.pfs_create(name + "-huge", 2**32), errno.EINVAL)  # beyond what a call can say
    fails(client.pfs_open(name + "-w5", pfs.PFS_READ), errno.ENOENT)  # nothing was created


def test_name_of_255_bytes_is_fine(clients, name):
    client = clients(1)
    long_name = (name + "é" * 200).encode()[:254].decode("utf-8", "ignore")
    assert client.pfs_create(long_name, 1) == 0
    assert client.pfs_delete(long_name) == 0


def test_open_failures(stored, name):
    client, _ = stored
    fails(client.pfs_open(name + "-missing", pfs.PFS_READ), errno.ENOENT)
    fails(client.pfs_open(name, 0), errno.EINVAL)
    fails(client.pfs_open(name, 3), errno.EINVAL)
    fails(client.pfs_open(name, True), errno.EINVAL)  # a bool is not a mode
    fails(client.pfs_open(name, pfs.PFS_READ), errno.EBUSY)  # this client has it open already


def test_read_failures(stored):
    client, fd = stored
    buf = bytearray(100)
    fails(client.pfs_read(fd + 1000, buf, 10, 0), errno.EBADF)
    assert fd == 1
    fails(client.pfs_read(True, buf, 10, 0), errno.EBADF)  # a bool is not a descriptor, fd 1
    fails(client.pfs_read(fd, buf, 10, -1), errno.EINVAL)
    fails(client.pfs_read(fd, buf, 10, len(CONTENT) + 1), errno.EINVAL)  # beyond the size
    fails(client.pfs_read(fd, buf, 200, 0), errno.EINVAL)  # buf smaller than num_bytes
    fails(client.pfs_read(fd, bytes(100), 10, 0), errno.EINVAL)  # read-only buffer
    fails(client.pfs_read(fd, "text", 4, 0), errno.EINVAL)  # not a buffer
    fails(client.pfs_read(fd, buf, -5, 0), errno.EINVAL)
    assert client.pfs_read(fd, buf, 10, len(CONTENT)) == 0  # at EOF: 0, not a failure
    assert client.pfs_read(fd, buf, 100, len(CONTENT) - 30) == 30  # short near EOF


def test_a_read_past_the_end_is_einval_as_documented(stored):
    """The course's contract: an offset beyond the size fails (EINVAL); at the size, 0. The
    docstring and the README say so."""
    client, fd = stored
    buf = bytearray(10)
    error = fails(client.pfs_read(fd, buf, 10, len(CONTENT) + 1), errno.EINVAL)
    assert "beyond the end" in str(error)
    assert client.pfs_read(fd, buf, 10, len(CONTENT)) == 0
    for doc in (pfs.pfs_read.__doc__, pfs.Client.pfs_read.__doc__):
        assert "past the end is EINVAL" in doc
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "past the end fails with `EINVAL`" in readme


def test_write_failures(stored, name):
    client, fd = stored
    fails(client.pfs_write(fd + 1000, b"x", 1, 0), errno.EBADF)
    fails(client.pfs_write(fd, b"x", 1, -1), errno.EINVAL)
    fails(client.pfs_write(fd, b"x", 1, len(CONTENT) + 1), errno.EINVAL)  # a hole
    fails(client.pfs_write(fd, b"xy", 3, 0), errno.EINVAL)  # buf shorter than num_bytes
    assert client.pfs_close(fd) == 0
    rfd = client.pfs_open(name, pfs.PFS_READ)
    fails(client.pfs_write(rfd, b"x", 1, 0), errno.EBADF)  # opened PFS_READ
    assert client.pfs_close(rfd) == 0


def test_close_fstat_fsync_fail_on_bad_fd(stored):
    client, fd = stored
    fails(client.pfs_close(fd + 1000), errno.EBADF)
    fails(client.pfs_fstat(fd + 1000, pfs.Metadata()), errno.EBADF)
    fails(client.pfs_fsync(fd + 1000), errno.EBADF)
    assert client.pfs_close(fd) == 0
    fails(client.pfs_close(fd), errno.EBADF)  # closed already


def test_delete_failures(stored, clients, name):
    client, fd = stored
    fails(client.pfs_delete(name + "-missing"), errno.ENOENT)
    fails(client.pfs_delete(name), errno.EBUSY)  # open by this client
    assert client.pfs_close(fd) == 0
    other = clients(1)
    ofd = other.pfs_open(name, pfs.PFS_READ)
    fails(client.pfs_delete(name), errno.EBUSY)  # open by another client
    assert other.pfs_close(ofd) == 0


def test_execstat_and_finish_failures(cluster):
    client = pfs.Client(metaserver=cluster.address)
    fails(client.pfs_execstat(pfs.ExecStat()), errno.ENOTCONN)  # not initialized
    client_id = client.pfs_initialize()
    fails(client.pfs_finish(client_id + 12345), errno.EINVAL)  # unknown id
    assert client.pfs_finish(client_id) == 0


def test_dead_fileserver_fails_calls_then_recovers(fresh_cluster, name, monkeypatch):
    """A fileserver that stays dead fails the reads and fsyncs that need it with EHOSTDOWN once
    the client's retry window (PFS_RETRY_SECONDS) is over; once it is back (restarted on its data
    directory, on a new port) the same client reads every byte."""
    monkeypatch.setenv("PFS_RETRY_SECONDS", "1")
    client = fresh_cluster.client(cache_blocks=0)
    assert client.pfs_create(name, 4) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, CONTENT, len(CONTENT), 0) == len(CONTENT)
    supervisor = fresh_cluster.process.pid
    os.kill(supervisor, signal.SIGSTOP)  # so that `pfs up` does not restart it yet
    try:
        first = client.fstat(fd).recipe.servers[0]  # holds the file's first bytes
        victim = fresh_cluster.fileserver_pid(client.fileservers()[first])
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not pathlib.Path(f"/proc/{victim}/cmdline").read_bytes(),
                   what="the fileserver to die")
        buf = bytearray(len(CONTENT))
        error = fails(client.pfs_read(fd, buf, len(CONTENT), 0), errno.EHOSTDOWN)
        named = {s.index: s.name for s in client._session.reply.fileservers}[first]
        assert f"fileserver {named} " in str(error)  # by its member name, as everywhere
        fails(client.pfs_fsync(fd), errno.EHOSTDOWN)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_until(lambda: client.pfs_read(fd, buf, len(CONTENT), 0) == len(CONTENT),
               timeout=30, what="the restarted fileserver to serve")
    assert buf == CONTENT
    assert client.pfs_fsync(fd) == 0


def test_fileserver_restart_is_invisible_within_the_retry_window(fresh_cluster, name):
    """A fileserver killed and restarted by `pfs up` is back within the client's retry window
    (10 s by default): reads, writes and fsyncs that need it meanwhile wait and succeed."""
    client = fresh_cluster.client(cache_blocks=0)
    assert client.pfs_create(name, 4) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, CONTENT, len(CONTENT), 0) == len(CONTENT)
    first = client.fstat(fd).recipe.servers[0]
    os.kill(fresh_cluster.fileserver_pid(client.fileservers()[first]), signal.SIGKILL)
    buf = bytearray(len(CONTENT))
    assert client.pfs_read(fd, buf, len(CONTENT), 0) == len(CONTENT), pfs.pfs_last_error()
    assert buf == CONTENT
    assert client.pfs_write(fd, CONTENT[::-1], len(CONTENT), 0) == len(CONTENT)
    assert client.pfs_fsync(fd) == 0
    assert client.pfs_close(fd) == 0
