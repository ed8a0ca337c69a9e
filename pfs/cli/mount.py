"""`pfs mount` and `pfs umount`: the cluster named by PFS_METASERVER as a POSIX file system.

Invariant: `pfs mount` returns (in the foreground: exits) only once the mount is gone and its
files are written back, or failed to appear; with --detach it returns once the mount serves, or
fails with the line of the daemon's log that says why.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from .arguments import add_command, metaserver
from .console import Console

#: How long --detach waits for the mount to serve.
DETACH_TIMEOUT = 60.0
MOUNTED_LINE = "pfs mount: mounted"


def cmd_mount(args: argparse.Namespace, console: Console) -> int:
    if args.detach:
        return _detach(args)
    from pfs.mount.daemon import serve

    where = metaserver()
    mountpoint = os.path.abspath(args.mountpoint)
    serve(mountpoint, where, args.stripe_width, on_mounted=lambda: print(
        f"{MOUNTED_LINE} PFS at {where} on {mountpoint} (PID {os.getpid()}); "
        f"`pfs umount {mountpoint}` unmounts it", flush=True), allow_other=args.allow_other)
    return 0


def _detach(args: argparse.Namespace) -> int:
    """The same mount in a session of its own (no terminal's Ctrl-C or hangup reaches it),
    logging to --log."""
    mountpoint = os.path.abspath(args.mountpoint)
    log_path = os.path.abspath(args.log or os.path.join(
        tempfile.gettempdir(), f"pfs-mount-{os.getuid()}-{os.path.basename(mountpoint)}.log"))
    argv = [sys.executable, "-m", "pfs", "mount", mountpoint, "--stripe-width",
            str(args.stripe_width), *(["--allow-other"] if args.allow_other else [])]
    with open(log_path, "ab") as log_file:
        start = log_file.tell()
        # From the root: `-m pfs` in a source checkout would import the source tree.
        child = subprocess.Popen(argv, cwd="/", stdin=subprocess.DEVNULL, stdout=log_file,
                                 stderr=log_file, start_new_session=True)
    deadline = time.monotonic() + DETACH_TIMEOUT
    while True:
        with open(log_path, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
        if any(line.startswith(MOUNTED_LINE) for line in lines):
            print(f"pfs mount: {mountpoint} mounted in the background (PID {child.pid}); its "
                  f"log is {log_path}; `pfs umount {mountpoint}` unmounts it", flush=True)
            return 0
        if child.poll() is not None or time.monotonic() > deadline:
            if child.poll() is None:
                child.terminate()
            why = next((line for line in reversed(lines) if line.startswith("pfs ")),
                       lines[-1] if lines else "it wrote nothing")
            raise SystemExit(f"the mount did not start ({log_path} has its log): {why}")
        time.sleep(0.1)


#: mount(8) options that mean nothing to a PFS mount (the kernel's, or mount(8)'s own).
IGNORED_OPTIONS = {"defaults", "rw", "auto", "noauto", "user", "nouser", "users", "_netdev",
                   "nofail", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "atime",
                   "noatime", "relatime", "async"}


def helper(argv: list[str] | None = None) -> int:
    """`mount.fuse.pfs SOURCE MOUNTPOINT [-o OPTIONS]`: what `mount -t fuse.pfs` and an fstab
    line run (put it in /sbin). SOURCE is the metaserver, as `pfs mount` shows it
    (`pfs@HOST:PORT`, `+` between several) or bare; OPTIONS may hold `stripe_width=N` and
    `allow_other`. The
    mount runs in the background (`pfs mount --detach`)."""
    parser = argparse.ArgumentParser(prog="mount.fuse.pfs", description=helper.__doc__)
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", default="")
    parser.add_argument("-n", "-s", "-v", action="store_true", help="(mount(8)'s; ignored)")
    args = parser.parse_args(argv)
    stripe_width, allow_other = 0, False
    for option in filter(None, args.options.split(",")):
        name, _, value = option.partition("=")
        if name == "stripe_width" and value.isdigit():
            stripe_width = int(value)
        elif name == "allow_other" and not value:
            allow_other = True
        elif name not in IGNORED_OPTIONS:
            raise SystemExit(f"mount.fuse.pfs: unknown option {option!r} (PFS takes "
                             "stripe_width=N and allow_other)")
    os.environ["PFS_METASERVER"] = args.source.removeprefix("pfs@").replace("+", ",")
    return _detach(argparse.Namespace(mountpoint=args.mountpoint, log=None,
                                      stripe_width=stripe_width, allow_other=allow_other))


def cmd_umount(args: argparse.Namespace, console: Console) -> int:
    from pfs.mount.unmounting import unmount

    unmount(os.path.abspath(args.mountpoint), lazy=args.lazy)
    return 0


def register(sub) -> None:
    """mount, umount."""
    p = add_command(sub, "mount", "mount PFS as a file system any program can use", """\
Mount the cluster at PFS_METASERVER on MOUNTPOINT (an empty directory) with FUSE, in the
foreground until `pfs umount MOUNTPOINT`, Ctrl-C or SIGTERM, which write back the files still
open and end the session. The mount is one PFS client, sequentially consistent with every other
mount and client: a write through it is seen at once by a read anywhere. A mount whose process
was killed is unmounted by its guard process; a mount point left unusable ("Transport endpoint is
not connected") is recovered by mounting on it again. Needs libfuse 3 (Debian: fuse3) and the
extra pfs[mount]. What the mount refuses is in the README, "Mounting".""", cmd_mount,
                    graceful=True)
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="the directory to mount on")
    p.add_argument("--detach", action="store_true",
                   help="run in the background, logging to --log; return once it serves "
                        "(default: in the foreground)")
    p.add_argument("--log", metavar="FILE",
                   help="the log of a --detach mount (default: "
                        "TMPDIR/pfs-mount-UID-NAME.log, NAME the mount point's)")
    p.add_argument("--allow-other", action="store_true",
                   help="let every user use the mount, their permissions checked against the "
                        "stored mode bits and owners (default: only the user who mounts; a "
                        "user other than root needs user_allow_other in /etc/fuse.conf)")
    p.add_argument("--stripe-width", type=int, default=0, metavar="N",
                   help="stripe width of files created through the mount (default: every "
                        "fileserver online)")

    p = add_command(sub, "umount", "unmount a pfs mount", """\
Unmount a PFS mount (fusermount3 -u); its process then writes back and ends its session.
Fails while a program has a file or directory open there, unless --lazy.""", cmd_umount)
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where PFS is mounted")
    p.add_argument("--lazy", action="store_true",
                   help="detach it now, and unmount once it is no longer busy (default: fail "
                        "while busy)")
