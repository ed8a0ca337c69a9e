"""`pfs mount`: real mounts of a real cluster in temporary directories, used by real programs
(cp, tar, sha256sum, the shell) and by os calls; every mount is unmounted, and every wait is
bounded. Needs /dev/fuse and Debian's fuse3, which the README's test command installs."""
from __future__ import annotations

import errno
import os
import pathlib
import random
import shutil
import signal
import subprocess

import pytest

from clusters import read_file, wait_until
from mounts import TIMEOUT, needs_fuse

pytestmark = needs_fuse


def _tree(root: pathlib.Path, seed: int = 1) -> None:
    """Nested directories of files from empty to several stripes long."""
    rng = random.Random(seed)
    for d in ("", "a", "a/b", "a/b/c", "empty", "z"):
        (root / d).mkdir(parents=True, exist_ok=True)
        for i in range(rng.randrange(1, 5) if d != "empty" else 0):
            (root / d / f"f{i}.bin").write_bytes(rng.randbytes(rng.choice([0, 1, 511, 4099,
                                                                          70_000])))


def _sums(root: pathlib.Path) -> str:
    """sha256sum of every file below root, by relative path."""
    done = subprocess.run("find . -type f -print0 | sort -z | xargs -0 -r sha256sum", shell=True,
                          cwd=root, capture_output=True, text=True, timeout=TIMEOUT, check=True)
    return done.stdout


def _sh(command: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, check=True)


def test_shell_tools_copy_tar_and_append_through_the_mount(mount, tmp_path, name):
    src = tmp_path / "src"
    _tree(src)
    m = mount().path
    _sh(f"cp -r {src} {name} && tar -cf {tmp_path}/out.tar -C {name} . && mkdir {name}.x && "
        f"tar -xf {tmp_path}/out.tar -C {name}.x", cwd=m)
    assert _sums(m / name) == _sums(src) == _sums(m / f"{name}.x")
    _sh("echo first > log && echo hi >> log && echo hi >> log", cwd=m)
    assert (m / "log").read_bytes() == b"first\nhi\nhi\n"
    assert _sh("df -P .", cwd=m).stdout.splitlines()[1].split()[1] != "0"
    _sh(f"rm -r {name} {name}.x log", cwd=m)
    assert not (m / name).exists()


def test_a_write_through_one_mount_is_read_at_once_through_another(mount, name):
    one, two = mount("one").path / name, mount("two").path / name
    fd1 = os.open(one, os.O_CREAT | os.O_RDWR)
    fd2 = os.open(two, os.O_RDWR)
    try:
        for i in range(20):  # no close, no fsync: the tokens alone
            data = f"round {i} ".encode() * (i + 1)
            os.pwrite(fd1 if i % 2 else fd2, data, 100 * i)
            assert os.pread(fd2 if i % 2 else fd1, len(data), 100 * i) == data
            assert os.fstat(fd2).st_size == os.fstat(fd1).st_size == 100 * i + len(data)
    finally:
        os.close(fd1)
        os.close(fd2)


def test_random_io_through_two_mounts_matches_a_model(mount, name):
    """pwrite and pread at random offsets (past the end too), truncate up and down, and O_APPEND
    writes, spread over two mounts, against a bytearray."""
    rng = random.Random(7)
    one, two = mount("one").path / name, mount("two").path / name
    fds = [os.open(one, os.O_CREAT | os.O_RDWR), os.open(two, os.O_RDWR)]
    appenders = [os.open(one, os.O_WRONLY | os.O_APPEND), os.open(two, os.O_WRONLY | os.O_APPEND)]
    model = bytearray()
    try:
        for step in range(300):
            fd, op = rng.choice(fds), rng.random()
            offset = rng.randrange(0, len(model) + 3000)
            if op < 0.35:
                data = rng.randbytes(rng.randrange(1, 3000))
                assert os.pwrite(fd, data, offset) == len(data)
                model[len(model):offset] = bytes(max(0, offset - len(model)))
                model[offset:offset + len(data)] = data
            elif op < 0.45:
                data = rng.randbytes(rng.randrange(1, 700))
                assert os.write(rng.choice(appenders), data) == len(data)
                model += data
            elif op < 0.55:
                size = rng.randrange(0, len(model) + 3000)
                os.ftruncate(fd, size)
                model[size:] = b""
                model += bytes(size - len(model))
            else:
                n = rng.randrange(0, 4000)
                assert os.pread(fd, n, offset) == bytes(model[offset:offset + n]), step
        assert os.pread(fds[1], len(model) + 10, 0) == bytes(model)
    finally:
        for fd in fds + appenders:
            os.close(fd)


