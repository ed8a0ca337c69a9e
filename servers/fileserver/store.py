"""Stripe storage: one object per file on local disk, read and written at local offsets.

An object's path is derived from the file id alone (objects/<id % 256 as hex>/<id>), never from
a client's string, so no request can name a path outside the data directory. Every argument is
checked before the disk is touched. Writes land in the page cache (they survive a crash of this
process); `fsync` makes them survive a crash of the machine. Recently used objects stay open
(`_Handles`): opening a file costs as much as a small read.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import threading
import uuid
from collections import OrderedDict
from typing import Iterator

from pfs.transport import MAX_CHUNK

#: Objects are never larger than this (a sanity bound on offsets from the network).
MAX_OBJECT_BYTES = 1 << 50
#: Objects kept open at most.
OPEN_OBJECTS = 256


class _Handles:
    """File descriptors of recently used objects, shared by the calls that use them; one is
    closed only once no call uses it (a closed descriptor's number could be reused by another
    object meanwhile)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[int, list[int]] = OrderedDict()  # file id -> [fd, users]

    @contextlib.contextmanager
    def use(self, file_id: int, path: str, create: bool) -> Iterator[int | None]:
        """The object's descriptor (None if it does not exist and `create` is false)."""
        with self._lock:
            entry = self._open.get(file_id)
            if entry is not None:
                self._open.move_to_end(file_id)
                entry[1] += 1
        if entry is None:
            try:
                fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._lock:
                entry = self._open.get(file_id)
                if entry is None:
                    entry = self._open[file_id] = [fd, 1]
                    self._close_beyond_limit()
                else:  # opened meanwhile by another call: use that one
                    entry[1] += 1
                    os.close(fd)
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1] and self._open.get(file_id) is not entry:
                    os.close(entry[0])  # dropped while in use: the last user closes it

    def drop(self, file_id: int) -> None:
        with self._lock:
            entry = self._open.pop(file_id, None)
            if entry is not None and not entry[1]:
                os.close(entry[0])

    def _close_beyond_limit(self) -> None:
        for file_id in list(self._open):
            if len(self._open) <= self._limit:
                return
            if not self._open[file_id][1]:
                os.close(self._open.pop(file_id)[0])


class StripeStore:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self._objects = str(self.objects)
        self._handles = _Handles(OPEN_OBJECTS)
        self.uuid = self._identity()

    def _identity(self) -> str:
        """A uuid made once and kept in the data directory: the metaserver knows us by it."""
        path = self.root / "fileserver.uuid"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(uuid.uuid4()))
            os.replace(tmp, path)
        return path.read_text().strip()

    def check(self, file_id: int, offset: int, length: int) -> None:
        """ValueError, saying why, unless a call may name this object and range (checked again
        by every call, so none can skip it)."""
        self._path(file_id)
        self._check_range(offset, length)

    def _path(self, file_id: int) -> str:
        if not 0 < file_id < (1 << 63):
            raise ValueError(f"file id must be between 1 and 2^63-1, got {file_id}")
        return f"{self._objects}/{file_id % 256:02x}/{file_id}"

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if length > MAX_CHUNK:
            raise ValueError(f"at most {MAX_CHUNK} bytes per request, got {length}")
        if offset + length > MAX_OBJECT_BYTES:
            raise ValueError(f"range [{offset}, {offset + length}) is beyond the largest object")

    def read(self, file_id: int, offset: int, length: int) -> bytes:
        path = self._path(file_id)
        self._check_range(offset, length)
        with self._handles.use(file_id, path, create=False) as fd:
            # Nothing was ever written to this server's part of the file: it reads as empty.
            return b"" if fd is None else os.pread(fd, length, offset)

    def write(self, file_id: int, offset: int, data) -> None:
        path = self._path(file_id)
        self._check_range(offset, len(data))
        view = memoryview(data)
        with self._handles.use(file_id, path, create=True) as fd:
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written

    def truncate(self, file_id: int, length: int, keep: int) -> None:
        """Cuts the object to `length` bytes, or extends it with zeros (sparse): whatever it
        held past `keep` is gone either way."""
        path = self._path(file_id)
        self._check_range(length, 0)
        with self._handles.use(file_id, path, create=True) as fd:
            os.ftruncate(fd, min(keep, length))
            os.ftruncate(fd, length)

    def fsync(self, file_id: int) -> None:
        path = self._path(file_id)
        with self._handles.use(file_id, path, create=False) as fd:
            if fd is None:
                return
            os.fsync(fd)
        directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the object's name, too
        finally:
            os.close(directory)

    def length(self, file_id: int) -> int:
        """Bytes in the file's object (0 when nothing was ever written here)."""
        try:
            return os.stat(self._path(file_id)).st_size
        except FileNotFoundError:
            return 0

    def delete(self, file_id: int) -> None:
        path = self._path(file_id)
        self._handles.drop(file_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def usage(self) -> tuple[int, int]:
        """(number of objects, bytes stored)."""
        sizes = [p.stat().st_size for p in self.objects.glob("*/*")]
        return len(sizes), sum(sizes)
