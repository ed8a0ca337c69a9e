"""Unmounting a mount its own process cannot unmount: `unmount` (what `pfs umount` and a new
mount on a dead mount point run), and the guard: a small process beside each mount that, once
the mount's process has ended (by SIGKILL too) and left its mount dead ("Transport endpoint is
not connected"), unmounts it, so the mount point is an empty directory again.

libfuse's own helper (auto_unmount) looks at the mount point once, the moment the process's
control socket closes, which may come before the kernel has aborted the connection: then it
takes the mount for a live one and leaves it dead (our CI saw it once in some forty runs).
The guard waits for the same end, then looks again until the kernel has decided: ENOTCONN
(dead: unmount it), no mount (unmounted cleanly), or a mount that answers (a new one).

The guard runs as `python -m pfs.mount.unmounting MOUNTPOINT` (start_guard), with the read end
of a pipe as its stdin whose write end only the mount's process holds.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

#: How long the guard waits for the kernel to abort the dead mount's connection.
SETTLE_TIMEOUT = 10.0


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmounts a FUSE mount (`lazy`: even while busy); the daemon then writes back and ends."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise OSError(errno.ENOENT, "fusermount3 is not installed (apt-get install fuse3)")
    done = subprocess.run([tool, "-u", *(["-z"] if lazy else []), mountpoint],
                          capture_output=True, text=True, timeout=60)
    if done.returncode:
        message = done.stderr.strip().rpartition(": ")[2] or "failed"
        code = errno.EBUSY if "busy" in message else errno.EINVAL
        raise OSError(code, f"cannot unmount {mountpoint}: {message}")


def start_guard(mountpoint: str) -> int:
    """Starts the guard of `mountpoint`; returns the pipe's write end, to keep open for as long
    as this process serves the mount (its end, even by SIGKILL, closes it)."""
    read_end, write_end = os.pipe()
    try:
        # A session of its own: the terminal's Ctrl-C ends the mount, never its guard.
        # The path the mount table will show: through symbolic links.
        subprocess.Popen([sys.executable, "-m", "pfs.mount.unmounting",
                          os.path.realpath(mountpoint)],
                         stdin=read_end, cwd="/", start_new_session=True)
    finally:
        os.close(read_end)
    return write_end


def _mounted(mountpoint: str) -> bool:
    """Whether a FUSE file system is mounted on `mountpoint` (dead or alive)."""
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            where = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            fs_type = fields[fields.index(b"-") + 1]
            if where == os.fsencode(mountpoint) and fs_type.startswith(b"fuse"):
                return True
    return False


def _dead(mountpoint: str) -> bool | None:
    """True: the mount on `mountpoint` is dead; False: none, or one that answers; None: the
    kernel is still aborting the connection."""
    if not _mounted(mountpoint):
        return False
    try:
        os.stat(mountpoint)
        return False
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            return True
        if e.errno == errno.ECONNABORTED:
            return None
        raise


def guard(mountpoint: str) -> int:
    """Waits for the mount's process to end, then unmounts its mount if it left it dead."""
    # The end of its mount ends it: not the signals that stop a service's group (systemd).
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, signal.SIG_IGN)
    sys.stdin.buffer.read()  # EOF: the mount's process has ended
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (dead := _dead(mountpoint)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if dead is None:
        print(f"pfs mount: its process ended, but the kernel has not let go of {mountpoint} "
              f"in {SETTLE_TIMEOUT:g}s; `pfs umount --lazy {mountpoint}` unmounts it",
              file=sys.stderr, flush=True)
        return 1
    if not dead:
        return 0
    unmount(mountpoint, lazy=True)
    print(f"pfs mount: its process ended without unmounting {mountpoint}; the guard unmounted "
          "it", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(guard(sys.argv[1]))