def test_root_s_own_mount_checks_execute_bits_as_root_gets_anywhere(mount, name):
    """Root's mount without --allow-other leaves permission checks to the mount (no
    default_permissions, daemon.py): root reads and writes whatever the mode bits say, as
    anywhere, but a file runs only with an execute bit."""
    script = mount().path / name
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    assert not os.access(script, os.X_OK) and os.access(script.parent, os.X_OK)
    with pytest.raises(PermissionError):
        subprocess.run([str(script)], timeout=TIMEOUT)
    script.chmod(0o700)
    assert os.access(script, os.X_OK)
    assert subprocess.run([str(script)], capture_output=True, text=True,
                          timeout=TIMEOUT).stdout == "ran\n"
    script.chmod(0)
    assert script.read_text() == "#!/bin/sh\necho ran\n" and os.access(script, os.W_OK)
    os.unlink(script)


def test_what_pfs_does_not_store_is_refused_with_a_clear_errno(mount, name):
    m = mount().path
    (m / name).write_bytes(b"x")
    with pytest.raises(PermissionError):
        os.link(m / name, m / "hard")
    with pytest.raises(OSError) as e:
        os.setxattr(m / name, "user.k", b"v")
    assert e.value.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
    os.unlink(m / name)


def _usable(path: pathlib.Path) -> bool:
    """Whether the directory answers (a dead mount on it is ENOTCONN, which ismount hides)."""
    try:
        os.listdir(path)
        return True
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        return False


def _guards(path: pathlib.Path) -> list[int]:
    """The pids of the guard processes of the mount on `path`."""
    return [int(pid) for pid in subprocess.run(
        ["pgrep", "-f", f"pfs.mount.unmounting {path}$"], capture_output=True, text=True,
        timeout=TIMEOUT).stdout.split()]


def test_a_killed_daemon_leaves_the_mount_point_usable_and_a_new_mount_works(
        cluster, mount, tmp_path, name):
    # Through a symbolic link, to a name the mount table escapes: the guard finds it all the same.
    (tmp_path / "m \u00e9").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m \u00e9")
    first = mount("link")
    with open(first.path / name, "wb") as f:
        f.write(b"kept" * 1000)
        f.flush()
        os.fsync(f.fileno())  # what fsync acknowledged survives the daemon
    where = first.where
    assert where == tmp_path / "m \u00e9" and len(_guards(where)) == 1
    first.process.kill()
    first.process.wait(timeout=TIMEOUT)
    wait_until(lambda: _usable(where), TIMEOUT, "the guard's unmount")
    assert os.listdir(where) == [] and not os.path.ismount(where)
    wait_until(lambda: not _guards(where), TIMEOUT, "the guard's end")
    second = mount("m \u00e9")
    assert (second.path / name).read_bytes() == b"kept" * 1000


def test_a_stale_mount_point_is_recovered_and_sigterm_writes_back(cluster, mount, clients,
                                                                   name):
    first = mount("m")
    # The daemon and its guard both gone: the kernel keeps a dead mount.
    guard, = _guards(first.path)
    os.kill(guard, signal.SIGKILL)
    first.process.kill()
    first.process.wait(timeout=TIMEOUT)
    with pytest.raises(OSError) as e:
        os.listdir(first.path)
    assert e.value.errno == errno.ENOTCONN
    second = mount("m")  # mounting again recovers it
    (second.path / name).write_bytes(b"written, then SIGTERM")
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=TIMEOUT) == 0, second.log.read_text()
    assert not os.path.ismount(second.path)
    wait_until(lambda: not _guards(second.path), TIMEOUT, "the guard's end")
    assert read_file(clients(1), name) == b"written, then SIGTERM"
    assert shutil.which("fusermount3")  # (the suite's install step put it there)


