"""Sizes of files, as clients tell them and as the fileservers store them (see openfiles.py).

Invariant: a size is believed only from a client that could have written it: one holding a
WRITE token on the bytes between the known size and the reported one; a durable size (at close
or fsync) must also be stored: a copy holding its last byte, and not stale, must have it.
A client that holds a WRITE token beyond the known size may have grown the file in its cache,
so Stat asks it (a glimpse) before answering.

That the last byte is stored is shown by a receipt (pfs/protocol/receipts.py) the client
presents, or else asked of the fileserver. A receipt shows it only if it is signed with the
cluster key and names this file, this client, a copy of the last byte's column that is not
stale, a range holding that byte, that fileserver's incarnation now (it did not lose its data
or restart since), and an unexpired capability issued after every cut of the file's objects
known here (a truncate, a resync's) and after this metaserver started (it knows no cut from
before). The exception: a cut by the presenting client itself, which could as well have cut
the bytes after this close, and drops its receipts when it truncates.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Awaitable, Callable, Iterable

from pfs._native import Extent, plan_stripes
from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.capability import CAPABILITY_SECONDS
from pfs.protocol.receipts import Notary

from .cluster import Cluster
from .copies import Copies
from .namespace import Node
from .openfiles import OpenFile, OpenFiles
from .sessions import Session as ClientSession
from .sessions import Sessions
from .store import MetaStore
from .tokens import WRITE, TokenManager

log = logging.getLogger("pfs.metaserver")

#: A cut counts as this much later than the clock said (a capability's time is the same clock,
#: read elsewhere: a small step back of it must not make one issued before look issued after).
CUT_MARGIN = 1.0


class Sizes:
    def __init__(self, namespace: MetaStore, open_files: OpenFiles, tokens: TokenManager,
                 copies: Copies, cluster: Cluster, sessions: Sessions,
                 db: Callable[..., Awaitable], notary: Notary,
                 clock: Callable[[], float] = time.time) -> None:
        self.namespace = namespace
        self.open_files = open_files
        self.tokens = tokens
        self.copies = copies
        self.cluster = cluster
        self.sessions = sessions
        self._db = db  # runs a namespace change (MetaServer.db)
        self._notary, self._clock = notary, clock  # (the capabilities' clock)
        self._since = clock() + CUT_MARGIN  # cuts before this are unknown here
        # file -> (when it was last cut, by which client, when last by another one)
        self._cuts: dict[int, tuple[float, int, float]] = {}
        self._prune_at = 1024

    def cut(self, file_id: int, client_id: int) -> None:
        """Bytes of the file's objects may be cut now (by the client's truncate, or a resync's:
        client 0): no receipt of an earlier write is believed, but the client's own. A cut
        older than a capability's life is forgotten: receipts of writes before it have
        expired."""
        now = self._clock()
        if len(self._cuts) >= self._prune_at:
            self._cuts = {f: c for f, c in self._cuts.items()
                          if c[0] > now - CAPABILITY_SECONDS}
            self._prune_at = max(1024, 2 * len(self._cuts))
        last, cutter, before = self._cuts.get(file_id, (self._since, None, self._since))
        self._cuts[file_id] = (now + CUT_MARGIN, client_id,
                               before if cutter == client_id else last)

    def _cut_before(self, file_id: int, client_id: int) -> float:
        """When another client than this one last cut the file's objects, as far as we know."""
        last, cutter, before = self._cuts.get(file_id, (self._since, None, self._since))
        return before if cutter == client_id else last

    def vouched(self, client_id: int, node: Node, size: int, receipts: Iterable[bytes]) -> bool:
        """Whether one of the receipts shows the file's byte `size - 1` stored (the module's
        doc says when one does); a bad one is not believed, and says nothing."""
        (extent,) = plan_stripes(size - 1, 1, node.block_size, node.stripe_blocks,
                                 node.width).extents
        copies, now = node.copies(extent.server), self._clock()
        cut = self._cut_before(node.node_id, client_id)
        for blob in receipts:
            try:
                r = self._notary.verify(blob)
            except ValueError:
                log.warning("client %d presented a receipt for file %d that no fileserver "
                            "signed; the fileserver is asked", client_id, node.node_id)
                continue
            issued = r.expires - CAPABILITY_SECONDS
            if (r.file_id == node.node_id and r.client_id == client_id and r.server in copies
                    and r.start <= extent.local_offset < r.end and now < r.expires
                    and issued > max(cut, self._since)
                    and r.server not in self.copies.stale(node.node_id)
                    and self.cluster.incarnation(r.server) == r.incarnation):
                return True
        return False

    def believable(self, client_id: int, f: OpenFile, size: int) -> bool:
        """Whether the client could have made the file `size` bytes long: only by writing, under
        a WRITE token, every byte from the known end to the new one."""
        return size <= f.size or (size <= MAX_FILE_SIZE and self.tokens.holds(
            client_id, f.node.node_id, f.size, size, WRITE))

    def reported(self, client_id: int, file_id: int, size: int, stored: bool) -> None:
        """A size told in passing (revocation acknowledgement, glimpse): kept if believable;
        `stored` when the client stored every byte below it first (see openfiles.py)."""
        f = self.open_files.get(file_id)
        if f is None:
            return
        if self.believable(client_id, f, size):
            self.open_files.told(f, client_id, size, stored)
        else:
            log.warning("client %d reported size %d for file %d without a WRITE token up to "
                        "it; ignored", client_id, size, file_id)

    async def stored(self, node: Node, size: int) -> bool:
        """Whether a copy that holds the file's byte `size - 1`, and did not miss it, has it
        (ConnectionError when none can be asked)."""
        extent, holders = self._holders(node, size)
        unreachable = None
        for index in holders:
            try:
                return await self.cluster.object_length(index, node.node_id) > \
                    extent.local_offset
            except ConnectionError as e:
                unreachable = unreachable or e
        raise unreachable or ConnectionError(f"no good copy of file {node.node_id} holds "
                                             f"byte {size - 1}")

    def askable(self, node: Node, size: int) -> bool:
        """Whether `stored(node, size)` has a copy to ask online."""
        return bool(self.cluster.online().intersection(self._holders(node, size)[1]))

    def _holders(self, node: Node, size: int) -> tuple[Extent, list[int]]:
        """The extent holding the file's byte `size - 1`, and the copies that may say whether
        they have it (not those that missed it, of a replicated file)."""
        (extent,) = plan_stripes(size - 1, 1, node.block_size, node.stripe_blocks,
                                 node.width).extents
        stale = self.copies.stale(node.node_id) if node.replicas > 1 else set()
        return extent, [i for i in node.copies(extent.server) if i not in stale]

    async def record(self, session: ClientSession, f: OpenFile, written_end: int,
                     touch: bool, receipts: Iterable[bytes] = ()) -> None:
        """At close or fsync: the durable size becomes the client's written end (which must be
        believable, and stored: shown by one of the `receipts`, or asked), or the newest size
        known to be stored all the way if that is larger (best effort: a writer that still
        caches more will report it itself)."""
        if not self.believable(session.client_id, f, written_end):
            raise ValueError(f"size {written_end} is not one client {session.client_id} could "
                             f"have written (file {f.node.node_id} has {f.size} bytes, and the "
                             "client holds no WRITE token up to that size)")
        durable = f.node.size
        if written_end > durable:
            if not (self.vouched(session.client_id, f.node, written_end, receipts)
                    or await self.stored(f.node, written_end)):
                raise ValueError(f"size {written_end} of file {f.node.node_id} was never "
                                 "written: the fileserver holding its last byte does not have it")
            durable = written_end
        if f.stored > durable:
            with contextlib.suppress(ConnectionError):
                if await self.stored(f.node, f.stored):
                    durable = f.stored
        touch = touch and not f.mtime_set
        if durable > f.node.size or touch:
            await self._db(self.namespace.record_size, f.node.node_id, durable, touch)
            f.node = self.namespace.get(f.node.node_id)
        self.open_files.told(f, session.client_id, durable, stored=True)

    async def glimpse_all(self, file_ids: Iterable[int], caller: int | None) -> None:
        """`glimpse` for each file (a directory listing's, say)."""
        for file_id in file_ids:
            await self.glimpse(file_id, caller)

    async def glimpse(self, file_id: int, caller: int | None) -> None:
        """Asks the clients other than `caller` that hold a WRITE token beyond the file's known
        size how long they have made it (in their caches), before a Stat answers. Not those
        that keep their tokens after closing the file: their close recorded their size."""
        f = self.open_files.get(file_id)
        if f is not None:
            for holder in self.tokens.writers_beyond(file_id, f.size):
                if holder != caller and holder in f.openers:
                    answer = await self.sessions.query_size(holder, file_id,
                                                            timeout=self.sessions.lease_seconds)
                    if answer is not None:
                        self.reported(holder, file_id, answer, stored=False)
