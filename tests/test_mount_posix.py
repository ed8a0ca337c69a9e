"""POSIX through `pfs mount` (README, "Mounting"): attributes stored by the metaserver, O_EXCL
and O_TRUNC, unlink and rename of open files (orphans, across mounts and a metaserver restart),
symlinks, and real programs that need them (cp -p, rsync -a, git); a fileserver restarted
while the mount reads. Real clusters, real mounts, real programs."""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import shutil
import signal
import socket
import stat
import random
import subprocess
import sys
import threading
import time

import grpc
import pytest

from pfs import PFS_READ_WRITE
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.transport import CHANNEL_OPTIONS
from clusters import COURSE, Cluster, wait_until
from consistency import Op, find_order
from mounts import TIMEOUT, Mounted, needs_fuse
from test_recovery import restart_metaserver

pytestmark = needs_fuse


def _sh(command: str, cwd: pathlib.Path) -> str:
    """Runs `command` in bash; its output (a failure shows what it said)."""
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, f"{command}: {done.stderr}"
    return done.stdout


def _status(cluster: Cluster) -> pb.StatusReply:
    with grpc.insecure_channel(cluster.address, options=CHANNEL_OPTIONS) as channel:
        return pb_grpc.MetaServerStub(channel).Status(pb.StatusRequest(), timeout=10)


def _files(cluster: Cluster) -> int:
    """The files the metaserver keeps (unlinked open ones included, until removed)."""
    return _status(cluster).files


