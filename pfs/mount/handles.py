"""The mount's open files: a FUSE file handle names one PFS fd of the mount's Client; a Client
opens a file at most once, so every FUSE handle on one path shares one fd, closed (written back)
when the last of them is released. A path is never being opened and closed at the same time.

Paths of open files are stable keys: PFS refuses to rename or delete a file open anywhere.
"""
from __future__ import annotations

import contextlib
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
    path: str
    fd: int
    append: bool  # opened O_APPEND: every write goes to the end of the file


class Handles:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._by_path: dict[str, _Shared] = {}
        self._by_fh: dict[int, Handle] = {}
        self._next_fh = itertools.count(1)

    def open(self, path: str, append: bool = False) -> int:
        """A new FUSE handle on the file at `path` (opened read-write in PFS: the kernel
        checks each fd's access mode itself)."""
        with self._lock:
            self._changed.wait_for(lambda: not self._closing(path))
            shared = self._by_path.get(path)
            if shared is None:
                # Under the lock: a second open of the path must find this one's fd.
                shared = self._by_path[path] = _Shared(self._client.open(path, PFS_READ_WRITE))
            else:
                shared.users += 1
            fh = next(self._next_fh)
            self._by_fh[fh] = Handle(path, shared.fd, append)
            return fh

    def get(self, fh: int) -> Handle:
        return self._by_fh[fh]

    def release(self, fh: int) -> None:
        """Ends a FUSE handle; the last one on its path closes the PFS fd (writing back)."""
        with self._lock:
            handle = self._by_fh.pop(fh)
            shared = self._by_path[handle.path]
            shared.users -= 1
            if shared.users:
                return
            shared.closing = True
        try:
            self._client.close(shared.fd)
        finally:
            with self._lock:
                del self._by_path[handle.path]
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

    def wait_released(self, paths: tuple[str, ...], timeout: float) -> bool:
        """Waits up to `timeout` seconds until the mount has none of `paths` open; whether it
        has none. The kernel sends a release after close() has returned, so a program's
        `rm` or `mv` right after it closed the file may come first."""
        with self._lock:
            return self._changed.wait_for(
                lambda: not any(p in self._by_path for p in paths), timeout)

    def is_open(self, path: str) -> bool:
        with self._lock:
            return path in self._by_path

    def close_all(self) -> None:
        """At unmount: closes every fd still open (the kernel may drop the releases of files
        closed just before), writing their data back."""
        with self._lock:
            fds = [s.fd for s in self._by_path.values() if not s.closing]
            self._by_path.clear()
            self._by_fh.clear()
        for fd in fds:
            try:
                self._client.close(fd)
            except OSError as e:
                log.error("could not write back fd %d at unmount: %s", fd, e)

    def _closing(self, path: str) -> bool:
        shared = self._by_path.get(path)
        return shared is not None and shared.closing
