"""Stripe storage: one object per file on local disk, read and written at local offsets, with
the checksums of its units beside it (pfs/checksums.py).

An object's path is derived from the file id alone (objects/<id % 256 as hex>/<id>), never from
a client's string, so no request can name a path outside the data directory. Its checksums are
in `<id>.crc`: 4 bytes per unit, each the unit's checksum with every bit flipped, so that a unit
no write reached (a hole in that file reads as 0, i.e. a checksum of all ones) fails its check
whatever the object holds there: bytes lost with their checksums, or a sparse hole a write
past them left in an object that lost its data, are never taken for stored zeros. The zeros a
truncate adds are the exception, kept as ranges of units in `<id>.zeros` (a few bytes however
large the extension) where a hole in the checksum file is a unit of zeros. Every argument is
checked before the disk is touched.

A write of a whole unit (or of a unit's start up to the object's end) stores the writer's own
CRC, so checksums are end to end. A write of part of a unit reads the rest of it, checks it,
and stores the checksum of the merged unit, after checking the writer's CRC of its piece. An
object's data and checksums change together under the object's lock, so no read sees one
without the other; two calls on disjoint bytes of one unit (their tokens allow it) thereby
never lose each other's checksum.

Writes land in the page cache (they survive a crash of this process); `fsync` makes them survive
a crash of the machine. Recently used objects stay open (`_Handles`): opening a file costs as
much as a small read.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import threading
import uuid
from array import array
from collections import OrderedDict
from typing import Callable, Iterator

from pfs._native import crc32c
from pfs.protocol import checksums
from pfs.protocol.transport import MAX_CHUNK
from pfs.protocol.wire import CHECKSUM_UNIT as UNIT

#: Objects are never larger than this (a sanity bound on offsets from the network).
MAX_OBJECT_BYTES = 1 << 50
#: Objects kept open at most.
OPEN_OBJECTS = 256
#: Locks that objects share (by file id): a call holds its object's while it touches it.
LOCKS = 64


class Corrupt(Exception):
    """Stored bytes do not match their checksum, or sent ones the sender's: never stored over,
    never returned."""


class _Handles:
    """Descriptors of recently used objects, each with its checksum file's (opened, created if
    need be, whenever the object is), shared by the calls that use them; a pair is closed only
    once no call uses it (a closed descriptor's number could be reused by another object
    meanwhile)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._open: OrderedDict[int, list] = OrderedDict()  # file id -> [(fd, crc fd), users]

    @contextlib.contextmanager
    def use(self, file_id: int, path: Callable[[int], str],
            create: bool) -> Iterator[tuple[int, int] | None]:
        """The object's descriptor and its checksums' (None if the object does not exist and
        `create` is false); `path(file_id)` names the object, asked only to open it."""
        with self._lock:
            entry = self._open.get(file_id)
            if entry is not None:
                self._open.move_to_end(file_id)
                entry[1] += 1
        if entry is None:
            fds = _open_pair(path(file_id), create)
            if fds is None:
                yield None
                return
            with self._lock:
                entry = self._open.get(file_id)
                if entry is None:
                    entry = self._open[file_id] = [fds, 1]
                    self._close_beyond_limit()
                else:  # opened meanwhile by another call: use that one
                    entry[1] += 1
                    _close_pair(fds)
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1] and self._open.get(file_id) is not entry:
                    _close_pair(entry[0])  # dropped while in use: the last user closes it

    def drop(self, file_id: int) -> None:
        with self._lock:
            entry = self._open.pop(file_id, None)
            if entry is not None and not entry[1]:
                _close_pair(entry[0])

    def _close_beyond_limit(self) -> None:
        for file_id in list(self._open):
            if len(self._open) <= self._limit:
                return
            if not self._open[file_id][1]:
                _close_pair(self._open.pop(file_id)[0])


