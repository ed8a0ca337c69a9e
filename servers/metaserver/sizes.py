"""Sizes of files, as clients tell them and as the fileservers store them (see openfiles.py).

Invariant: a size is believed only from a client that could have written it: one holding a
WRITE token on the bytes between the known size and the reported one; a durable size (at close
or fsync) must also be stored: the fileserver holding its last byte must have it.
A client that holds a WRITE token beyond the known size may have grown the file in its cache,
so Stat asks it (a glimpse) before answering.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Awaitable, Callable, Iterable

from pfs._native import plan_stripes
from pfs.metadata import MAX_FILE_SIZE

from .cluster import Cluster
from .copies import Copies
from .namespace import Node
from .openfiles import OpenFile, OpenFiles
from .sessions import Session as ClientSession
from .sessions import Sessions
from .store import MetaStore
from .tokens import WRITE, TokenManager

log = logging.getLogger("pfs.metaserver")


class Sizes:
    def __init__(self, namespace: MetaStore, open_files: OpenFiles, tokens: TokenManager,
                 copies: Copies, cluster: Cluster, sessions: Sessions,
                 db: Callable[..., Awaitable]) -> None:
        self.namespace = namespace
        self.open_files = open_files
        self.tokens = tokens
        self.copies = copies
        self.cluster = cluster
        self.sessions = sessions
        self._db = db  # runs a namespace change (MetaServer.db)

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
        (extent,) = plan_stripes(size - 1, 1, node.block_size, node.stripe_blocks,
                                 node.width).extents
        stale, unreachable = self.copies.stale(node.node_id), None
        for index in node.copies(extent.server):
            if index in stale and node.replicas > 1:
                continue
            try:
                return await self.cluster.object_length(index, node.node_id) > \
                    extent.local_offset
            except ConnectionError as e:
                unreachable = unreachable or e
        raise unreachable or ConnectionError(f"no good copy of file {node.node_id} holds "
                                             f"byte {size - 1}")

    async def record(self, session: ClientSession, f: OpenFile, written_end: int,
                           touch: bool) -> None:
        """At close or fsync: the durable size becomes the client's written end (which must be
        believable, and stored), or the newest size known to be stored all the way if that is
        larger (best effort: a writer that still caches more will report it itself)."""
        if not self.believable(session.client_id, f, written_end):
            raise ValueError(f"size {written_end} is not one client {session.client_id} could "
                             f"have written (file {f.node.node_id} has {f.size} bytes, and the "
                             "client holds no WRITE token up to that size)")
        durable = f.node.size
        if written_end > durable:
            if not await self.stored(f.node, written_end):
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
