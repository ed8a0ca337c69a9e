"""The copies of a stripe column: which one a read goes to, and a write to every one of them
(servers/metaserver/copies.py says what a stale copy is).

Invariant: a byte read is returned only after its checksum matched, from a copy that did not
miss it; a write is done once every live copy took it, or once those that did not are recorded
stale while at least one did.
"""
from __future__ import annotations

import errno
import logging
import threading
from array import array
from concurrent.futures import Future
from typing import Callable, NamedTuple, Protocol

from pfs._proto import fileserver_pb2 as pb
from pfs.metadata import Recipe
from pfs.protocol import errnos
from pfs.protocol import wire
from pfs.protocol.capability import Held
from pfs.protocol.datacalls import read_units
from pfs.protocol.ranges import INFINITY
from pfs.protocol.receipts import Kept
from pfs.protocol.tokenmodes import READ, WRITE

from .fileservers import Capabilities, Fileservers, all_of

log = logging.getLogger("pfs.client")

#: Unit checksums one Checksums call asks for at most (256 KiB of reply, for 256 MiB of data).
CHECKSUMS_PER_CALL = 1 << 16


class StripedFile(Protocol):
    file_id: int
    name: str
    recipe: Recipe
    held: Held  # its capabilities, sent with every call
    stale: set[int]  # fileservers whose copy of it missed writes: not to be read from
    missed: dict[int, list[tuple[int, int]]]  # what each of those lacks (local offsets)
    receipts: Kept  # of its writes, shown at close and fsync


class _Piece(NamedTuple):
    """Local bytes of one stripe column, as an extent names them."""
    server: int  # the column
    local_offset: int
    length: int


class _Damaged(OSError):
    """A copy lacks local bytes [start, end) of its object, or holds them damaged (EIO)."""

    def __init__(self, message: str, start: int, end: int) -> None:
        super().__init__(errno.EIO, message)
        self.start, self.end = start, end


def capabilities_of(f: StripedFile, column: int, start: int, end: int,
                    mode: int) -> Capabilities:
    """What a call on local bytes [start, end) of a column sends: the file's capabilities."""
    return lambda: f.held.for_call(column, start, end, mode)


