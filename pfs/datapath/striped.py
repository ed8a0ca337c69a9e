"""Striped I/O: moving a file range between a caller's buffer and the fileservers, in parallel.
Every fileserver involved gets its request at once; a written byte is held until every live
copy has it or is recorded stale; a byte read is returned only after its checksum matched.

The C core splits the range into one contiguous extent per fileserver (docs/design.md) and scatters
or gathers the bytes; every fileserver involved gets its request at once, each from a thread of
that fileserver's own (blocking calls on long-lived threads: a gRPC future would start a thread
per call), so a range over w servers costs about one round trip, not w. Reads and writes are raw
bytes (pfs/protocol/wire.py). Writes are write-behind: `write` returns once the bytes are copied into the
requests and the writes go on in the background; they are held, bytes and all, until stored, and
a failed one is sent again by whoever next needs it (pfs/datapath/writebehind.py says what keeps that
correct); `settle` waits for them. Tokens are the caller's business: this module only moves
bytes.

A fileserver's channel and threads are shared by every Client of the process, and a call to
one that cannot be reached is tried again (fileservers.py); which copy of a column a read goes
to, and a write to every copy, is replicas.py's. Each call carries its own capabilities.
"""
from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import Callable, Iterator

from pfs._native import crc32c, crc32c_combine, plan_stripes
from pfs._proto import fileserver_pb2 as pb
from pfs.metadata import Recipe
from pfs.protocol import wire
from pfs.protocol.ranges import INFINITY
from pfs.protocol.tokenmodes import READ
from pfs.protocol.transport import MAX_CHUNK, Credentials

from .fileservers import Fileservers, all_of
from .replicas import Replicas, StripedFile, capabilities_of
from .writebehind import InFlight, Request


