"""The mount's open files: a FUSE file handle names one PFS fd of the mount's Client; a Client
opens a file at most once, so every FUSE handle on one file shares one fd, closed (written
back) when the last of them is released. A file is never being opened and closed at the same
time.

Files are told apart by their PFS file id, never by path: a file open here may be renamed or
unlinked (by this mount or any other client) and another file made under its old name.

A file unlinked (or renamed over) while open here keeps a hidden name in libfuse (.fuse_hidden*,
its only way to reach the file again, for fstat) that names the file here and nowhere in PFS:
PFS keeps the file itself, as an orphan, until its last close.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Iterator

from pfs.client import PFS_READ_WRITE, Client
from pfs.protocol.errnos import error

log = logging.getLogger("pfs.mount")

#: How libfuse's high-level layer names an open file it hides instead of unlinking.
HIDDEN_NAME = re.compile(r"\.fuse_hidden[0-9a-f]{16}")


def is_hidden(path: str) -> bool:
    return HIDDEN_NAME.fullmatch(os.path.basename(path)) is not None


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
        self._hidden: dict[str, int] = {}  # libfuse's hidden name -> file id

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

    def hide(self, hidden: str, file_id: int) -> bool:
        """libfuse hides the file `file_id` under `hidden` (a mount's path); whether it is
        open here (else it is no file libfuse hides)."""
        with self._lock:
            if file_id in self._by_id:
                self._hidden[hidden] = file_id
            return file_id in self._by_id

    def hidden_fd(self, hidden: str) -> int | None:
        """The fd of the file hidden under `hidden` (None: no such name); ESTALE once closed."""
        with self._lock:
            file_id = self._hidden.get(hidden)
            shared = None if file_id is None else self._by_id.get(file_id)
        if file_id is not None and shared is None:
            raise error(errno.ESTALE, f"{hidden}: its file was unlinked and closed")
        return None if shared is None else shared.fd

    def unhide(self, hidden: str) -> bool:
        """libfuse forgets a hidden name (the file's last close here); whether it was one."""
        with self._lock:
            return self._hidden.pop(hidden, None) is not None

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
