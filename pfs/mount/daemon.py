"""A mount's life: one Client session from mount to unmount, FUSE options that keep the kernel's
caches out (so every read and write goes through PFS's tokens), and an unmount however it ends:
the guard (unmounting.py) unmounts if this process dies (even by SIGKILL), Ctrl-C and SIGTERM
end the loop, and files still open are written back before the session finishes.
"""
from __future__ import annotations

import errno
import logging
import os

from pfs.client import Client
from pfs.protocol.errnos import error

from .unmounting import start_guard, unmount

log = logging.getLogger("pfs.mount")

#: libfuse options: no data, attribute or name caching in the kernel (direct_io, timeouts of
#: 0), so a write through another mount or client is seen at once; no hard_remove: libfuse
#: hides a file unlinked while open under a .fuse_hidden* name, which the mount keeps for fstat
#: while PFS unlinks the file (handles.py); up to 16 requests served at once, threads kept
#: (libfuse 3.14 logs an error for its own default). No auto_unmount: the guard does it.
FUSE_OPTIONS = dict(direct_io=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
                    subtype="pfs", max_threads=16, max_idle_threads=16)
#: What libfuse's fuse_main returns when its loop ended on SIGINT, SIGTERM or SIGHUP.
STOPPED_BY_SIGNAL = 8


def serve(mountpoint: str, metaserver: str | None = None, stripe_width: int = 0,
          on_mounted=None, allow_other: bool = False) -> None:
    """Mounts PFS on `mountpoint` and serves it until unmounted, Ctrl-C or SIGTERM.
    `on_mounted()` is called once the kernel sends its first request. `allow_other`: every
    user may use the mount (the kernel checks their permissions), not only its owner."""
    from .binding import Fuse  # libfuse 3 and mfusepy are needed from here on only
    from .operations import Operations

    mountpoint = os.path.abspath(mountpoint)
    _prepare(mountpoint)
    client = Client(metaserver)
    client_id = client.initialize()
    operations = Operations(client, stripe_width)
    if on_mounted is not None:
        operations.init = lambda path: on_mounted()
    guard = start_guard(mountpoint)
    try:
        # The source that mount(8) shows: pfs@ADDRESS (a comma would end the option).
        Fuse(operations, mountpoint, foreground=True, **FUSE_OPTIONS, allow_other=allow_other,
             default_permissions=kernel_checks_permissions(allow_other),
             fsname="pfs@" + client.metaserver.replace(",", "+"))
    except RuntimeError as e:  # fuse_main's status
        if e.args != (STOPPED_BY_SIGNAL,):
            raise error(errno.EIO, f"libfuse failed (fuse_main returned {e.args[0]}); see "
                                   "the lines above") from None
    finally:
        os.close(guard)  # unmounted by now: the guard sees no mount and ends
        operations.handles.close_all()
        client.finish(client_id)


def kernel_checks_permissions(allow_other: bool) -> bool:
    """Whether the kernel checks each access against the stored mode bits and owners
    (default_permissions): on every mount but root's alone (no allow_other). There root passes
    every check but execute, which the kernel makes without it too (Operations.access), and a
    check would cost a getattr, a metaserver call, for every directory on every path."""
    return allow_other or os.getuid() != 0


def _prepare(mountpoint: str) -> None:
    """Checks the mount point; one left by a mount whose daemon died without its helper
    (ENOTCONN) is unmounted first."""
    try:
        os.stat(mountpoint)
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise error(e.errno, f"{mountpoint}: {e.strerror}") from None
        log.warning("%s was left mounted by a mount that died; unmounting it", mountpoint)
        unmount(mountpoint, lazy=True)
    if not os.path.isdir(mountpoint):
        raise error(errno.ENOTDIR, f"{mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise error(errno.EBUSY, f"{mountpoint} is a mount point already (pfs umount "
                                 f"{mountpoint} first)")