def _windows(recipe: Recipe, offset: int, length: int) -> Iterator[tuple[int, int]]:
    """Splits a range so that no fileserver gets more than MAX_CHUNK bytes in one call,
    while every window still spans all the servers it can: (offset, length) each."""
    unit = recipe.block_size * recipe.stripe_blocks
    window = (recipe.stripe_width * unit * (MAX_CHUNK // unit)) if unit <= MAX_CHUNK \
        else MAX_CHUNK
    end = offset + length
    while offset < end:
        step = min(window, end - offset)
        yield offset, step
        offset += step


def _plan(recipe: Recipe, offset: int, length: int):
    return plan_stripes(offset, length, recipe.block_size, recipe.stripe_blocks,
                        recipe.stripe_width)


def _lengths(recipe: Recipe, size: int) -> list[int]:
    """Each stripe column's object length for a file of `size` bytes."""
    lengths = [0] * recipe.stripe_width
    if size:
        for extent in _plan(recipe, 0, size).extents:
            lengths[extent.server] = extent.length
    return lengths


class DataPlane:
    """Moves a file's bytes for one session: scatters a range over the stripe columns and
    gathers it back, through the columns' copies (replicas.py) on the fileservers
    (fileservers.py, which says how an unreachable one is tried again), and holds writes in
    flight until they are stored (writebehind.py)."""

    def __init__(self, addresses: dict[int, str], names: dict[int, str], credentials: Credentials,
                 retry_seconds: float,
                 lookup: Callable[[], tuple[dict[int, str], dict[int, float]]],
                 on_fenced: Callable[[str], None],
                 on_missed: Callable[[StripedFile, int, int, int, str], None],
                 write_behind: int) -> None:
        self._fileservers = Fileservers(addresses, names, credentials, retry_seconds, lookup,
                                        on_fenced)
        self._replicas = Replicas(self._fileservers, on_missed)
        self._in_flight = InFlight(write_behind)

    def close(self) -> None:
        self._fileservers.close()

    # --- reads and writes -------------------------------------------------------------------
    def read(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        """Fills dst[:length] with file bytes [offset, offset+length), once the writes in flight
        that overlap them are done. The bytes must exist (the caller reads below the file's
        size): a fileserver that does not have them lost them, which is EIO, never zeros."""
        self._in_flight.wait_for(f.file_id, offset, offset + length)
        done = 0
        for start, size in _windows(f.recipe, offset, length):
            self._read_window(f, start, size, dst[done:done + size])
            done += size

    def _read_window(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        """Each extent is copied into dst by the thread that fetched it, as soon as it is
        checked, so the copies overlap the other servers' transfers; the caller's thread
        fetches the last one itself rather than wait idle (one thread hop fewer)."""
        plan = _plan(f.recipe, offset, length)
        if len(plan.extents) == 1:  # one server's contiguous bytes: no gathering
            dst[:length] = self._replicas.read_extent(f, plan.extents[0])
            return
        *others, own = plan.extents

        def fetch(e) -> Future:  # on the thread of the copy it will read first
            first = self._replicas.readable(f, e.server, e.local_offset,
                                            e.local_offset + e.length)
            return self._fileservers.threads(first[0] if first else f.recipe.copies(e.server)[0]) \
                .submit(self._read_into, f, plan, e, dst)
        theirs = all_of([fetch(e) for e in others])
        try:
            self._read_into(f, plan, own, dst)
        finally:
            theirs.exception()  # waits: nothing may still write into dst once this returns
        theirs.result()

    def _read_into(self, f: StripedFile, plan, e, dst: memoryview) -> None:
        plan.gather_extent(e.server, self._replicas.read_extent(f, e), dst)

    def write(self, f: StripedFile, offset: int, src: memoryview) -> None:
        """Stores src as file bytes [offset, offset + len(src)) on the fileservers, in the
        background: returns once src is copied (`settle` waits for the writes). Raises Unstored
        when an earlier write that this one must follow cannot be stored."""
        done = 0
        for start, size in _windows(f.recipe, offset, len(src)):
            requests = self._requests(f, start, src[done:done + size])
            self._in_flight.write(f.file_id, f.name, start, start + size, requests)
            done += size

    def settle(self, f: StripedFile, start: int = 0, end: int = INFINITY) -> None:
        """Returns once the held writes to [start, end) of the file are stored, sending failed
        ones again; raises Unstored if some are still not."""
        self._in_flight.wait_for(f.file_id, start, end)

    def unstored(self, f: StripedFile) -> list[tuple[int, int]]:
        """The byte ranges of the file written but not stored now (after a failure)."""
        return self._in_flight.unstored(f.file_id)

    def discard(self, f: StripedFile) -> int:
        """Lets go of the file's held writes (it is being deleted); the bytes given up."""
        return self._in_flight.discard(f.file_id)

    def drop_all(self, reason: OSError) -> dict[int, int]:
        """Lets go of every held write (the session is lost: `reason` fails every later call
        that needs them); the bytes lost per file id."""
        return self._in_flight.drop_all(reason)

    def _requests(self, f: StripedFile, offset: int, src: memoryview) -> list[Request]:
        """The requests storing one window (see `_windows`), the bytes copied into them with
        their checksums: one per stripe column, for all its copies."""
        plan = _plan(f.recipe, offset, len(src))
        segments = plan.segments()
        if len(plan.extents) == len(segments):  # each extent is one slice of src
            pieces = [src[s.file_offset - offset:s.file_offset - offset + s.length]
                      for s in sorted(segments, key=lambda s: s.server)]
        else:
            pieces = plan.scatter(src)
        return [Request(wire.write_request(f.file_id, e.local_offset, piece),
                        functools.partial(self._replicas.to_copies, f, e.server, "write",
                                          e.local_offset, e.local_offset + e.length))
                for e, piece in zip(plan.extents, pieces)]

    def truncate(self, f: StripedFile, size: int, old_size: int) -> None:
        """Cuts or extends every object of the file, `old_size` bytes long, to its part of a
        file of `size` bytes, zeros past the old end (once its writes in flight are stored:
        none may land past the new end)."""
        self.settle(f)
        f.receipts.clear()  # what they show stored may be cut now
        lengths, keep = _lengths(f.recipe, size), _lengths(f.recipe, old_size)
        all_of([self._replicas.to_copies(f, column, "Truncate", min(n, k), INFINITY,
                                        pb.TruncateRequest(file_id=f.file_id, length=n, keep=k))
                for column, (n, k) in enumerate(zip(lengths, keep))]).result()

    def fsync(self, f: StripedFile) -> None:
        """Returns once the fileservers have every write to the file so far on disk."""
        self.settle(f)
        self._fileservers.call_all([(index, "Fsync", pb.FsyncRequest(file_id=f.file_id),
                                     capabilities_of(f, column, 0, 0, READ))
                                    for column in range(f.recipe.stripe_width)
                                    for index in self._replicas.holding(f, column)], "fsync")

    def checksum(self, f: StripedFile, size: int) -> int | None:
        """The CRC32C of the file's first `size` bytes, combined from the unit checksums the
        fileservers store, reading only the bytes of a last unit that is partial; None when
        that cannot be done (its stripe unit is not whole checksum units, or a unit has no
        stored checksum): read the file instead. The caller holds a READ token on them."""
        recipe, unit = f.recipe, wire.CHECKSUM_UNIT
        stripe_unit = recipe.block_size * recipe.stripe_blocks
        if stripe_unit % unit:
            return None
        whole = size // unit * unit  # a partial last unit is read: its stored CRC is padded
        columns = [self._replicas.column_checksums(f, c, n)
                   for c, n in enumerate(_lengths(recipe, whole))]
        if None in columns:
            return None
        per_unit = stripe_unit // unit
        crc = 0
        for k in range(whole // unit):
            u, within = divmod(k, per_unit)
            crc = crc32c_combine(crc, columns[u % recipe.stripe_width][
                u // recipe.stripe_width * per_unit + within], unit)
        if size > whole:
            tail = bytearray(size - whole)
            self.read(f, whole, len(tail), memoryview(tail))
            crc = crc32c_combine(crc, crc32c(tail), len(tail))
        return crc
