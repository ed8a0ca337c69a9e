"""One server per data directory and per port (README, "One of each"): a second copy refuses to start and says
which process holds what it wanted.

A data directory is held with an exclusive flock on its `lock` file, which also records the
holder's PID; the kernel drops the lock when the holder dies, however it dies, so a stale lock
file never blocks a restart. Ports are never shared (gRPC's SO_REUSEPORT is off); when one is
taken, the listening process is looked up in /proc to name it.
"""
from __future__ import annotations

import fcntl
import os
import pathlib

LOCK_NAME = "lock"


class AlreadyRunning(SystemExit):
    """Another process holds the data directory or the port."""


def lock_data_dir(data_dir: pathlib.Path, what: str) -> int:
    """Takes the data directory for this process until it exits; returns the lock's fd."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(fd) or "unknown"
        os.close(fd)
        raise AlreadyRunning(f"{data_dir} is in use by another {what} (PID {holder}); stop it "
                             "first, or give this one another --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    os.set_inheritable(fd, False)
    return fd


def _pid_in(fd: int) -> str:
    """The PID the lock file records ("" while its holder has yet to write it)."""
    return os.pread(fd, 64, 0).decode(errors="replace").strip()


def data_dir_holder(data_dir: pathlib.Path) -> int | None:
    """The PID of the process holding the data directory (0 if it has not written it yet),
    or None when no process holds it."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # let go at once, by the close below
        return None
    except BlockingIOError:
        pid = _pid_in(fd)
        return int(pid) if pid.isdigit() else 0
    finally:
        os.close(fd)


def port_holder(port: int) -> str:
    """Who listens on the TCP port, as "PID n (command)", or "another process" when /proc
    does not tell (another user's process, or not Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                return f"PID {proc.name} ({command[:120]})"
        except OSError:
            continue
    return "another process"
