"""Stripe storage: one object per file on local disk, read and written at local offsets.

An object's path is derived from the file id alone (objects/<id % 256 as hex>/<id>), never from
a client's string, so no request can name a path outside the data directory. Every argument is
checked before the disk is touched. Writes land in the page cache (they survive a crash of this
process); `fsync` makes them survive a crash of the machine.
"""
from __future__ import annotations

import os
import pathlib
import uuid

from pfs.transport import MAX_CHUNK

#: Objects are never larger than this (a sanity bound on offsets from the network).
MAX_OBJECT_BYTES = 1 << 50


class StripeStore:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.uuid = self._identity()

    def _identity(self) -> str:
        """A uuid made once and kept in the data directory: the metaserver knows us by it."""
        path = self.root / "fileserver.uuid"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(uuid.uuid4()))
            os.replace(tmp, path)
        return path.read_text().strip()

    def _path(self, file_id: int) -> pathlib.Path:
        if not 0 < file_id < (1 << 63):
            raise ValueError(f"file id must be between 1 and 2^63-1, got {file_id}")
        return self.objects / f"{file_id % 256:02x}" / str(file_id)

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if length > MAX_CHUNK:
            raise ValueError(f"at most {MAX_CHUNK} bytes per request, got {length}")
        if offset + length > MAX_OBJECT_BYTES:
            raise ValueError(f"range [{offset}, {offset + length}) is beyond the largest object")

    def read(self, file_id: int, offset: int, length: int) -> bytes:
        path = self._path(file_id)
        self._check_range(offset, length)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return b""  # nothing was ever written to this server's part of the file
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def write(self, file_id: int, offset: int, data: bytes) -> None:
        path = self._path(file_id)
        self._check_range(offset, len(data))
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
        finally:
            os.close(fd)

    def truncate(self, file_id: int, length: int) -> None:
        """Cuts the object to `length` bytes, or extends it with zeros (sparse)."""
        path = self._path(file_id)
        self._check_range(length, 0)
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, length)
        finally:
            os.close(fd)

    def fsync(self, file_id: int) -> None:
        path = self._path(file_id)
        if not path.exists():
            return
        for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def length(self, file_id: int) -> int:
        """Bytes in the file's object (0 when nothing was ever written here)."""
        try:
            return self._path(file_id).stat().st_size
        except FileNotFoundError:
            return 0

    def delete(self, file_id: int) -> None:
        self._path(file_id).unlink(missing_ok=True)

    def usage(self) -> tuple[int, int]:
        """(number of objects, bytes stored)."""
        sizes = [p.stat().st_size for p in self.objects.glob("*/*")]
        return len(sizes), sum(sizes)