class _Names:
    """The model of a directory: names -> files, files -> bytes, open fds -> (file, append)."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.data: dict[int, bytearray] = {}
        self.fds: dict[int, tuple[int, bool]] = {}

    def write(self, file: int, offset: int, data: bytes) -> None:
        model = self.data[file]
        model[len(model):offset] = bytes(max(0, offset - len(model)))  # a hole reads as zeros
        model[offset:offset + len(data)] = data

    def truncate(self, file: int, size: int) -> None:
        model = self.data[file]
        model[size:] = b""
        model += bytes(size - len(model))


def _step(root: pathlib.Path, model: _Names, rng: random.Random) -> str:
    """One random operation through the mount, done to the model too; what it was."""
    name, other = rng.sample(sorted("abcd"), 2)
    fd = rng.choice(sorted(model.fds)) if model.fds else None
    op = rng.random() if fd is not None else 0.0
    if op < 0.12 and len(model.fds) < 6:
        append = rng.random() < 0.3
        fd = os.open(root / name, os.O_CREAT | os.O_RDWR | (os.O_APPEND if append else 0))
        if name not in model.names:
            model.names[name] = len(model.data)
            model.data[len(model.data)] = bytearray()
        model.fds[fd] = (model.names[name], append)
        return f"open {name} append={append} -> {fd}"
    file, append = model.fds[fd] if fd is not None else (None, False)
    size = len(model.data[file]) if fd is not None else 0
    offset = rng.randrange(0, size + 3000)
    if op < 0.35:
        data = rng.randbytes(rng.randrange(1, 3000))
        if append:  # (a pwrite on an O_APPEND fd appends on Linux)
            assert os.write(fd, data) == len(data)
            offset = size
        else:
            assert os.pwrite(fd, data, offset) == len(data)
        model.write(file, offset, data)
        return f"write {len(data)} at {offset} to {fd}"
    if op < 0.5:
        n = rng.randrange(0, 4000)
        assert os.pread(fd, n, offset) == bytes(model.data[file][offset:offset + n])
        return f"read {n} at {offset} from {fd}"
    if op < 0.6:
        os.ftruncate(fd, offset)
        model.truncate(file, offset)
        return f"truncate {fd} to {offset}"
    if op < 0.7 and name in model.names:
        os.unlink(root / name)
        del model.names[name]
        return f"unlink {name}"
    if op < 0.8 and name in model.names:
        os.rename(root / name, root / other)
        model.names[other] = model.names.pop(name)
        return f"rename {name} over {other}"
    if op < 0.9:
        os.close(fd)
        del model.fds[fd]
        return f"close {fd}"
    return "nothing"


def _check(root: pathlib.Path, model: _Names) -> None:
    """Every name and every open fd against the model."""
    assert sorted(os.listdir(root)) == sorted(model.names)
    for name, file in model.names.items():
        assert (root / name).read_bytes() == model.data[file], name
    named = set(model.names.values())
    for fd, (file, _) in model.fds.items():
        if file in named:  # (fstat of a nameless file is a known limit: README, "Mounting")
            assert os.fstat(fd).st_size == len(model.data[file]), fd
        assert os.pread(fd, len(model.data[file]) + 10, 0) == model.data[file], fd


def test_random_names_and_open_files_through_a_mount_match_a_model(mount, name):
    """Seeded random steps on a few names: opens (some O_APPEND), writes at random offsets (past
    the end: holes read as zeros), reads, truncates up and down, unlinks while open (the fd
    keeps working), renames over open files, closes; the directory, every file and every open
    fd checked against the model after each step."""
    root = mount().path / name
    root.mkdir()
    model, rng, done = _Names(), random.Random(23), []
    try:
        for _ in range(150):
            done.append(_step(root, model, rng))
            _check(root, model)
    except (AssertionError, OSError) as failure:
        raise AssertionError(f"after {done[-8:]}") from failure
    finally:
        for fd in model.fds:
            os.close(fd)