def test_mode_owner_and_times_are_stored_and_seen_through_another_mount(mount, tmp_path, name):
    one, two = mount("one").path, mount("two").path
    (one / name).write_bytes(b"attributes")
    (one / f"{name}.d").mkdir(mode=0o750)
    assert stat.S_IMODE((two / f"{name}.d").stat().st_mode) == 0o750 & ~_umask()
    os.chmod(one / name, 0o640)
    os.chown(one / name, 1234, 5678)  # (the tests run as root)
    os.utime(one / name, ns=(1_000_000_500_000_000, 1_500_000_250_000_000))
    seen = (two / name).stat()
    assert (stat.S_IMODE(seen.st_mode), seen.st_uid, seen.st_gid) == (0o640, 1234, 5678)
    assert (seen.st_atime_ns, seen.st_mtime_ns) == (1_000_000_500_000_000,
                                                      1_500_000_250_000_000)
    assert seen.st_ctime > seen.st_mtime  # chmod, chown and utime move ctime
    os.chmod(two / name, 0o000)
    assert stat.S_IMODE((one / name).stat().st_mode) == 0
    # cp -p sets the mode and times on the open copy before closing it: they stay.
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(5000))
    os.chmod(src, 0o604)
    os.utime(src, ns=(1_200_000_000_000_000_000, 1_300_000_000_000_000_000))
    _sh(f"cp -p {src} {one / name}.copy", cwd=tmp_path)
    copy = (two / f"{name}.copy").stat()
    assert stat.S_IMODE(copy.st_mode) == 0o604
    assert copy.st_mtime_ns == 1_300_000_000_000_000_000
    assert (two / f"{name}.copy").read_bytes() == src.read_bytes()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_o_excl_and_o_trunc_as_posix(mount, name):
    one, two = mount("one").path / name, mount("two").path / name
    fd = os.open(one, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.write(fd, b"0123456789")
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(two, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    fd = os.open(two, os.O_WRONLY | os.O_TRUNC)  # cut at open, seen through the other mount
    assert os.stat(one).st_size == 0
    os.write(fd, b"ab")
    os.close(fd)
    assert one.read_bytes() == b"ab"
    fd = os.open(two, os.O_RDONLY | os.O_TRUNC)  # O_TRUNC without write access: no cut (Linux)
    os.close(fd)
    assert one.read_bytes() == b"ab"
    _sh(f"echo replaced > {name}", cwd=two.parent)  # the shell's > is O_CREAT|O_TRUNC
    assert one.read_bytes() == b"replaced\n"


def test_unlink_and_rename_over_open_files_across_mounts_and_a_metaserver_restart(tmp_path):
    cluster = Cluster(tmp_path / "cluster", **COURSE).start()
    mounts = []
    try:
        one, two = (Mounted(cluster, tmp_path / n) for n in ("one", "two"))
        mounts += [one, two]
        (one.path / "f").write_bytes(b"old bytes")
        (one.path / "g").write_bytes(b"replaced one")
        kept = os.open(one.path / "f", os.O_RDWR)
        replaced = os.open(one.path / "g", os.O_RDWR)
        files = _files(cluster)
        os.unlink(two.path / "f")  # open through the other mount: the name goes at once
        assert not (one.path / "f").exists() and not (two.path / "f").exists()
        (two.path / "f").write_bytes(b"a new file")  # under the old name: another file
        (two.path / "h").write_bytes(b"moved into place")
        os.rename(two.path / "h", two.path / "g")  # over the open g
        assert (one.path / "g").read_bytes() == b"moved into place"
        assert os.pread(kept, 100, 0) == b"old bytes"
        os.pwrite(kept, b"still writable", 9)
        assert os.pread(replaced, 100, 0) == b"replaced one"
        restart_metaserver(cluster)  # the orphans are recorded: the mount reclaims them
        assert os.pread(kept, 100, 0) == b"old bytesstill writable"
        assert os.pread(replaced, 100, 0) == b"replaced one"
        assert (one.path / "f").read_bytes() == b"a new file"
        assert _files(cluster) == files + 2  # the new f and g, and the two orphans
        os.close(kept)
        os.close(replaced)
        wait_until(lambda: _files(cluster) == files, TIMEOUT,
                   "the orphans to be removed at their last close")
        # Unlinked through the mount that has it open (libfuse hides it under a name of its own).
        fd = os.open(one.path / "g", os.O_RDWR)
        os.unlink(one.path / "g")
        os.pwrite(fd, b"no name", 0)
        assert os.pread(fd, 100, 0) == b"no namento place"
        os.close(fd)
        wait_until(lambda: _files(cluster) == files - 1, TIMEOUT, "g to be removed")
        files -= 1
        # An orphan whose mount died with it open goes too, once its session is over.
        fd = os.open(two.path / "f", os.O_RDONLY)
        os.unlink(one.path / "f")
        two.process.kill()
        two.process.wait(timeout=TIMEOUT)
        wait_until(lambda: _files(cluster) == files - 1, TIMEOUT,
                   "the orphan of a killed mount to be removed")
        with contextlib.suppress(OSError):  # (its mount is gone)
            os.close(fd)
    finally:
        for m in mounts:
            m.unmount()
        cluster.stop()


def test_link_counts_and_fstat_of_files_unlinked_while_open(cluster, mount, clients, name):
    """A directory's link count is 2 + its subdirectories (mkdir, rmdir, renames across
    parents), through the mount and the API; an fd whose file was unlinked or renamed over
    through its own mount still fstats (link count 0, its size), reads and writes, and the
    name libfuse hides it under is nowhere in PFS."""
    one, two = mount("one").path, mount("two").path
    top = one / name
    for d in ("", "a", "b", "a/x"):
        (top / d).mkdir()
    (top / "a/f").write_bytes(b"f")
    (top / "a/g").write_bytes(b"replaced")
    client = clients()

    def nlinks(*paths: str) -> list[int]:
        seen = [os.stat(two / name / p).st_nlink for p in paths]
        assert seen == [client.stat(f"{name}/{p}".rstrip("/")).nlink for p in paths]
        return seen
    assert nlinks("", "a", "b", "a/x", "a/f") == [4, 3, 2, 2, 1]
    os.rename(top / "a/x", top / "b/x")
    assert nlinks("", "a", "b") == [4, 2, 3]
    os.rename(top / "b", top / "a/b")
    assert nlinks("", "a", "a/b") == [3, 3, 3]
    os.rmdir(top / "a/b/x")
    assert nlinks("a", "a/b") == [3, 2]
    os.rmdir(top / "a/b")
    files = _files(cluster)
    fd = os.open(top / "a/f", os.O_RDWR)
    os.unlink(top / "a/f")
    assert (os.fstat(fd).st_nlink, os.fstat(fd).st_size) == (0, 1)
    os.pwrite(fd, b"more", 1)
    assert os.pread(fd, 10, 0) == b"fmore" and os.fstat(fd).st_size == 5
    os.fchmod(fd, 0o600)  # attributes too, by the open file (hidden name: libfuse's)
    os.fchown(fd, 1234, 99)
    os.utime(fd, ns=(10**9, 2 * 10**9))
    seen = os.fstat(fd)
    assert (stat.S_IMODE(seen.st_mode), seen.st_uid, seen.st_gid) == (0o600, 1234, 99)
    assert (seen.st_atime_ns, seen.st_mtime_ns) == (10**9, 2 * 10**9)
    replaced = os.open(top / "a/g", os.O_RDONLY)
    (top / "h").write_bytes(b"new")
    os.rename(top / "h", top / "a/g")
    assert (os.fstat(replaced).st_nlink, os.fstat(replaced).st_size) == (0, 8)
    assert os.pread(replaced, 10, 0) == b"replaced"
    assert os.listdir(top / "a") == os.listdir(two / name / "a") == ["g"]
    assert [m.filename for m in client.listdir(f"{name}/a")] == [f"{name}/a/g"]
    assert _files(cluster) == files + 1  # the two orphans and the new g, less h
    os.close(fd)
    os.close(replaced)
    wait_until(lambda: _files(cluster) == files - 1, TIMEOUT,
               "the orphans to be removed at their last close")
    os.unlink(top / "a/g")
    os.rmdir(top / "a")  # (nothing hidden is left in it)
    client.create(f"{name}/api")  # through the API: fstat of an orphan
    fd = client.open(f"{name}/api", PFS_READ_WRITE)
    client.delete(f"{name}/api", open_ok=True)
    assert client.fstat(fd).nlink == 0
    assert client.setattr(fd, mode=0o640).mode == client.fstat(fd).mode == 0o640
    with pytest.raises(OSError) as e:  # an fd of another client's: not this one's file
        clients().setattr(fd, mode=0o600)
    assert e.value.errno == errno.EBADF
    client.close(fd)


def test_a_file_opened_again_right_after_its_close(mount, name):
    """The kernel sends a close's release after close() returns: an open right after it shares
    the fd being closed, or waits for its close (50 rounds: the race is there every time)."""
    m = mount().path
    for i in range(50):
        data = os.urandom(70_000 + i)
        fd = os.open(m / name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, data)
        os.close(fd)
        assert (m / name).read_bytes() == data
    assert "Traceback" not in (m.parent / "mnt.log").read_text()


def test_reads_and_writes_through_two_mounts_at_once_are_linearizable(mount, name):
    """Four threads, two on each of two mounts, pwrite and pread random ranges of one file at
    once, with no close or fsync; the checker (tests/consistency.py) must find one total order
    of them that respects real time and explains every read."""
    size, steps = 2048, 30
    paths = [mount(m).path / name for m in ("one", "two")]
    paths[0].write_bytes(bytes(size))
    ops: list[Op] = []
    lock = threading.Lock()

    def run(client: int) -> None:
        rng = random.Random(client)
        fd = os.open(paths[client % 2], os.O_RDWR)
        try:
            for index in range(steps):
                offset = rng.randrange(size - 1)
                length = rng.randrange(1, min(600, size - offset) + 1)
                start = time.monotonic_ns()
                if rng.random() < 0.5:
                    data = rng.randbytes(length)
                    assert os.pwrite(fd, data, offset) == length
                    kind = "write"
                else:
                    data, kind = os.pread(fd, length, offset), "read"
                op = Op(client, index, kind, offset, data, start, time.monotonic_ns())
                with lock:
                    ops.append(op)
        finally:
            os.close(fd)
    threads = [threading.Thread(target=run, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(ops) == 4 * steps
    assert find_order(ops, bytes(size), paths[1].read_bytes()) is not None


def test_mount_fuse_pfs_mounts_as_mount_8_and_fstab_call_it(cluster, clients, tmp_path, name):
    where = tmp_path / "m"
    where.mkdir()
    helper = [sys.executable, "-c", "import sys; from pfs.cli.mount import helper; "
                                    "sys.exit(helper())"]
    env = {k: v for k, v in cluster.env().items() if k != "PFS_METASERVER"}
    done = subprocess.run([*helper, f"pfs@{cluster.address}", str(where), "-n", "-o",
                           "rw,nosuid,nodev,_netdev,stripe_width=2"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    try:
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(where)
        (where / name).write_bytes(b"through mount.fuse.pfs")
        assert clients().stat(name).recipe.stripe_width == 2
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(where)], capture_output=True,
                       timeout=TIMEOUT)
    wrong = subprocess.run([*helper, cluster.address, str(where), "-o", "stripe=2"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert wrong.returncode != 0 and "unknown option 'stripe=2'" in wrong.stderr


def test_the_c_like_api_still_refuses_to_delete_an_open_file(clients, name):
    a, b = clients(2)
    a.create(name, 1)
    fd = a.open(name, 2)
    assert b.pfs_delete(name) == -1 and b.pfs_rename(name, name + ".x") == -1
    b.delete(name, open_ok=True)
    assert a.pwrite(fd, b"orphan", 6, 0) == 6 and a.pread(fd, bytearray(6), 6, 0) == 6
    a.close(fd)
    with pytest.raises(FileNotFoundError):
        b.stat(name)


def test_symlinks_and_what_is_refused(mount, name):
    one, two = mount("one").path, mount("two").path
    (one / name).mkdir()
    (one / name / "target").write_bytes(b"through the link")
    os.symlink("target", one / name / "link")
    os.symlink("../nowhere", one / name / "dangling")
    os.symlink(name, one / f"{name}.dir")
    link = two / name / "link"
    assert os.readlink(link) == "target" and link.is_symlink()
    assert stat.S_ISLNK(os.lstat(link).st_mode) and os.lstat(link).st_size == len("target")
    assert link.read_bytes() == b"through the link"
    assert sorted(os.listdir(two / f"{name}.dir")) == ["dangling", "link", "target"]
    assert not (two / name / "dangling").exists() and (two / name / "dangling").is_symlink()
    os.rename(two / name / "link", two / name / "link2")
    assert os.readlink(one / name / "link2") == "target"
    os.unlink(one / name / "link2")
    assert (two / name / "target").read_bytes() == b"through the link"
    with pytest.raises(PermissionError):
        os.link(one / name / "target", one / name / "hard")
    with pytest.raises(OSError) as e:
        os.setxattr(one / name / "target", "user.k", b"v")
    assert e.value.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)


def test_fifos_sockets_and_devices_are_kept_and_served_by_the_kernel(mount, clients, name):
    one, two = mount("one").path, mount("two").path
    (one / name).mkdir()
    os.mkfifo(one / name / "fifo", 0o640)
    os.mknod(one / name / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(one / name / "sock"))
    seen = {n: os.lstat(two / name / n) for n in ("fifo", "null", "sock")}
    assert stat.S_ISFIFO(seen["fifo"].st_mode) and stat.S_IMODE(seen["fifo"].st_mode) == 0o640
    assert stat.S_ISCHR(seen["null"].st_mode) and seen["null"].st_rdev == os.makedev(1, 3)
    assert stat.S_ISSOCK(seen["sock"].st_mode)
    # A FIFO is a pipe of the kernel of the mount it is opened on (O_RDWR: no wait for a peer).
    pipe = os.open(one / name / "fifo", os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(pipe, b"through the pipe")
        assert os.read(pipe, 100) == b"through the pipe"
    finally:
        os.close(pipe)
    os.chmod(two / name / "fifo", 0o600)
    os.rename(one / name / "fifo", one / name / "fifo2")
    assert stat.S_ISFIFO(os.lstat(two / name / "fifo2").st_mode)
    assert stat.S_IMODE(os.lstat(two / name / "fifo2").st_mode) == 0o600
    c = clients(1)
    with pytest.raises(OSError) as e:
        c.open(f"{name}/fifo2", 1)
    assert e.value.errno == errno.ENXIO
    with pytest.raises(OSError) as e:
        c.mknod(f"{name}/dir", stat.S_IFDIR | 0o755)
    assert e.value.errno == errno.EINVAL
    for n in ("fifo2", "null", "sock"):
        os.unlink(one / name / n)
    assert os.listdir(two / name) == []


@pytest.mark.skipif(not shutil.which("rsync") or not shutil.which("git"),
                    reason="rsync and git are needed (sh install-system-packages.sh)")
def test_rsync_a_in_and_out_and_git_commit_inside_the_mount(mount, tmp_path, name):
    src = tmp_path / "src"
    for d in ("", "a", "a/b"):
        (src / d).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (src / d / f"f{i}").write_bytes(os.urandom(100 * i + 7))
            os.chmod(src / d / f"f{i}", 0o600 + 0o40 * i)
    os.symlink("a/f1", src / "link")
    os.utime(src / "a" / "f2", (1_100_000_000, 1_100_000_000))
    m = mount().path
    _sh(f"rsync -a {src}/ {m / name}/ && rsync -a {m / name}/ {tmp_path}/back/", cwd=tmp_path)
    listing = "find . -printf '%p %y %m %u %s %Ts %l\\n' | sort"
    assert _sh(listing, cwd=tmp_path / "back") == _sh(listing, cwd=src)
    repo = m / f"{name}.git"
    repo.mkdir()
    _sh("git init -q . && git config user.email t@e && git config user.name t && "
        "cp -r ../" + name + "/a . && git add -A && git commit -qm first && "
        "echo more >> a/f0 && git commit -qam second && git fsck --strict --no-progress && "
        "git log --oneline | wc -l", cwd=repo)
    assert _sh("git status --porcelain && git log --oneline | wc -l", cwd=repo).strip() == "2"


def test_a_fileserver_restarted_while_the_mount_reads(tmp_path):
    """Reads through the mount while a fileserver is SIGKILLed (and restarted by `pfs up`):
    each read is the right bytes or an error, never other bytes; after its restart all are."""
    cluster = Cluster(tmp_path / "cluster", **COURSE).start()
    mounted = None
    try:
        mounted = Mounted(cluster, tmp_path / "m")
        data = os.urandom(400_000)
        (mounted.path / "big").write_bytes(data)
        fd = os.open(mounted.path / "big", os.O_RDONLY)
        address = _status(cluster).fileservers[0].address
        os.kill(cluster.fileserver_pid(address), signal.SIGKILL)
        for offset in range(0, len(data), 50_000):
            try:
                assert os.pread(fd, 50_000, offset) == data[offset:offset + 50_000]
            except OSError:
                pass  # the fileserver is down: an error is what a reader may see
        os.close(fd)

        def whole() -> bool:
            try:
                return (mounted.path / "big").read_bytes() == data
            except OSError:
                return False
        wait_until(whole, TIMEOUT, "the file to read whole after the fileserver's restart")
    finally:
        if mounted is not None:
            mounted.unmount()
        cluster.stop()


def test_a_write_by_another_user_clears_set_id_bits(cluster, tmp_path, name):
    """As on a local file system: a write or truncate by a process other than root clears the
    set-user-ID bit, and the set-group-ID bit if group execute is set (else it marks
    mandatory locking and stays); root's write keeps them."""
    mounted = Mounted(cluster, tmp_path / "shared", "--allow-other")
    try:
        top = mounted.path / name
        top.mkdir()

        def after(mode: int, command: str, user: int) -> int:
            (top / "f").write_bytes(b"")
            os.chmod(top / "f", mode)
            # (in the directory before the user changes: tmp_path is root's only)
            subprocess.run(["sh", "-c", command], cwd=top, user=user, group=user, check=True,
                           timeout=TIMEOUT)
            return stat.S_IMODE(os.stat(top / "f").st_mode)
        nobody = 65534
        assert after(0o4777, "printf x 1<> f", nobody) == 0o777
        assert after(0o2777, "printf x >> f", nobody) == 0o777
        assert after(0o6777, "truncate -s 5 f", nobody) == 0o777
        assert after(0o2767, "printf x 1<> f", nobody) == 0o2767
        assert after(0o6777, "printf x 1<> f", 0) == 0o6777
        assert (top / "f").read_bytes() == b"x"
    finally:
        mounted.unmount()


def test_the_api_stores_attributes_and_symlinks_and_refuses_bad_ones(clients, name):
    a, b = clients(2)
    a.mkdir(name, mode=0o700, uid=5, gid=6)
    meta = b.stat(name)
    assert (meta.mode, meta.uid, meta.gid, meta.atime) == (0o700, 5, 6, None)
    a.create(f"{name}/f", 1)
    assert b.stat(f"{name}/f").mode is None  # never set: the mount shows 0644
    meta = b.setattr(f"{name}/f", mode=0o4755, atime=1.5, mtime=2.5)
    assert (meta.mode, meta.atime, meta.mtime) == (0o4755, 1.5, 2.5) and meta.ctime > 2.5
    with pytest.raises(OSError) as e:
        b.setattr(f"{name}/f", mode=0o10000)
    assert e.value.errno == errno.EINVAL
    a.symlink("f", f"{name}/link")
    assert b.stat(f"{name}/link").symlink_target == "f"
    with pytest.raises(OSError) as e:
        b.open(f"{name}/link", 1)
    assert e.value.errno == errno.ELOOP
    with pytest.raises(OSError) as e:
        a.symlink("", f"{name}/empty")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(FileExistsError):
        a.symlink("x", f"{name}/f")
    a.delete(f"{name}/link")
    assert [m.filename for m in b.listdir(name)] == [f"{name}/f"]
