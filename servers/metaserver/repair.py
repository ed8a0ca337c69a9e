"""Repairing copies: the background resync of stale copies, and the scrub that finds damaged or
differing ones (copies.py says what a stale copy is).

Both move bytes the way a client does: a chunk at a time, under a READ token on the chunk's
bytes held by the metaserver's own token client (METASERVER_CLIENT), so no client writes them
meanwhile, and with capabilities the metaserver signs for itself. Every unit read is checked
against its checksum; whole units are written to the stale copy with those same checksums, so
the bytes are checked end to end from the copy that had them.

Resync: for each missed range whose copy's fileserver is online, it copies the range from a
copy that holds those bytes, chunk by chunk, writing only the bytes the stale copy lacks (the
rest of a unit may be bytes it holds for a source that lacks them: a copy standing in), and
removes each chunk from the record once it is stored; a copy that missed "everything" is also
cut to the good copy's length. Scrub: it reads every copy of every chunk of every file asked, records a
copy whose bytes fail their checksum, or differ from the first good copy's, as stale; the
resync then repairs it. An unreplicated file's damage is counted (and logged): nothing can
repair it, and clients reading it get EIO.

The data calls (blocking gRPC calls) and the record's commits run on threads of this module's
own, off the event loop.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from pfs._proto import fileserver_pb2 as fs_pb
from pfs.protocol import wire
from pfs.protocol.capability import CAPABILITY_SECONDS, READ, WRITE, Signer
from pfs.protocol.datacalls import FileServerCalls, ReadUnits, copy_request, read_units
from pfs.protocol.ranges import INFINITY
from pfs.protocol.transport import Credentials

from ..repeats import Repeats
from .cluster import METASERVER_CLIENT, Cluster
from .copies import Copies
from .namespace import NamespaceError, Node
from .store import MetaStore
from .tokens import TokenManager

log = logging.getLogger("pfs.metaserver.repair")

#: Bytes of one column a repair moves at a time (its token is held that long).
CHUNK = 4 << 20
#: Seconds between looks for stale copies to resync, when nothing wakes it sooner.
RESYNC_PERIOD = 2.0
#: Seconds a repair waits for its READ token before trying again later.
TOKEN_TIMEOUT = 30.0


@dataclass
class ScrubTotals:
    files: int = 0
    bytes: int = 0
    damaged: int = 0  # chunks of copies found damaged or differing, to be resynced
    unrepairable: int = 0  # chunks found damaged in files with no other copy


class Repair:
    def __init__(self, namespace: MetaStore, copies: Copies, tokens: TokenManager,
                 cluster: Cluster, signer: Signer, credentials: Credentials,
                 clock: Callable[[], float]) -> None:
        self._namespace, self._copies, self._tokens = namespace, copies, tokens
        self._cluster, self._signer, self._credentials = cluster, signer, credentials
        self._clock = clock  # the metaserver's wall clock, for capabilities' expiry
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="repair")
        self._channels: dict[str, FileServerCalls] = {}
        self._wakeup = asyncio.Event()
        self._token_lock = asyncio.Lock()  # one chunk at a time holds the metaserver's tokens
        self._repeats = Repeats(log)  # a fileserver away makes every pending range wait
        tokens.add_client(METASERVER_CLIENT)
        # Told of each file whose copy a resync cuts (Sizes.cut: receipts from before it).
        self.on_cut: Callable[[int, int], None] = lambda file_id, client_id: None

    def wake(self) -> None:
        """Something became stale: look now rather than at the next period."""
        self._wakeup.set()

    # --- resync -----------------------------------------------------------------------------
    async def resync(self) -> None:
        """Runs until cancelled, copying what stale copies missed as their fileservers come
        back."""
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), RESYNC_PERIOD)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            for file_id, server, start, end in await self._call(self._copies.pending):
                try:
                    await self._resync(file_id, server, start, end)
                except (OSError, ConnectionError, asyncio.TimeoutError) as e:
                    self._repeats.log(logging.INFO, ("waits", server),
                                      f"resyncs on fileserver {self._cluster.name(server)} wait",
                                      "resync of file %d on fileserver %s waits: %s", file_id,
                                      self._cluster.name(server), e)

    async def _resync(self, file_id: int, server: int, start: int, end: int) -> None:
        """Copies what the copy on `server` missed of [start, end), chunk by chunk. Which copy
        holds a chunk, and the chunk's record, are read and changed under the chunk's READ
        token: a client's write (and the miss it may report) comes before or after, never
        between the choice of a source and the chunk counted repaired."""
        try:
            node = await self._call(self._namespace.get, file_id)
        except NamespaceError:
            return  # deleted meanwhile: its record went with it
        column = node.servers.index(server) % node.width
        lacks = await self._call(self._lacks, file_id)
        others = [i for i in node.copies(column) if i != server and i in self._cluster.online()]
        # The object's length, from a copy that lacks nothing at its end.
        whole = [i for i in others if not any(hi >= INFINITY for _, hi in lacks.get(i, ()))]
        if server not in self._cluster.online() or not whole:
            return
        length = await self._cluster.object_length(whole[0], file_id)
        copied, at = 0, start
        while at < min(end, length):
            stop = min(end, length, at + CHUNK)
            async with self._reading(node, column, at, stop):
                lacks = await self._call(self._lacks, file_id)
                # From a copy that holds these bytes: one stale elsewhere will do (two faults).
                sources = [i for i in others
                           if not any(lo < stop and at < hi for lo, hi in lacks.get(i, ()))]
                needed = any(lo < stop and at < hi for lo, hi in lacks.get(server, ()))
                if needed and sources:
                    units = await self._call(self._read, node, column, sources[0], at, stop)
                    # Only the bytes it lacks: others of the chunk, or of a unit, it may hold
                    # for a source that lacks them (a copy standing in, copies.py).
                    for lo, hi in lacking(lacks[server], at, stop):
                        await self._call(self._write, node, column, server, units, lo, hi)
                    await self._call(self._copies.repaired, file_id, server, at, stop)
                copied += stop - at if sources or not needed else 0
            at = stop
        if end > length:  # what the good copy does not have, the stale one must not either
            async with self._reading(node, column, length, INFINITY):
                if await self._cluster.object_length(whole[0], file_id) == length:
                    self.on_cut(file_id, METASERVER_CLIENT)
                    await self._call(self._truncate, node, column, server, length)
                    await self._call(self._copies.repaired, file_id, server, length, end)
        log.info("resynced file %d's copy on fileserver %s (bytes %d-%d%s)", file_id,
                 self._cluster.name(server), start, min(end, length),
                 "" if copied == max(0, min(end, length) - start) else
                 ": some of them no copy holds now")

    # --- scrub ------------------------------------------------------------------------------
    async def scrub(self, files: list[Node]) -> AsyncIterator[tuple[ScrubTotals, Node]]:
        """Checks every copy of `files`, chunk by chunk; yields the totals so far and the file
        being checked after each chunk (so progress moves within a big file), and once more
        when it is done (totals.files counts it then)."""
        totals = ScrubTotals()
        for node in files:
            stale = await self._call(self._copies.stale, node.node_id)
            for column in range(node.width):
                copies = [i for i in node.copies(column) if i not in stale]
                if copies:
                    async for _ in self._scrub_column(node, column, copies, totals):
                        yield totals, node
            totals.files += 1
            yield totals, node
        self.wake()

    async def scrub_by_path(self, files: list[Node],
                            path_of: Callable[[int], Awaitable[str]]
                            ) -> AsyncIterator[tuple[ScrubTotals, str, bool]]:
        """As `scrub`, with the path of the file being checked, and whether it is the first
        time that file is found unrepairable (a file is named once)."""
        unrepairable, named = 0, set()
        async for totals, node in self.scrub(files):
            path = await path_of(node.node_id)
            new = totals.unrepairable > unrepairable and path not in named
            yield totals, path, new
            unrepairable = totals.unrepairable
            if new:
                named.add(path)

    async def _scrub_column(self, node: Node, column: int, copies: list[int],
                            totals: ScrubTotals) -> AsyncIterator[None]:
        """Checks one column's copies, yielding after each chunk."""
        length = max([await self._cluster.object_length(i, node.node_id) for i in copies])
        for at in range(0, length, CHUNK):
            stop = min(length, at + CHUNK)
            async with self._reading(node, column, at, stop):
                first = None
                for index in copies:
                    units = await self._call(self._read, node, column, index, at, stop,
                                             checked=False)
                    totals.bytes += len(units.data)
                    if units.bad is None and first is None:
                        first = bytes(units.data)
                    if units.bad is not None or bytes(units.data) != first:
                        await self._damaged(node, index, at, stop, units.bad is not None,
                                            totals)
            yield

    async def _damaged(self, node: Node, index: int, start: int, end: int, checksum: bool,
                       totals: ScrubTotals) -> None:
        why = "fail their checksums" if checksum else "differ from another copy's"
        if node.replicas > 1:
            totals.damaged += 1
            log.warning("scrub: bytes %d-%d of file %d's copy on fileserver %s %s: resyncing",
                        start, end - 1, node.node_id, self._cluster.name(index), why)
            await self._call(self._copies.missed, node.node_id, index, start, end)
        else:
            totals.unrepairable += 1
            log.error("scrub: bytes %d-%d of file %d on fileserver %s %s, and there is no other "
                      "copy: reading them fails with EIO", start, end - 1, node.node_id,
                      self._cluster.name(index), why)

    # --- tokens, threads, calls -------------------------------------------------------------
    def whole_file(self, file_id: int):
        """A WRITE token of the metaserver's own on the whole file (`async with`): no client
        holds one on it meanwhile (replication.py changes its recipe under it)."""
        return _Token(self._tokens, self._token_lock, file_id, 0, INFINITY, WRITE)

    def _lacks(self, file_id: int) -> dict[int, list[tuple[int, int]]]:
        """What each copy of the file lacks now, by fileserver (local ranges)."""
        lacks: dict[int, list[tuple[int, int]]] = {}
        for i, lo, hi in self._copies.missed_ranges(file_id):
            lacks.setdefault(i, []).append((lo, hi))
        return lacks

    def _reading(self, node: Node, column: int, start: int, end: int):
        """A READ token on the file bytes that local bytes [start, end) of `column` hold."""
        recipe = node.recipe
        last = INFINITY if end >= INFINITY else recipe.file_offset(column, end - 1) + 1
        return _Token(self._tokens, self._token_lock, node.node_id,
                      recipe.file_offset(column, start), last)

    async def _call(self, fn, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, lambda: fn(*args, **kwargs))

    def _calls(self, index: int) -> FileServerCalls:
        address = self._cluster.addresses()[index]
        if address not in self._channels:
            self._channels[address] = FileServerCalls(self._credentials.channel(address))
        return self._channels[address]

    def _capabilities(self, node: Node, column: int, mode: int, start: int,
                      end: int) -> list[bytes]:
        return [self._signer.sign(node.node_id, METASERVER_CLIENT, mode, start, end,
                                  self._clock() + CAPABILITY_SECONDS, node.copies(column))]

    def _read(self, node: Node, column: int, index: int, start: int, end: int,
              checked: bool = True) -> ReadUnits:
        """The whole units holding local bytes [start, end) of a copy, with their checksums
        (checked, unless told otherwise: OSError naming the copy if one fails)."""
        units = read_units(self._calls(index).call(
            "read", wire.read_request(node.node_id, start, end - start),
            self._capabilities(node, column, READ, start, end),
            f"read from fileserver {self._cluster.name(index)}"))
        if checked and units.bad is not None:
            raise OSError(errno.EIO, f"file {node.node_id}'s copy on fileserver "
                                     f"{self._cluster.name(index)} fails its checksums at "
                                     f"{start}-{end - 1}")
        return units

    def _write(self, node: Node, column: int, index: int, units: ReadUnits, start: int,
               end: int) -> None:
        """Stores local bytes [start, end) of units read from a good copy (at most a CHUNK,
        within one call's limit) with their checksums."""
        self._calls(index).call(
            "write", copy_request(node.node_id, units, start, end),
            self._capabilities(node, column, WRITE, start, end),
            f"write to fileserver {self._cluster.name(index)}")

    def _truncate(self, node: Node, column: int, index: int, length: int) -> None:
        self._calls(index).call(
            "Truncate", fs_pb.TruncateRequest(file_id=node.node_id, length=length, keep=length),
            self._capabilities(node, column, WRITE, length, INFINITY),
            f"truncate on fileserver {self._cluster.name(index)}")


def lacking(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that `ranges` (what a copy lacks) cover."""
    return [(max(lo, start), min(hi, end)) for lo, hi in ranges if lo < end and start < hi]


class _Token:
    """`async with`: a token of the metaserver's own (READ unless told) on [start, end) of a
    file, given back (with all it holds on the file) at the end."""

    def __init__(self, tokens: TokenManager, lock: asyncio.Lock, file_id: int, start: int,
                 end: int, mode: int = READ) -> None:
        self._tokens, self._lock = tokens, lock
        self._file_id, self._start, self._end, self._mode = file_id, start, end, mode

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        granted = asyncio.get_running_loop().create_future()
        request = self._tokens.request(
            METASERVER_CLIENT, self._file_id, self._start, self._end, self._mode,
            lambda grant, error: granted.set_exception(error) if error else
            granted.set_result(grant))
        try:
            await asyncio.wait_for(asyncio.shield(granted), TOKEN_TIMEOUT)
        except BaseException:
            self._tokens.cancel(request)
            self._tokens.release_file(METASERVER_CLIENT, self._file_id)
            self._lock.release()
            raise

    async def __aexit__(self, *exc) -> None:
        self._tokens.release_file(METASERVER_CLIENT, self._file_id)
        self._lock.release()
