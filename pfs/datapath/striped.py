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

A fileserver's channel and threads are shared by every Client of the process (pfs/runtime/holdings.py);
each call carries its own capabilities.
"""
from __future__ import annotations

import errno
import functools
import logging
import threading
import time
from array import array
from concurrent.futures import Future
from typing import Callable, Iterator, NamedTuple, Protocol

from pfs._native import crc32c, crc32c_combine, plan_stripes
from pfs._proto import fileserver_pb2 as pb
from pfs.metadata import Recipe
from pfs.protocol import errnos
from pfs.protocol import wire
from pfs.protocol.capability import Held
from pfs.protocol.datacalls import FileServerCalls, read_units
from pfs.protocol.ranges import INFINITY
from pfs.protocol.tokenmodes import READ, WRITE
from pfs.protocol.transport import MAX_CHUNK, Credentials
from pfs.runtime import holdings
from pfs.runtime.threads import Workers

from .writebehind import InFlight, Request

log = logging.getLogger("pfs.client")

#: Calls the Clients of one process have in flight to one fileserver at most (Lustre's
#: max_rpcs_in_flight); the threads making them start as calls need them.
RPCS_IN_FLIGHT = 8
#: Unit checksums one Checksums call asks for at most (256 KiB of reply, for 256 MiB of data).
CHECKSUMS_PER_CALL = 1 << 16


class StripedFile(Protocol):
    file_id: int
    name: str
    recipe: Recipe
    held: Held  # its capabilities, sent with every call
    stale: set[int]  # fileservers whose copy of it missed writes: not to be read from
    missed: dict[int, list[tuple[int, int]]]  # what each of those lacks (local offsets)


#: What a call sends as proof of its token, chosen anew at every try (renewed ones count).
Capabilities = Callable[[], list[bytes]]


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


class _Server:
    """One fileserver as a process sees it: a channel, its calls, and the threads making them."""

    def __init__(self, index: int, address: str, credentials: Credentials) -> None:
        self.address = address
        self.channel = credentials.channel(address)
        self.calls = FileServerCalls(self.channel)
        self.threads = Workers(RPCS_IN_FLIGHT, f"pfs-fs{index}")

    def close(self) -> None:
        self.threads.shutdown()
        self.channel.close()


def _all_of(futures: list[Future]) -> Future:
    """A future of all the futures: their results in order, or the first failure once all are
    done (so that nothing is left running unattended)."""
    combined: Future = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            combined.set_exception(failure)
        else:
            combined.set_result([f.result() for f in futures])
    if not futures:
        combined.set_result([])
    for future in futures:
        future.add_done_callback(one_done)
    return combined


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
    """Talks to the fileservers for one session (every call carries the capabilities of the
    file's tokens, pfs/protocol/capability.py); knows their addresses by index.

    A fileserver that is unreachable (restarting, say, perhaps on a new address) is retried for
    up to `retry_seconds`, asking the metaserver for the addresses of those online again
    (`lookup()`) in between, but never beyond `retry_seconds` after the metaserver lost it: a
    fileserver it has known offline for that long is given up at once, with EHOSTDOWN naming
    it (a restart within the window stays invisible; a copy another copy stood in for is
    given up as soon as the metaserver says its fileserver is offline);
    every call is idempotent (reads, and writes of the same bytes at the same offsets). A
    fileserver that refuses the session (the metaserver ended it) is final: `on_fenced(reason)`
    is told, and the call fails with ENOTCONN."""

    def __init__(self, addresses: dict[int, str], names: dict[int, str], credentials: Credentials,
                 retry_seconds: float,
                 lookup: Callable[[], tuple[dict[int, str], dict[int, float]]],
                 on_fenced: Callable[[str], None],
                 on_missed: Callable[[StripedFile, int, int, int, str], None],
                 write_behind: int) -> None:
        self._addresses = dict(addresses)
        self._names = names  # as the cluster's members are named everywhere (never renamed)
        self._credentials = credentials
        self._retry_seconds = retry_seconds
        self._lookup = lookup
        self._on_fenced = on_fenced
        self._on_missed = on_missed  # (file, fileserver, start, end, why): a stale copy
        self._servers: dict[int, _Server] = {}  # those this session holds (pfs/runtime/holdings.py)
        self._holdings = holdings.Holdings()
        self._holdings.watch(self)
        self._lock = threading.Lock()
        self._in_flight = InFlight(write_behind)
        # index -> since when (time.monotonic()) it is offline, as the metaserver last said
        self._offline: dict[int, float] = {}

    def close(self) -> None:
        with self._lock:
            self._servers.clear()
            self._holdings.release_all()

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
            dst[:length] = self._read_extent(f, plan.extents[0])
            return
        *others, own = plan.extents

        def fetch(e) -> Future:  # on the thread of the copy it will read first
            first = self._readable(f, e.server, e.local_offset, e.local_offset + e.length)
            return self._server(first[0] if first else f.recipe.copies(e.server)[0]).threads \
                .submit(self._read_into, f, plan, e, dst)
        theirs = _all_of([fetch(e) for e in others])
        try:
            self._read_into(f, plan, own, dst)
        finally:
            theirs.exception()  # waits: nothing may still write into dst once this returns
        theirs.result()

    def _read_into(self, f: StripedFile, plan, e, dst: memoryview) -> None:
        plan.gather_extent(e.server, self._read_extent(f, e), dst)

    def _readable(self, f: StripedFile, column: int, start: int = 0,
                  end: int = INFINITY) -> list[int]:
        """The fileservers to read local bytes [start, end) of a column from, in order: its
        copies not known stale; if every copy is stale, those that did not miss these bytes
        (they hold them as written: two faults left the file with no whole copy). Empty when
        no copy holds all of them."""
        return [i for i in f.recipe.copies(column) if i not in f.stale] or [
            i for i in f.recipe.copies(column)
            if not any(s < end and start < e for s, e in f.missed.get(i, ()))]

    def _holding(self, f: StripedFile, column: int) -> list[int]:
        """The copies of a column that hold bytes that count (whose disks an fsync must
        reach): those not stale, or if every copy is stale, those that did not miss it all."""
        return [i for i in f.recipe.copies(column) if i not in f.stale] or [
            i for i in f.recipe.copies(column)
            if not any(s == 0 and e >= INFINITY for s, e in f.missed.get(i, ()))]

    def _read_extent(self, f: StripedFile, e) -> memoryview:
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
        capabilities = self._capabilities(f, e.server, e.local_offset, end, READ)
        failure, copies = None, self._readable(f, e.server, e.local_offset, end)
        if not copies:
            first = f.recipe.file_offset(e.server, e.local_offset)
            raise errnos.error(errno.EIO, f"no copy of {f.name!r} holds byte {first} (and "
                                          "maybe more) now: every copy missed it, being "
                                          "resynced or lost; see `pfs status`")
        for index in copies:
            try:
                reply = self._call_retrying(index, "read", request, "read", capabilities,
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
        where = self._named(index)
        if unit is not None:
            byte = f.recipe.file_offset(e.server, max(unit, e.local_offset))
            raise _Damaged(f"byte {byte} of {f.name!r} on {where} fails its checksum (the "
                           "copy there is damaged; nothing of it is returned)",
                           unit, unit + wire.CHECKSUM_UNIT)
        piece = data[e.local_offset - start:e.local_offset - start + e.length]
        if len(piece) < e.length:
            have = e.local_offset + len(piece)
            raise _Damaged(f"{where} does not have byte {f.recipe.file_offset(e.server, have)} "
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
                        functools.partial(self._to_copies, f, e.server, "write",
                                          e.local_offset, e.local_offset + e.length))
                for e, piece in zip(plan.extents, pieces)]

    def _to_copies(self, f: StripedFile, column: int, method: str, start: int, end: int,
                   request) -> Future:
        """Makes a call that changes local bytes [start, end) of a column on every copy of
        it. Its future completes once every copy took it, or once those that did not are
        recorded stale (copies.py) while at least one did; it fails when none did. Copies
        known stale already are not waited for (their fileserver may be down for long): the
        bytes are recorded as missed by them too, for the resync to copy."""
        capabilities = self._capabilities(f, column, start, end, WRITE)
        copies = f.recipe.copies(column)
        live = [index for index in copies if index not in f.stale] or copies
        if len(copies) == 1:
            return self._submit(live[0], method, request, method, capabilities)
        stood_in = threading.Event()  # a copy took it: one that is down need not be waited for
        futures = [self._submit(index, method, request, method, capabilities, stood_in.is_set)
                   for index in live]
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
        _all_of(futures).add_done_callback(settled)
        return done

    @staticmethod
    def _capabilities(f: StripedFile, column: int, start: int, end: int,
                      mode: int) -> Capabilities:
        return lambda: f.held.for_call(column, start, end, mode)

    def truncate(self, f: StripedFile, size: int, old_size: int) -> None:
        """Cuts or extends every object of the file, `old_size` bytes long, to its part of a
        file of `size` bytes, zeros past the old end (once its writes in flight are stored:
        none may land past the new end)."""
        self.settle(f)
        lengths, keep = _lengths(f.recipe, size), _lengths(f.recipe, old_size)
        _all_of([self._to_copies(f, column, "Truncate", min(n, k), INFINITY,
                                 pb.TruncateRequest(file_id=f.file_id, length=n, keep=k))
                 for column, (n, k) in enumerate(zip(lengths, keep))]).result()

    def fsync(self, f: StripedFile) -> None:
        """Returns once the fileservers have every write to the file so far on disk."""
        self.settle(f)
        self._call_all([(index, "Fsync", pb.FsyncRequest(file_id=f.file_id),
                         self._capabilities(f, column, 0, 0, READ))
                        for column in range(f.recipe.stripe_width)
                        for index in self._holding(f, column)], "fsync")

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
        columns = [self._column_checksums(f, c, n)
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

    def _column_checksums(self, f: StripedFile, column: int, length: int) -> array | None:
        """The stored checksums of the first `length` bytes (whole units) of a column's
        object, from the first copy that answers; None if one has none."""
        crcs, at = array("I"), 0
        while at < length:
            step = min(length - at, CHECKSUMS_PER_CALL * wire.CHECKSUM_UNIT)
            request = pb.ChecksumsRequest(file_id=f.file_id, offset=at, length=step)
            capabilities = self._capabilities(f, column, at, at + step, READ)
            failure, copies = None, self._readable(f, column, at, at + step)
            if not copies:  # no copy holds them all (two faults): the read goes piece by piece
                return None
            for index in copies:
                try:
                    reply = self._call_retrying(index, "Checksums", request, "checksums",
                                                capabilities)
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

    # --- calls ------------------------------------------------------------------------------
    def _server(self, index: int) -> _Server:
        with self._lock:
            if index not in self._servers:
                if index not in self._addresses:
                    raise errnos.error(errno.EIO, f"{self._named(index)} is unknown to this "
                                                  "client; re-initialize to learn the cluster")
                address = self._addresses[index]
                self._servers[index] = self._holdings.hold(
                    _server_key(address, self._credentials),
                    lambda: _Server(index, address, self._credentials))
            return self._servers[index]

    def _submit(self, index: int, method: str, request, what: str,
                capabilities: Capabilities, spared: Callable[[], bool] = lambda: False) -> Future:
        """Starts one call on a thread of its fileserver (see _call_retrying)."""
        return self._server(index).threads.submit(self._call_retrying, index, method, request,
                                                  what, capabilities, spared)

    def _call_all(self, calls: list[tuple[int, str, object, Capabilities]], what: str) -> list:
        """Makes the calls (fileserver index, method, request, capabilities) at once and waits
        for all of them; the first failure is raised once all are done. A lone call is made
        right here: with nothing to overlap, a hand-off to another thread only adds latency."""
        if len(calls) == 1:
            index, method, request, capabilities = calls[0]
            return [self._call_retrying(index, method, request, what, capabilities)]
        return _all_of([self._submit(index, method, request, what, capabilities)
                        for index, method, request, capabilities in calls]).result()

    def _call_retrying(self, index: int, method: str, request, what: str,
                       capabilities: Capabilities, spared: Callable[[], bool] = lambda: False):
        """One call; a fileserver that cannot be reached is tried again until retry_seconds
        have passed (since the call began, or since the metaserver lost it if that is
        sooner), at its new address if it moved, or, once another copy can do without it
        (`spared()`), until the metaserver says it is offline. One that answers but is not
        back in contact with the metaserver yet (EAGAIN) is alive: it is tried again for the
        whole window, whatever the metaserver says."""
        give_up, pause = time.monotonic() + self._retry_seconds, 0.05
        while True:
            server = self._server(index)
            try:
                return self._call(server, index, method, request, what, capabilities())
            except OSError as e:
                if e.errno not in (errno.EHOSTDOWN, errno.EAGAIN):
                    raise
                moved = self._relearn_addresses()
                since = self._offline.get(index)
                if since is not None and (spared() or e.errno == errno.EHOSTDOWN and (
                        time.monotonic() >= min(give_up, since + self._retry_seconds))):
                    raise self._gone(index, what, since) from None
                if time.monotonic() >= give_up:
                    raise errnos.error(errno.EHOSTDOWN, e.strerror) from None
                if not moved:
                    time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
                    pause = min(2 * pause, 1.0)

    def _call(self, server: _Server, index: int, method: str, request, what: str,
              capabilities: list[bytes]):
        try:
            return server.calls.call(method, request, capabilities,
                                     f"{what} on {self._named(index)}")
        except OSError as failure:
            if failure.errno == errno.ENOTCONN:  # the session was fenced: final
                self._on_fenced(failure.strerror)
            raise

    def _gone(self, index: int, what: str, since: float) -> OSError:
        """EHOSTDOWN for a call on a fileserver that the metaserver says is offline."""
        name = self._names.get(index) or index
        return errnos.error(errno.EHOSTDOWN, f"{what} on {self._named(index)}: fileserver "
                                             f"{name} is offline (for "
                                             f"{time.monotonic() - since:.0f} s, as the "
                                             "metaserver knows); start it again, or see "
                                             "`pfs status`")

    def _named(self, index: int) -> str:
        """A fileserver as every message names it: its member name, and where it is."""
        return f"fileserver {self._names.get(index) or index} ({self._addresses.get(index)})"

    def _relearn_addresses(self) -> bool:
        """Asks which fileservers are online, at which addresses; True if one moved."""
        try:
            fresh, offline = self._lookup()
        except OSError:
            return False
        now = time.monotonic()
        with self._lock:
            self._offline = {i: now - seconds for i, seconds in offline.items()}
            changed = {i for i, a in fresh.items() if self._addresses.get(i) != a}
            for index in changed:
                if index in self._servers:
                    self._holdings.release(_server_key(self._servers.pop(index).address,
                                                       self._credentials))
            self._addresses.update(fresh)
        return bool(changed)


def _server_key(address: str, credentials: Credentials) -> tuple:
    """The process's shared channel and threads for the fileserver at `address`."""
    return ("fileserver", address, credentials.identity())