class Replicas:
    """Reads from and writes to the copies of a file's stripe columns, through `fileservers`;
    a copy found lacking bytes is told to `on_missed(file, fileserver, start, end, why)`."""

    def __init__(self, fileservers: Fileservers,
                 on_missed: Callable[[StripedFile, int, int, int, str], None]) -> None:
        self._fileservers = fileservers
        self._on_missed = on_missed  # (file, fileserver, start, end, why): a stale copy

    def readable(self, f: StripedFile, column: int, start: int = 0,
                 end: int = INFINITY) -> list[int]:
        """The fileservers to read local bytes [start, end) of a column from, in order: its
        copies not known stale; if every copy is stale, those that did not miss these bytes
        (they hold them as written: two faults left the file with no whole copy). Empty when
        no copy holds all of them."""
        return [i for i in f.recipe.copies(column) if i not in f.stale] or [
            i for i in f.recipe.copies(column)
            if not any(s < end and start < e for s, e in f.missed.get(i, ()))]

    def holding(self, f: StripedFile, column: int) -> list[int]:
        """The copies of a column that hold bytes that count (whose disks an fsync must
        reach): those not stale, or if every copy is stale, those that did not miss it all."""
        return [i for i in f.recipe.copies(column) if i not in f.stale] or [
            i for i in f.recipe.copies(column)
            if not any(s == 0 and e >= INFINITY for s, e in f.missed.get(i, ()))]

    def read_extent(self, f: StripedFile, e) -> memoryview:
        """The bytes of extent `e` (see `_read_piece`); where every copy of its column is stale
        (two faults), piece by piece, each piece from a copy that did not miss it."""
        copies = f.recipe.copies(e.server)
        end = e.local_offset + e.length
        if any(i not in f.stale for i in copies):
            return self._read_piece(f, e)
        cuts = sorted({e.local_offset, end} | {
            at for i in copies for s, t in f.missed.get(i, ()) for at in (s, t)
            if e.local_offset < at < end})
        if len(cuts) == 2:
            return self._read_piece(f, e)
        out = memoryview(bytearray(e.length))
        for start, stop in zip(cuts, cuts[1:]):
            out[start - e.local_offset:stop - e.local_offset] = self._read_piece(
                f, _Piece(e.server, start, stop - start))
        return out

    def _read_piece(self, f: StripedFile, e) -> memoryview:
        """The bytes of extent (or piece) `e`, from the first copy of its column that has them
        whole and undamaged; a copy found damaged or short is reported stale (copies.py) and
        the next one tried, within the call. Bytes that fail their checksum are never
        returned."""
        request = wire.read_request(f.file_id, e.local_offset, e.length)
        end = e.local_offset + e.length
        capabilities = capabilities_of(f, e.server, e.local_offset, end, READ)
        failure, copies = None, self.readable(f, e.server, e.local_offset, end)
        if not copies:
            first = f.recipe.file_offset(e.server, e.local_offset)
            raise errnos.error(errno.EIO, f"no copy of {f.name!r} holds byte {first} (and "
                                          "maybe more) now: every copy missed it, being "
                                          "resynced or lost; see `pfs status`")
        for index in copies:
            try:
                reply = self._fileservers.call_retrying(
                    index, "read", request, "read", capabilities,
                    lambda: index != copies[-1])
                return self._checked(f, e, index, reply)
            except _Damaged as damaged:
                failure = failure or damaged
                if f.recipe.replicas > 1:
                    log.warning("%s: read from another copy, and reported for repair",
                                damaged.strerror)
                    self._report_missed(f, index, damaged.start, damaged.end, damaged.strerror)
            except OSError as error:
                failure = failure or error
        raise failure

    def _checked(self, f: StripedFile, e, index: int, reply: bytes) -> memoryview:
        """Extent `e`'s bytes out of a read reply from fileserver `index`, every unit checked
        against its checksum; _Damaged if one does not match, or bytes are missing."""
        units = read_units(reply)
        start, data, unit = units.start, units.data, units.bad
        if unit is not None:
            byte = f.recipe.file_offset(e.server, max(unit, e.local_offset))
            raise _Damaged(f"byte {byte} of {f.name!r} on {self._fileservers.named(index)} "
                           "fails its checksum (the copy there is damaged; nothing of it is "
                           "returned)", unit, unit + wire.CHECKSUM_UNIT)
        piece = data[e.local_offset - start:e.local_offset - start + e.length]
        if len(piece) < e.length:  # (messages are made only on failure: reads are many)
            have = e.local_offset + len(piece)
            byte = f.recipe.file_offset(e.server, have)
            raise _Damaged(f"{self._fileservers.named(index)} does not have byte {byte} "
                           f"of {f.name!r} (and maybe more): its copy of the file is lost or "
                           "damaged; no zeros are returned in their place", have,
                           e.local_offset + e.length)
        return piece

    def _report_missed(self, f: StripedFile, index: int, start: int, end: int,
                       why: str) -> None:
        """Has the metaserver record that the copy on fileserver `index` lacks local bytes
        [start, end); from now on it is not read from. The callback also updates the file's
        `stale` and `missed` to what the metaserver then records: where no copy was left
        holding some bytes, a copy holding them apart stands in (servers/metaserver/copies.py)."""
        self._on_missed(f, index, start, end, why)

    def to_copies(self, f: StripedFile, column: int, method: str, start: int, end: int,
                  request) -> Future:
        """Makes a call that changes local bytes [start, end) of a column on every copy of
        it. Its future completes once every copy took it, or once those that did not are
        recorded stale (copies.py) while at least one did; it fails when none did. Copies
        known stale already are not waited for (their fileserver may be down for long): the
        bytes are recorded as missed by them too, for the resync to copy."""
        capabilities = capabilities_of(f, column, start, end, WRITE)
        copies = f.recipe.copies(column)
        live = [index for index in copies if index not in f.stale] or copies
        if len(copies) == 1:
            return self._receipted(f, method, self._fileservers.submit(
                live[0], method, request, method, capabilities))
        stood_in = threading.Event()  # a copy took it: one that is down need not be waited for
        futures = [self._receipted(f, method, self._fileservers.submit(
            index, method, request, method, capabilities, stood_in.is_set)) for index in live]
        for future in futures:
            future.add_done_callback(lambda done: done.exception() or stood_in.set())
        done: Future = Future()

        def settled(_: Future) -> None:
            try:
                if all(future.exception() for future in futures):
                    raise futures[0].exception()
                for index, future in zip(live, futures):
                    if future.exception():
                        self._report_missed(f, index, start, end,
                                            f"{method} failed: {future.exception()}")
                for index in copies:
                    if index not in live:
                        self._report_missed(f, index, start, end, f"{method} while stale")
            except OSError as e:
                done.set_exception(e)
            else:
                done.set_result(None)
        all_of(futures).add_done_callback(settled)
        return done

    @staticmethod
    def _receipted(f: StripedFile, method: str, future: Future) -> Future:
        """The call's future, a write's receipt kept once it succeeds (before the write counts
        as stored: the callbacks run in order)."""
        if method == "write":
            future.add_done_callback(lambda done: done.exception() or f.receipts.keep(
                done.result()))
        return future

    def column_checksums(self, f: StripedFile, column: int, length: int) -> array | None:
        """The stored checksums of the first `length` bytes (whole units) of a column's
        object, from the first copy that answers; None if one has none."""
        crcs, at = array("I"), 0
        while at < length:
            step = min(length - at, CHECKSUMS_PER_CALL * wire.CHECKSUM_UNIT)
            request = pb.ChecksumsRequest(file_id=f.file_id, offset=at, length=step)
            capabilities = capabilities_of(f, column, at, at + step, READ)
            failure, copies = None, self.readable(f, column, at, at + step)
            if not copies:  # no copy holds them all (two faults): the read goes piece by piece
                return None
            for index in copies:
                try:
                    reply = self._fileservers.call_retrying(index, "Checksums", request,
                                                            "checksums", capabilities)
                    break
                except OSError as error:
                    failure = failure or error
            else:
                raise failure
            if not reply.complete or reply.length < step:
                return None
            crcs.frombytes(reply.crcs)
            at += step
        return crcs
