"""The metaserver's parts, wired together, and the tasks that keep them: the namespace (a
SQLite tree), sessions and leases, the token manager, open files and sizes, the attached
fileservers, copies and their repair, deletions, and the recovery window after a restart.
Nothing here knows gRPC: the servicer (service.py) translates calls into these.

Invariant: everything runs on one event loop, and the loop never waits on the disk for long.
SQLite is read and written on it directly: reads are quick and WAL never blocks them, and a
commit only appends to the log (namespace.py). A hop to another thread and back would cost each
change two thread wakeups, which on a loaded machine are most of its time. What may take long
runs on the metadata thread instead: the syncs (fsyncs), the marking of a lost fileserver's
copies (every replicated file), and a change that finds the writer busy (with a resync's
commit, say).

Sessions survive a restart: they are recorded in the namespace, and a restarted metaserver lets
their clients reclaim them, with their open files and tokens, within a recovery window
(recovery.py).

A session ending leaves no copy apart: if it may have been writing a replicated file it had not
closed, every copy but one is recorded stale for its WRITE tokens' bytes once it is fenced and
before those tokens move (unfinished.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from pfs._proto import metaserver_pb2 as pb
from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.capability import CAPABILITY_SECONDS, Signer, column_ranges
from pfs.protocol.paths import brief, is_temporary
from pfs.protocol.ranges import INFINITY
from pfs.protocol.transport import Credentials

from ..repeats import Repeats
from .cluster import Cluster
from .copies import Copies
from .deletions import Deletions
from .layouts import Layout, Layouts
from .loopclock import LoopClock
from .members import Membership
from .namespace import NewAttributes, Node, StorageFull, WriterBusy
from .openfiles import OpenFile, OpenFiles
from .orphans import Orphans
from .recovery import Reclaims, Recovery
from .repair import Repair
from .replication import Replication
from .sessions import Session as ClientSession
from .sessions import Sessions
from .sizes import Sizes
from .store import MetaStore
from .temporaries import Temporaries, TemporaryRemoval
from .tokens import READ, WRITE, Revocation, TokenManager
from .unfinished import UnfinishedWrites

log = logging.getLogger("pfs.metaserver")

#: How often overdue revocations are looked for.
EVICTION_CHECK_SECONDS = 0.5
#: How often committed namespace changes are put on the disk (at most lost to a power cut).
SYNC_SECONDS = 1.0
#: The largest stripe unit a directory's layout may ask for, in bytes.
MAX_STRIPE_UNIT = 1 << 30
#: Directory entries per List reply (a reply must stay well below gRPC's message limit).
LIST_PAGE = 10_000


class MetaServer:
    def __init__(self, namespace: MetaStore, expected_fileservers: int, lease_seconds: float,
                 block_size: int, stripe_blocks: int, cluster_key: bytes,
                 recovery_seconds: float, replicas: int = 1,
                 credentials: Credentials | None = None, leadership=None) -> None:
        """`leadership`: with etcd, this metaserver's Election (election.py): it grants
        nothing once its term as the active one is over."""
        self.namespace = namespace
        self.leadership = leadership
        namespace.resume()
        self.copies = Copies(namespace)
        self.copies.settle()
        self.replicas = replicas
        self.cluster_key = cluster_key
        self.signer = Signer(cluster_key)
        self.block_size = block_size
        self.stripe_blocks = stripe_blocks
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata")
        # Leases and timeouts leave out the time our own event loop lagged (loopclock.py).
        self.clock = LoopClock()
        self.cluster = Cluster(functools.partial(self.db, namespace.register_fileserver),
                               namespace.fileservers(),
                               {i: name for i, (name, _) in namespace.members().items()},
                               expected_fileservers,
                               namespace.next_client_id(), clock=self.clock)
        self.sessions = Sessions(lease_seconds, on_end=self._session_ended, clock=self.clock)
        self.tokens = TokenManager(self._send_revoke, revoke_timeout=max(2 * lease_seconds, 5.0),
                                   clock=self.clock)
        self.open_files = OpenFiles()
        self._namespace_lock = asyncio.Lock()
        self.deletions = Deletions(namespace.pending_deletes(), self.cluster,
                                   functools.partial(self.db, namespace.delete_done))
        self.repair = Repair(namespace, self.copies, self.tokens, self.cluster, self.signer,
                             credentials or Credentials(), time.time)
        self.unfinished = UnfinishedWrites(self.copies, self.tokens, self.cluster, self.repair,
                                           self.db)
        self._background: list[asyncio.Task] = []
        self.repeats = Repeats(log)  # warnings that a burst of calls would each log
        self.temporaries = Temporaries(namespace)
        recorded = namespace.recorded_sessions()
        for client_id, hashed in recorded.items():
            self.sessions.restore(client_id, hashed)
            self.tokens.add_client(client_id)
        self.cluster.restore(recorded)
        for client_id in self.copies.writers() - recorded.keys():
            # Its session was forgotten, but the metaserver stopped before the copies it may
            # have left apart were recorded: its tokens are unknown, and no fileserver online.
            self.copies.abandoned(client_id, None, set(), set())
        self.recovery = Recovery(recorded)
        self.temporary_removal = TemporaryRemoval(
            self.temporaries, namespace, self.open_files, self.deletions, self._namespace_lock,
            self.db, self.sessions, self.recovery)
        self.layouts = Layouts(namespace)
        self.replication = Replication(namespace, self.cluster, self.copies, self.open_files,
                                       self.deletions, self.repair, self._namespace_lock,
                                       self.db)
        self.orphans = Orphans(namespace, self.open_files, self.deletions, self._namespace_lock,
                               self.db, self.sessions, self.recovery)
        self.open_files.on_last_close = self.orphans.last_closed
        self.membership = Membership(namespace, self.cluster, self.copies, self.open_files,
                                     self.deletions, self.repair, self.replication,
                                     self._namespace_lock, self.on_db_thread)
        self.sizes = Sizes(namespace, self.open_files, self.tokens, self.copies, self.cluster,
                           self.sessions, self.db)
        self.reclaims = Reclaims(namespace, self.tokens, self.open_files, self.copies, self.sizes,
                                 self.cluster, self.sessions, self.recovery, self.clock,
                                 self.capabilities)
        self.recovery_seconds = recovery_seconds

    async def db(self, fn, *args):
        """Runs a namespace change: at once if the writer is free, else on the metadata thread."""
        with contextlib.suppress(WriterBusy):
            return self.namespace.now(fn, *args)
        return await self.on_db_thread(fn, *args)

    async def on_db_thread(self, fn, *args):
        """Runs something that may take long on the metadata thread (a sync, a bulk change)."""
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self.clock.run()),
                            loop.create_task(self.sessions.expire_leases()),
                            loop.create_task(self._evict_overdue()),
                            loop.create_task(self.deletions.run()),
                            loop.create_task(self._resync()),
                            loop.create_task(self.temporary_removal.orphans()),
                            loop.create_task(self.orphans.left_over()),
                            loop.create_task(self._sync_metadata())]
        if self.recovery.active:
            self._background.append(loop.create_task(
                self.recovery.run(self.sessions, self.recovery_seconds)))

    async def _resync(self) -> None:
        """The resync of stale copies (repair.py), once the recovery window is over: its READ
        tokens must come after the clients' reclaims, which they could conflict with."""
        await self.recovery.over.wait()
        await self.repair.resync()

    async def stop(self) -> None:
        self.cluster.stopping = True
        for task in self._background:
            task.cancel()
        self.temporary_removal.stop()
        self.orphans.stop()
        await self.sessions.stop()
        self._db_thread.submit(self.namespace.close).result()
        self._db_thread.shutdown()

    # --- sessions ending --------------------------------------------------------------------
    async def _session_ended(self, session: ClientSession, evicted: bool) -> None:
        """Forgets the session's record, fences it at the fileservers, then (once an evicted
        client surely knows its lease is over) lets others have its tokens."""
        self.recovery.back(session.client_id)
        try:
            await self.db(self.namespace.forget_session, session.client_id)
        except (StorageFull, OSError) as e:  # restored after a restart, it is evicted again
            log.error("could not forget client %d's session: %s", session.client_id, e)
        await self.cluster.fence(session.client_id)
        await self.unfinished.settle(session)
        if evicted:
            await asyncio.sleep(max(0.0, self.sessions.lease_end(session) - time.monotonic()))
        self.tokens.remove_client(session.client_id)
        self.open_files.close_all(session.client_id)
        self.temporary_removal.session_ended(session.client_id, self.sessions.lease_end(session))

    async def _evict_overdue(self) -> None:
        while True:
            await asyncio.sleep(EVICTION_CHECK_SECONDS)
            for client_id in self.tokens.overdue():
                self.sessions.end(client_id, "it did not acknowledge a revocation", evicted=True)

    def _send_revoke(self, revocation: Revocation) -> None:
        session = self.sessions.find(revocation.client_id)
        if session is None:
            return  # its tokens are being released anyway
        session.revoked_files[revocation.revoke_id] = (revocation.file_id,
                                                       revocation.end == INFINITY)
        self.sessions.send(session, pb.ServerMessage(revoke=pb.Revoke(
            revoke_id=revocation.revoke_id, file_id=revocation.file_id,
            start=revocation.start, end=revocation.end, to_mode=revocation.to_mode,
            granted_upto=revocation.granted_upto, client_id=revocation.client_id)))

    def failover_state(self) -> tuple[str, list[str], int]:
        """With etcd: this (active) metaserver's address, the standbys', and its epoch."""
        if self.leadership is None:
            return "", [], 0
        me = self.leadership.address
        return me, [m for m in self.leadership.metaservers() if m != me], self.leadership.epoch

    def capabilities(self, client_id: int, node: Node, grant) -> list[bytes]:
        """One capability per stripe column for a grant (pfs/capability.py)."""
        if self.leadership is not None and not self.leadership.active():
            raise OSError(errno.EAGAIN, "this metaserver is no longer the active one; the "
                                        "client follows the active one and tries again")
        expires = time.time() + CAPABILITY_SECONDS
        ranges = column_ranges(node.block_size, node.stripe_blocks, node.width, grant.start,
                               grant.end)
        return [self.signer.sign(node.node_id, client_id, grant.mode, start, end, expires,
                                 node.copies(column))
                for column, (start, end) in enumerate(ranges)]

    def files_under(self, path: tuple[str, ...]) -> list[Node]:
        """The files at or below `path`, a page of a directory at a time."""
        node = self.namespace.lookup(path)
        if not node.is_dir:
            return [node]
        files, pending = [], [path]
        while pending:
            here, after = pending.pop(), ""
            while page := self.namespace.listdir(here, after, LIST_PAGE):
                for name, child in page:
                    if child.is_dir:
                        pending.append(here + (name,))
                    elif not child.is_symlink:
                        files.append(child)
                after = page[-1][0]
        return files

    # --- client streams (the servicer's Sessions) ---------------------------------------
    async def read_stream(self, stream, request_iterator) -> None:
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            self.sessions.heard_on(stream, message.heartbeat if kind == "heartbeat" else None)
            if kind == "join":
                self.sessions.join(stream, message.join.client_id, message.join.session_key)
            elif kind == "leave":
                if self.sessions.member(stream, message.leave.client_id) is not None:
                    self.sessions.end(message.leave.client_id, "its client gave it up")
            elif kind == "revoke_ack":
                ack = message.revoke_ack
                session = self.sessions.member(stream, ack.client_id)
                if session is None:  # ended meanwhile, or not this stream's to answer for
                    continue
                revoked = session.revoked_files.pop(ack.revoke_id, None)
                if revoked is not None:  # before the waiting request is granted
                    file_id, tail = revoked  # a client gives up the tail only once all is stored
                    self.sizes.reported(session.client_id, file_id, ack.size, stored=tail)
                self.tokens.acknowledge(session.client_id, ack.revoke_id)
            elif kind == "size_reply":
                self.sessions.answered(stream, message.size_reply)
        self.sessions.close_stream(stream, "the client closed its stream")

    # --- fileservers' control streams (the servicer's Attach) -----------------------------
    async def fileserver_attached(self, link) -> None:
        """A fileserver attached: what it lost is stale, what it missed can be copied now."""
        if link.lost_data:
            stale = await self.on_db_thread(self.copies.lost, link.index)
            log.warning("fileserver %s's copies of %d replicated files are stale: resyncing",
                        link.name, stale)
        self.repair.wake()  # (whatever it missed while away can be copied now)
        self.deletions.attached(link.index)

    async def read_fileserver(self, link, request_iterator) -> None:
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            if kind == "heartbeat":
                self.cluster.heartbeat(link, message.heartbeat.seq)
            elif kind == "table_ack":
                self.cluster.table_acked(link, message.table_ack.version)
            elif kind == "deleted":
                await self.deletions.confirmed(link.index, list(message.deleted.file_ids))
            elif kind == "length":
                self.cluster.lengths.answered(message.length.query_id, message.length.length)
        self.cluster.detach(link)

    # --- namespace changes (the servicer's Create, Rename, Open, Delete) -------------------
    async def create(self, client_id: int, path: tuple[str, ...], width: int,
                     replicas: int, attributes: NewAttributes = NewAttributes()) -> Node:
        """A new file; what `width` and `replicas` leave open (0) comes from its directory's
        layout (see new_file_layout)."""
        chosen, _ = self.new_file_layout(path[:-1], width, replicas)
        servers = self.cluster.place(chosen.stripe_width, chosen.replicas)
        node = await self.db(self.namespace.create, path, self.block_size,
                             chosen.stripe_blocks, servers, chosen.replicas, attributes)
        if is_temporary(path[-1]):  # removed if its writer's session ends first
            await self.db(self.temporaries.created, node.node_id, client_id)
        online = self.cluster.online()
        for index in servers:
            if index not in online:  # born stale (cluster.place)
                await self.db(self.copies.missed, node.node_id, index, 0, INFINITY)
                log.info("file %d's copy on fileserver %s is stale from the start: it is "
                         "offline", node.node_id, self.cluster.name(index))
        log.debug("created %s (file %d) striped over fileservers %s", brief("/".join(path)),
                 node.node_id, servers)
        return node

    def new_file_layout(self, directory: tuple[str, ...], width: int = 0, replicas: int = 0
                        ) -> tuple[Layout, tuple[str, ...] | None]:
        """What a file created in `directory` gets, in full: what the create asks (`width`,
        `replicas`; 0: nothing), else what the nearest layout says (layouts.py), else the
        cluster's defaults, a layout's width no wider than the cluster allows now (as Lustre
        caps a stripe count); and the directory whose layout applies (None: none)."""
        layout, source = self.layouts.inherited(directory)
        replicas = replicas or layout.replicas or self.replicas
        widest = self.cluster.widest(replicas)
        return Layout(width or min(layout.stripe_width or widest, widest),
                      layout.stripe_blocks or self.stripe_blocks, replicas), source

    async def rmdir(self, path: tuple[str, ...]) -> None:
        node = self.namespace.lookup(path)
        await self.db(self.namespace.rmdir, path)
        self.layouts.forget(node.node_id)

    async def set_layout(self, path: tuple[str, ...], layout: Layout) -> tuple[int, int]:
        """A directory's layout, or a file's replica count (its striping is fixed at create):
        (copies made, copies dropped)."""
        node = self.namespace.lookup(path)
        members = len(self.cluster.addresses())
        if max(layout.stripe_width, 1) * max(layout.replicas, 1) > members:
            asked = " × ".join(f"{what} {n}" for what, n in (("stripe width", layout.stripe_width),
                                                              ("replicas", layout.replicas)) if n)
            raise OSError(errno.EINVAL, f"{asked} is more than the {members} fileservers (each "
                                        "copy of a stripe column is on one of its own)")
        if layout.stripe_blocks * self.block_size > MAX_STRIPE_UNIT:
            raise OSError(errno.EINVAL, f"a stripe unit of {layout.stripe_blocks} blocks of "
                                        f"{self.block_size} bytes is more than 1 GiB")
        if node.is_dir:
            await self.db(self.layouts.set, path, layout)
            log.info("layout of %s: %s", brief("/".join(path)) or "/", layout)
            return 0, 0
        if layout.stripe_width or layout.stripe_blocks or not layout.replicas:
            raise OSError(errno.EINVAL, f"{brief('/'.join(path))} is a file: its striping is "
                                        "fixed at create (copy it with `pfs cp --stripe-width N` "
                                        "to restripe); only its replica count can change")
        if layout.replicas == node.replicas:
            return 0, 0
        added, dropped = await self.replication.change(node.node_id, layout.replicas)
        return len(added), len(dropped)

    async def rename(self, old: tuple[str, ...], new: tuple[str, ...],
                     open_ok: bool = False) -> None:
        """Moves `old` to `new`; a file open anywhere is moved or replaced only if `open_ok`
        (POSIX: a replaced one becomes an orphan, orphans.py), else EBUSY."""
        async with self._namespace_lock:
            replaced_open = False
            for path in (old, new):
                try:
                    node = self.namespace.lookup(path)
                except OSError:
                    continue  # a missing name: the rename itself says what is wrong
                if not node.is_dir and self.open_files.is_open(node.node_id):
                    if not open_ok:
                        raise _busy("rename" if path == old else "replace", "/".join(path),
                                    self.open_files.openers(node.node_id))
                    replaced_open = path == new
            replaced = await self.db(self.namespace.rename, old, new, replaced_open)
        if replaced is not None and not replaced.is_dir:
            if replaced_open:
                self.orphans.made(replaced.node_id)
            else:
                self.deletions.add(replaced.node_id, replaced.servers)
        log.debug("renamed %s to %s", brief("/".join(old)), brief("/".join(new)))

    async def open(self, client_id: int, path: tuple[str, ...], named: str) -> Node:
        """Opens `path` (as the caller `named` it) for the client."""
        async with self._namespace_lock:
            node = self.namespace.lookup(path)
            if node.is_dir:
                raise OSError(errno.EISDIR, f"is a directory: {brief(named)}")
            if node.is_symlink:
                raise OSError(errno.ELOOP, f"is a symbolic link (PFS does not follow them; "
                                           f"the mount's kernel does): {brief(named)}")
            if self.open_files.has_open(client_id, node.node_id):
                raise OSError(errno.EBUSY, f"{brief(named)} is already open in this "
                                           "client; close it first")
            self.open_files.open(client_id, node)
        return node

    def grant_at_open(self, session: ClientSession, f: OpenFile, mode: int):
        """The token an open implies, for the whole file, if nothing is in its way but tokens
        other clients keep unused after closing it, taken from them (`TokenManager.take_kept`;
        else None: the client asks when it first reads or writes). Not a WRITE token on a
        replicated file: that first needs the durable note `acquire` makes, which an open that
        never writes should not cost."""
        if mode not in (READ, WRITE):
            return None
        if mode == WRITE and f.node.replicas > 1 and f.node.node_id not in session.writing:
            return None
        file_id = f.node.node_id
        if self.tokens.holds(session.client_id, file_id, 0, INFINITY, mode):
            return None  # kept since the client closed it (see OpenReply.held)
        return (self.tokens.grant_if_free(session.client_id, file_id, 0, INFINITY, mode)
                or self.tokens.take_kept(session.client_id, file_id, mode,
                                         self.open_files.openers(file_id)))

    async def delete(self, path: tuple[str, ...], named: str, open_ok: bool = False) -> None:
        """Deletes the file at `path` (as the caller `named` it). One open anywhere is EBUSY,
        or if `open_ok` (POSIX) loses its name now and is removed at its last close."""
        async with self._namespace_lock:
            node = self.namespace.lookup(path)
            is_open = self.open_files.is_open(node.node_id)
            if is_open and not open_ok:
                raise _busy("delete", named, self.open_files.openers(node.node_id))
            await self.db(self.namespace.unlink, path, is_open)
        if is_open:
            self.orphans.made(node.node_id)
            log.debug("unlinked %s (file %d) while open", brief("/".join(path)), node.node_id)
            return
        log.debug("deleted %s (file %d)", brief("/".join(path)), node.node_id)
        self.deletions.add(node.node_id, node.servers)

    async def set_attributes(self, path: tuple[str, ...], **changes) -> Node:
        """Sets POSIX attributes (namespace.set_attributes). An mtime set on an open file
        stays past its close (`cp -p` sets it before closing)."""
        node = await self.db(self.namespace.set_attributes, path, *(
            changes.get(k) for k in ("mode", "uid", "gid", "atime", "mtime")))
        f = self.open_files.get(node.node_id)
        if f is not None:
            f.node = node
            f.mtime_set = f.mtime_set or changes.get("mtime") is not None
        return node

    # --- sizes (the servicer's Truncate) -------------------------------------------------
    async def truncate(self, client_id: int, f: OpenFile, size: int) -> int:
        """Cuts or extends the open file `f` to `size` bytes; its new size epoch."""
        if size > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
        if not self.tokens.holds(client_id, f.node.node_id, size, INFINITY, WRITE):
            raise ValueError("truncate needs a WRITE token from the new end to infinity")
        if size > f.node.size and not await self.sizes.stored(f.node, size):
            raise ValueError(f"the objects of file {f.node.node_id} were not extended to "
                             f"{size} bytes")
        # mtime moves at the close that follows (the client counts a truncate as a write).
        await self.db(self.namespace.record_size, f.node.node_id, size, False, True)
        f.node = self.namespace.get(f.node.node_id)
        return self.open_files.truncated(f, size)

    # --- tokens (the servicer's Acquire) -------------------------------------------------
    async def acquire(self, session: ClientSession, f: OpenFile, start: int, end: int,
                       mode: int):
        """A token's grant, once the conflicting holders have given it up. A session's first
        WRITE token on a replicated file is preceded by a durable note that it may be writing
        it (copies.py): should the session end before it closes the file, its copies are
        reconciled."""
        client_id, file_id = session.client_id, f.node.node_id
        if mode == WRITE and f.node.replicas > 1 and file_id not in session.writing:
            await self.db(self.copies.writing, client_id, file_id)
            session.writing.add(file_id)
        answer = asyncio.get_running_loop().create_future()

        def done(grant, error) -> None:
            answer.set_exception(error) if error else answer.set_result(grant)
        pending = self.tokens.request(client_id, file_id, start, end, mode, done)
        try:
            return await answer
        except asyncio.CancelledError:
            self.tokens.cancel(pending)
            raise

    # --- durability ------------------------------------------------------------------------
    async def _sync_metadata(self) -> None:
        """Puts committed namespace changes on the disk every second (see namespace.py)."""
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            await self.on_db_thread(self.namespace.sync)


def _busy(what: str, path: str, openers: list[int]) -> OSError:
    return OSError(errno.EBUSY, f"cannot {what} {brief(path)}: it is open by client(s) "
                                f"{openers[:10]}; they must close it first")