def _open_pair(path: str, create: bool) -> tuple[int, int] | None:
    """Opens an object and its checksum file (None if the object does not exist and `create`
    is false)."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if not create:
            return None
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        return fd, os.open(path + ".crc", os.O_RDWR | os.O_CREAT, 0o600)
    except BaseException:
        os.close(fd)
        raise


def _close_pair(fds: tuple[int, int]) -> None:
    for fd in fds:
        os.close(fd)


class StripeStore:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self._objects = str(self.objects)
        self._handles = _Handles(OPEN_OBJECTS)
        self._locks = [threading.Lock() for _ in range(LOCKS)]
        self.uuid = self._identity()

    def _identity(self) -> str:
        """A uuid made once and kept in the data directory: the metaserver knows us by it, and
        by a new one as a member that lost its data. It is kept beside the objects too: objects
        gone while the directory stayed (a disk remounted empty, a careless rm) are data lost
        as much as a new directory is, and must not pass for the stored objects of before."""
        path, beside = self.root / "fileserver.uuid", self.objects / ".fileserver.uuid"
        known = path.read_text().strip() if path.exists() else None
        if known and not beside.exists() and any(self.objects.iterdir()):
            _write_atomically(beside, known)  # a data directory from before this marker
        elif not known or not beside.exists() or beside.read_text().strip() != known:
            known = str(uuid.uuid4())
            _write_atomically(beside, known)
            _write_atomically(path, known)
        return known

    def check(self, file_id: int, offset: int, length: int) -> None:
        """ValueError, saying why, unless a call may name this object and range (checked again
        by every call, so none can skip it)."""
        _check_id(file_id)
        self._check_range(offset, length)

    def _path(self, file_id: int) -> str:
        _check_id(file_id)
        return f"{self._objects}/{file_id % 256:02x}/{file_id}"

    @staticmethod
    def _check_range(offset: int, length: int) -> None:
        if length > MAX_CHUNK:
            raise ValueError(f"at most {MAX_CHUNK} bytes per request, got {length}")
        if offset + length > MAX_OBJECT_BYTES:
            raise ValueError(f"range [{offset}, {offset + length}) is beyond the largest object")

    @contextlib.contextmanager
    def _object(self, file_id: int, create: bool) -> Iterator[tuple[int, int] | None]:
        """The object's descriptor and its checksums' (None if it does not exist and `create` is
        false), under the object's lock."""
        _check_id(file_id)
        with self._locks[file_id % LOCKS], self._handles.use(file_id, self._path, create) as fds:
            yield fds

    def read(self, file_id: int, offset: int, length: int,
             into: bytearray | None = None) -> tuple[int, array, bytes | memoryview]:
        """The whole units holding [offset, offset + length), cut at the object's end: (their
        start, each unit's checksum, their bytes). Nothing was ever written to this server's
        part of the file: no bytes. With `into` (at least `length` + 2 units long), the bytes
        are read into it and returned as a view of it (no buffer allocated per read)."""
        self._check_range(offset, length)
        start = offset // UNIT * UNIT
        size = -(-(offset + length) // UNIT) * UNIT - start
        with self._object(file_id, create=False) as fds:
            if fds is None:
                return start, array("I"), b""
            fd, crc_fd = fds
            if into is None:
                data = os.pread(fd, size, start)
            else:
                view = memoryview(into)[:size]
                data = view[:os.preadv(fd, [view], start)]
            return start, self._checksums(file_id, crc_fd, start, len(data)), data

    def checksums(self, file_id: int, offset: int, length: int) -> tuple[int, array, int, bool]:
        """The checksums of the whole units holding [offset, offset + length), cut at the
        object's end, without their bytes: (their start, the checksums, the bytes they hold,
        whether every one of them is a checksum a write or truncate stored)."""
        self._check_range(offset, length)
        start = offset // UNIT * UNIT
        with self._object(file_id, create=False) as fds:
            if fds is None:
                return start, array("I"), 0, True
            fd, crc_fd = fds
            held = max(0, min(os.fstat(fd).st_size, offset + length) - start)
            crcs = self._checksums(file_id, crc_fd, start, held)
            return start, crcs, held, _NO_CHECKSUM not in crcs

    def _checksums(self, file_id: int, crc_fd: int, start: int, length: int) -> array:
        """The checksums of the `length` bytes of units from `start`: those of units no write
        reached match no bytes, unless a truncate made them zeros."""
        count, first = -(-length // UNIT), start // UNIT
        stored = os.pread(crc_fd, 4 * count, first * 4)
        stored += bytes(4 * count - len(stored))
        crcs = _decoded(stored)
        if stored.count(bytes(4)):  # holes, perhaps zeros a truncate added
            zeros = self._zero_units(file_id)
            for k in range(count):
                if stored[4 * k:4 * k + 4] == bytes(4) and \
                        any(a <= first + k < b for a, b in zeros):
                    crcs[k] = checksums.ZERO_UNIT
        return crcs

    def _zero_units(self, file_id: int) -> list[tuple[int, int]]:
        """The ranges of units a truncate filled with zeros, [start, end)."""
        try:
            packed = array("Q", pathlib.Path(self._path(file_id) + ".zeros").read_bytes())
        except FileNotFoundError:
            return []
        return list(zip(packed[::2], packed[1::2]))

    def write(self, file_id: int, offset: int, crcs, data) -> None:
        """Stores `data` at `offset`, `crcs` the writer's CRC of each piece (pfs/wire.py).
        Corrupt, storing nothing, if a piece does not match its CRC or a unit it is merged into
        is damaged."""
        self._check_range(offset, len(data))
        view = memoryview(data)
        with self._object(file_id, create=True) as (fd, crc_fd):
            length = os.fstat(fd).st_size
            first, new = offset // UNIT, array("I", crcs)  # the writer's, end to end
            for k in {0, len(new) - 1} if new else ():  # only the first and last may be partial
                unit = (first + k) * UNIT
                lo, hi = max(offset, unit), min(offset + len(data), unit + UNIT)
                if lo == unit and hi < unit + UNIT and hi >= length:  # the object's new end
                    new[k] = checksums.padded(new[k], hi - lo)
                elif lo > unit or hi < unit + UNIT:
                    new[k] = self._merged(file_id, fd, crc_fd, unit, length, lo,
                                          view[lo - offset:hi - offset], new[k])
            _pwrite_all(fd, view, offset)
            _pwrite_all(crc_fd, memoryview(_encoded(new)), first * 4)

    def _merged(self, file_id: int, fd: int, crc_fd: int, unit: int, length: int, lo: int,
                piece, crc: int) -> int:
        """The checksum of unit `unit` once `piece` (with CRC `crc`) is written at `lo` in it,
        the rest of it as stored (checked)."""
        if crc32c(piece) != crc:
            raise Corrupt(f"the bytes sent for {lo}-{lo + len(piece) - 1} do not match their "
                          "checksum: they were damaged on the way")
        old = os.pread(fd, UNIT, unit) if unit < length else b""
        never_written = os.pread(crc_fd, 4, unit // UNIT * 4) in (b"", bytes(4)) and \
            not any(old)  # a unit a later write skipped over (writes may land out of order)
        if old and not never_written and checksums.padded(crc32c(old), len(old)) != \
                self._checksums(file_id, crc_fd, unit, len(old))[0]:
            raise Corrupt(f"stored bytes {unit}-{unit + len(old) - 1} do not match their "
                          "checksum: this copy is damaged (pfs scrub repairs replicas)")
        merged = bytearray(old)
        merged.extend(bytes(max(0, lo + len(piece) - unit - len(merged))))
        merged[lo - unit:lo - unit + len(piece)] = piece
        return checksums.padded(crc32c(merged), len(merged))

    def truncate(self, file_id: int, length: int, keep: int) -> None:
        """Cuts the object to `length` bytes, or extends it with zeros (sparse, their checksums
        written): whatever it held past `keep` is gone either way."""
        self._check_range(length, 0)
        cut = min(keep, length)
        with self._object(file_id, create=True) as (fd, crc_fd):
            held = min(cut, os.fstat(fd).st_size)  # bytes that stay; zeros follow them
            os.ftruncate(fd, cut)
            os.ftruncate(crc_fd, -(-cut // UNIT) * 4)
            if cut % UNIT:  # the unit cut in two now ends in zeros
                unit = cut // UNIT * UNIT
                rest = os.pread(fd, cut - unit, unit)
                _pwrite_all(crc_fd, memoryview(_encoded(array("I", [
                    checksums.padded(crc32c(rest), len(rest))]))), unit // UNIT * 4)
            os.ftruncate(fd, length)
            kept = -(-held // UNIT)
            zeros = [(a, min(b, kept)) for a, b in self._zero_units(file_id) if a < kept]
            if kept < -(-length // UNIT):
                zeros.append((kept, -(-length // UNIT)))
            self._set_zero_units(file_id, zeros)

    def _set_zero_units(self, file_id: int, ranges: list[tuple[int, int]]) -> None:
        path = pathlib.Path(self._path(file_id) + ".zeros")
        if ranges:
            _write_atomically(path, array("Q", [n for r in ranges for n in r]).tobytes())
        else:
            path.unlink(missing_ok=True)

    def fsync(self, file_id: int) -> None:
        path = self._path(file_id)
        with self._handles.use(file_id, self._path, create=False) as fds:
            if fds is None:
                return
            for fd in fds:
                os.fsync(fd)
        with contextlib.suppress(FileNotFoundError):
            zeros = os.open(path + ".zeros", os.O_RDONLY)
            try:
                os.fsync(zeros)
            finally:
                os.close(zeros)
        directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the names, too
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
        for name in (path, path + ".crc", path + ".zeros"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def usage(self) -> tuple[int, int]:
        """(number of objects, bytes of file data stored)."""
        sizes = [p.stat().st_size for p in self.objects.glob("*/*") if not p.suffix]
        return len(sizes), sum(sizes)


def _check_id(file_id: int) -> None:
    if not 0 < file_id < (1 << 63):
        raise ValueError(f"file id must be between 1 and 2^63-1, got {file_id}")


_FLIP = bytes(255 - b for b in range(256))


def _encoded(crcs: array) -> bytes:
    """Checksums as the checksum file keeps them (see the module's doc)."""
    return crcs.tobytes().translate(_FLIP)


#: What a unit no write reached decodes to (its stored bytes are a hole: zeros). A real
#: checksum may be this too (one in 2^32): that unit is then read rather than trusted.
_NO_CHECKSUM = 0xFFFFFFFF


def _decoded(stored: bytes) -> array:
    return array("I", stored.translate(_FLIP))


def _write_atomically(path: pathlib.Path, content: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(content, str):
        tmp.write_text(content)
    else:
        tmp.write_bytes(content)
    os.replace(tmp, path)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
