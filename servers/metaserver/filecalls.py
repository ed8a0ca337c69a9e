"""The calls on one file a client opens: open, the token an open implies, tokens, truncate, the
sizes it reports, close, stat, and the bytes a copy of it missed.

Invariant: a file is open for a client from its Open to its Close, and it is no longer open
before its tokens go, so nothing is granted in between; a Close may come again (its first reply
lost) and one that fails changes nothing. A session's first WRITE token on a replicated file
comes after a durable note that it may be writing it (copies.py).
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Awaitable, Callable, Iterable

from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.paths import brief
from pfs.protocol.ranges import INFINITY

from ..repeats import Repeats
from .cluster import Cluster
from .copies import Copies
from .namespace import Node
from .openfiles import OpenFile, OpenFiles
from .repair import Repair
from .sessions import Session, SessionEnded
from .sizes import Sizes
from .store import MetaStore
from .tokens import READ, WRITE, Grant, TokenManager

log = logging.getLogger("pfs.metaserver")


class FileCalls:
    def __init__(self, namespace: MetaStore, db: Callable[..., Awaitable],
                 read: Callable[..., Awaitable], on_db_thread: Callable[..., Awaitable],
                 namespace_lock: asyncio.Lock,
                 open_files: OpenFiles, tokens: TokenManager, sizes: Sizes, copies: Copies,
                 cluster: Cluster, repair: Repair, repeats: Repeats) -> None:
        self._namespace, self._db, self._on_db_thread = namespace, db, on_db_thread
        self._read = read  # (MetaServer.read: the loop never waits on etcd)
        self._lock, self._open_files, self._tokens = namespace_lock, open_files, tokens
        self._sizes, self._copies, self._cluster = sizes, copies, cluster
        self._repair, self._repeats = repair, repeats

    async def open(self, client_id: int, path: tuple[str, ...], named: str) -> Node:
        """Opens `path` (as the caller `named` it) for the client."""
        async with self._lock:
            node = await self._read(self._namespace.lookup, path)
            if node.is_dir:
                raise OSError(errno.EISDIR, f"is a directory: {brief(named)}")
            if node.is_symlink:
                raise OSError(errno.ELOOP, f"is a symbolic link (PFS does not follow them; "
                                           f"the mount's kernel does): {brief(named)}")
            if node.special is not None:
                raise OSError(errno.ENXIO, f"is a special file (a FIFO, socket or device: PFS "
                                           f"keeps its name, the mount's kernel serves it): "
                                           f"{brief(named)}")
            if self._open_files.has_open(client_id, node.node_id):
                raise OSError(errno.EBUSY, f"{brief(named)} is already open in this "
                                           "client; close it first")
            self._open_files.open(client_id, node)
        if self._namespace.reads_wait:  # (read by a grant at the open)
            await self._read(self._copies.stale, node.node_id)
        return node

    def grant_at_open(self, session: Session, file_id: int,
                      mode: int) -> tuple[OpenFile, Grant] | None:
        """The token an open implies, for the whole file, if nothing is in its way but tokens
        other clients keep unused after closing it, taken from them (`TokenManager.take_kept`;
        else None: the client asks when it first reads or writes; an ended session is signed
        nothing). Not a WRITE token on a replicated file: that first needs the durable note
        `acquire` makes, which an open that never writes should not cost."""
        if session.ended or mode not in (READ, WRITE):
            return None
        f = self._open_files.of(session.client_id, file_id)
        if mode == WRITE and f.node.replicas > 1 and file_id not in session.writing:
            return None
        if self._tokens.holds(session.client_id, file_id, 0, INFINITY, mode):
            return None  # kept since the client closed it (see OpenReply.held)
        grant = (self._tokens.grant_if_free(session.client_id, file_id, 0, INFINITY, mode)
                 or self._tokens.take_kept(session.client_id, file_id, mode,
                                           self._open_files.openers(file_id)))
        return None if grant is None else (f, grant)

    async def acquire(self, session: Session, file_id: int, start: int, end: int,
                      mode: int) -> tuple[OpenFile, Grant]:
        """A token's grant, once the conflicting holders have given it up. A session's first
        WRITE token on a replicated file is preceded by a durable note that it may be writing
        it (copies.py): should the session end before it closes the file, its copies are
        reconciled."""
        client_id = session.client_id
        f = self._open_files.of(client_id, file_id)
        if self._namespace.reads_wait:  # (read once it is granted)
            await self._read(self._copies.stale, file_id)
        if mode == WRITE and f.node.replicas > 1 and file_id not in session.writing:
            await self._db(self._copies.writing, client_id, file_id)
            session.writing.add(file_id)
        answer = asyncio.get_running_loop().create_future()

        def done(grant, error) -> None:
            answer.set_exception(error) if error else answer.set_result(grant)
        pending = self._tokens.request(client_id, file_id, start, end, mode, done)
        try:
            grant = await answer
        except asyncio.CancelledError:
            self._tokens.cancel(pending)
            raise
        if session.ended:  # while it waited: an ended session is signed nothing (cluster.py)
            raise SessionEnded(f"client {client_id}'s session ended while it waited "
                               "for a token; call pfs_initialize again")
        return f, grant

    async def truncate(self, client_id: int, file_id: int, size: int) -> int:
        """Cuts or extends the open file to `size` bytes; its new size epoch."""
        f = self._open_files.of(client_id, file_id)
        self._sizes.cut(file_id, client_id)  # (the client cut the objects first)
        if size > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
        if not self._tokens.holds(client_id, f.node.node_id, size, INFINITY, WRITE):
            raise ValueError("truncate needs a WRITE token from the new end to infinity")
        if size > f.node.size and not await self._sizes.stored(f.node, size):
            raise ValueError(f"the objects of file {f.node.node_id} were not extended to "
                             f"{size} bytes")
        # mtime moves at the close that follows (the client counts a truncate as a write).
        await self._db(self._namespace.record_size, f.node.node_id, size, False, True)
        f.node = self._namespace.get(f.node.node_id)
        return self._open_files.truncated(f, size)

    async def report_size(self, session: Session, file_id: int, size: int,
                          receipts: Iterable[bytes] = ()) -> None:
        """A size the client made durable (fsync): recorded, and on the disk before the
        answer, so that it survives a machine crash. `receipts`: as close's."""
        f = self._open_files.of(session.client_id, file_id)
        await self._sizes.record(session, f, size, touch=False, receipts=receipts)
        await self._on_db_thread(self._namespace.sync)

    async def close(self, session: Session, file_id: int, size: int, wrote: bool,
                    keep_tokens: bool = False, release: Iterable[int] = (),
                    receipts: Iterable[bytes] = ()) -> bool:
        """Idempotent: a client whose first Close reply was lost may send it again. A Close that
        fails (a size the client could not have written, a full disk) changes nothing.
        `keep_tokens`: the client keeps the file's tokens unused (its lock cache), which only
        a single-copy file's may be; `release`: files it evicted from that cache; `receipts`:
        the fileservers' receipts showing `size` stored (sizes.py). Whether the tokens are
        kept."""
        f = self._open_files.get(file_id)
        kept = False
        if f is not None and session.client_id in f.openers:
            await self._sizes.record(session, f, size, wrote, receipts)
            if file_id in session.writing:  # every write it sent is stored or recorded
                await self._db(self._copies.closed, session.client_id, file_id)
                session.writing.discard(file_id)
            # Not open any more before the tokens go, so no request is granted in between.
            self._open_files.close(session.client_id, file_id)
            kept = keep_tokens and f.node.replicas == 1
            self._tokens.release_file(session.client_id, file_id, keep=kept)
        elif keep_tokens:  # a Close sent again: what the first kept is still kept
            kept = bool(self._tokens.holdings(session.client_id, file_id))
        for evicted in release:
            if not self._open_files.has_open(session.client_id, evicted):
                self._tokens.release_file(session.client_id, evicted)
        return kept

    async def stat(self, caller: int | None, path: tuple[str, ...] | None = None,
                   file_id: int | None = None) -> Node:
        """The file at `path`, or the caller's open file `file_id`, with its size as its
        writers have it now (a glimpse, sizes.py)."""
        node = await self._read(self._namespace.lookup, path) if path is not None \
            else self._open_files.of(caller, file_id).node
        await self._sizes.glimpse(node.node_id, caller)
        return node

    async def report_missed(self, session: Session, file_id: int, server: int, start: int,
                            end: int, why: str) -> list[tuple[int, int, int]]:
        """Records a copy's missed (or damaged) bytes before the client counts a write stored
        (copies.py); what every copy of the file misses then (Copies.missed). Believed from a
        client with the file open: marking a copy stale never loses data, it costs a resync."""
        f = self._open_files.of(session.client_id, file_id)
        name = self._cluster.name(server)
        if server not in f.node.servers or f.node.replicas < 2:
            raise ValueError(f"fileserver {name} holds no copy of file {file_id} that "
                             "another copy could stand in for")
        if not start < end <= INFINITY:
            raise ValueError(f"missed range [{start}, {end}) is empty")
        ranges = await self._db(self._copies.missed, file_id, server, start, end)
        self._repeats.log(logging.WARNING, ("missed", server),
                          f"copies on fileserver {name} missed bytes",
                          "the copy of file %d on fileserver %s missed bytes %d-%d (client %d: "
                          "%.300r): stale until resynced", file_id, name, start, end - 1,
                          session.client_id, why)
        self._repair.wake()
        return ranges
