"""The mount's open files: a FUSE file handle names one PFS fd of the mount's Client; a Client
opens a file at most once, so every FUSE handle on one file shares one fd, closed (written
back) when the last of them is released. A file is never being opened and closed at the same
time.

Files are told apart by their PFS file id, never by path: a file open here may be renamed or
unlinked (by this mount or any other client) and another file made under its old name.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import Iterator

from pfs.client import PFS_READ_WRITE, Client

log = logging.getLogger("pfs.mount")


@dataclass(eq=False)
class _Shared:
    fd: int
    users: int = 1
    closing: bool = False


@dataclass(frozen=True)
class Handle:
    file_id: int
    fd: int
    append: bool  # opened O_APPEND: every write goes to the end of the file


class Handles:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._by_id: dict[int, _Shared] = {}
        self._by_fh: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)

    def open(self, path: str, append: bool = False) -> int:
        """A new FUSE handle on the file at `path` (opened read-write in PFS: the kernel
        checks each fd's access mode itself)."""
        with self._lock:  # (held while opening: a second open of the file must find the fd)
            while True:
                try:
                    fd = self._client.open(path, PFS_READ_WRITE)
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    # Open here already (under this name or another): share its fd, once
                    # a close of it under way is done.
                    file_id = self._client.stat(path).file_id
                    shared = self._by_id.get(file_id)
                    if shared is None:
                        raise  # (a close of it failed: PFS keeps the fd for close only)
                    if shared.closing:
                        self._changed.wait_for(lambda: self._by_id.get(file_id) is not shared)
                        continue
                    shared.users += 1
                else:
                    file_id = self._client.file_id(fd)
                    self._by_id[file_id] = _Shared(fd)
                fh = next(self._next_fh)
                self._by_fh[fh] = Handle(file_id, self._by_id[file_id].fd, append)
                return fh

    def get(self, fh: int) -> Handle:
        return self._by_fh[fh]

    def release(self, fh: int) -> None:
        """Ends a FUSE handle; the last one on its file closes the PFS fd (writing back)."""
        with self._lock:
            handle = self._by_fh.pop(fh)
            shared = self._by_id[handle.file_id]
            shared.users -= 1
            if shared.users:
                return
            shared.closing = True
        try:
            self._client.close(shared.fd)
        finally:
            with self._lock:
                # (once PFS has it closed, an open may have made a new fd for it already)
                if self._by_id.get(handle.file_id) is shared:
                    del self._by_id[handle.file_id]
                self._changed.notify_all()

    @contextlib.contextmanager
    def fd_of(self, path: str) -> Iterator[int]:
        """The fd of `path` for one call by path (truncate): its shared fd if the mount has it
        open, else one opened for the call."""
        fh = self.open(path)
        try:
            yield self._by_fh[fh].fd
        finally:
            self.release(fh)

    def close_all(self) -> None:
        """At unmount: closes every fd still open (the kernel may drop the releases of files
        closed just before), writing their data back."""
        with self._lock:
            fds = [s.fd for s in self._by_id.values() if not s.closing]
            self._by_id.clear()
            self._by_fh.clear()
        for fd in fds:
            try:
                self._client.close(fd)
            except OSError as e:
                log.error("could not write back fd %d at unmount: %s", fd, e)
