"""The metaserver's parts wired together, and the tasks that keep them: the namespace (a SQLite
tree, or etcd), sessions and their lifecycle (lifecycle.py), the token manager, the calls on open
files (filecalls.py), namespace changes (changes.py), the attached fileservers, copies and their
repair, deletions, and the recovery window after a restart (recovery.py). Nothing here knows
gRPC: the servicer (service.py) translates calls into these.

Invariant: everything runs on one event loop, and the loop never waits on the disk for long.
SQLite is read and written on it directly: reads are quick and WAL never blocks them, and a
commit only appends to the log (namespace.py). A hop to another thread and back would cost each
change two thread wakeups, which on a loaded machine are most of its time. What may take long
runs on the metadata thread instead: the syncs (fsyncs), the marking of a lost fileserver's
copies (every replicated file), and a change that finds the writer busy (with a resync's
commit, say). With etcd: every change, and every read its cache cannot answer (`read`), so
that the loop never waits on etcd (cut off from it, it still answers what needs none).
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from pfs.protocol.capability import CAPABILITY_SECONDS, Signer, column_ranges
from pfs.protocol.receipts import Notary
from pfs.protocol.transport import Credentials

from ..repeats import Repeats
from .changes import NamespaceChanges
from .cluster import Cluster
from .copies import Copies
from .deletions import Deletions
from .filecalls import FileCalls
from .layouts import Layout, Layouts
from .lifecycle import Lifecycle
from .loopclock import LoopClock
from .members import Membership
from .namespace import Node, WriterBusy
from .openfiles import OpenFiles
from .orphans import Orphans
from .recovery import Reclaims, Recovery
from .repair import Repair
from .replication import Replication
from .sessions import Sessions
from .sizes import Sizes
from .store import MetaStore, WouldWait
from .temporaries import Temporaries, TemporaryRemoval
from .tokens import TokenManager
from .unfinished import UnfinishedWrites

log = logging.getLogger("pfs.metaserver")

#: How often committed namespace changes are put on the disk (at most lost to a power cut).
SYNC_SECONDS = 1.0


class MetaServer:
    """The parts, wired together (the servicer calls them through it), and the tasks that keep
    them."""

    def __init__(self, namespace: MetaStore, expected_fileservers: int, lease_seconds: float,
                 block_size: int, stripe_blocks: int, cluster_key: bytes,
                 recovery_seconds: float, replicas: int = 1,
                 credentials: Credentials | None = None, leadership=None) -> None:
        """`leadership`: with etcd, this metaserver's Election (election.py): it grants
        nothing once its term as the active one is over."""
        self.namespace = namespace
        self.leadership = leadership
        self.replicas = replicas
        self.cluster_key = cluster_key
        self.signer = Signer(cluster_key)
        self.block_size = block_size
        self.stripe_blocks = stripe_blocks
        self.recovery_seconds = recovery_seconds
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata")
        self._background: list[asyncio.Task] = []
        self.repeats = Repeats(log)  # warnings that a burst of calls would each log
        # Leases and timeouts leave out the time our own event loop lagged (loopclock.py).
        self.clock = LoopClock()
        namespace.resume()
        self._wire_fileservers(expected_fileservers)
        self._wire_sessions(lease_seconds, credentials or Credentials())
        self._wire_calls()

    def _wire_fileservers(self, expected_fileservers: int) -> None:
        namespace = self.namespace
        self.copies = Copies(namespace)
        self.copies.settle()
        self.cluster = Cluster(functools.partial(self.db, namespace.register_fileserver),
                               namespace.fileservers(),
                               {i: name for i, (name, _) in namespace.members().items()},
                               expected_fileservers,
                               namespace.next_client_id(), clock=self.clock)
        self.deletions = Deletions(namespace.pending_deletes(), self.cluster,
                                   functools.partial(self.db, namespace.delete_done))

    def _wire_sessions(self, lease_seconds: float, credentials: Credentials) -> None:
        """The sessions, their tokens and open files, and those recorded before a restart."""
        # (The lifecycle, wired last, needs the sessions.)
        self.sessions = Sessions(lease_seconds, clock=self.clock,
                                 on_end=lambda session, evicted: self.lifecycle.ended(session,
                                                                                        evicted))
        self.tokens = TokenManager(self.sessions.revoke,
                                   revoke_timeout=max(2 * lease_seconds, 5.0), clock=self.clock)
        self.open_files = OpenFiles()
        self.repair = Repair(self.namespace, self.copies, self.tokens, self.cluster, self.signer,
                             credentials, time.time)
        self.unfinished = UnfinishedWrites(self.copies, self.tokens, self.cluster, self.repair,
                                           self.db)
        recorded = self.namespace.recorded_sessions()
        for client_id, hashed in recorded.items():
            self.sessions.restore(client_id, hashed)
            self.tokens.add_client(client_id)
        self.cluster.restore(recorded)
        for client_id in self.copies.writers() - recorded.keys():
            # Its session was forgotten, but the metaserver stopped before the copies it may
            # have left apart were recorded: its tokens are unknown, and no fileserver online.
            self.copies.abandoned(client_id, None, set(), set())
        self.recovery = Recovery(recorded)

    def _wire_calls(self) -> None:
        """The parts the servicer's calls go to, and those they share."""
        namespace, db, lock = self.namespace, self.db, asyncio.Lock()  # (changes.py)
        self.temporaries = Temporaries(namespace)
        self.temporary_removal = TemporaryRemoval(
            self.temporaries, namespace, self.open_files, self.deletions, lock, db,
            self.sessions, self.recovery)
        self.layouts = Layouts(namespace)
        self.replication = Replication(namespace, self.cluster, self.copies, self.open_files,
                                       self.deletions, self.repair, lock, db)
        self.orphans = Orphans(namespace, self.open_files, self.deletions, lock, db,
                               self.sessions, self.recovery)
        self.open_files.on_last_close = self.orphans.last_closed
        self.membership = Membership(namespace, self.cluster, self.copies, self.open_files,
                                     self.deletions, self.repair, self.replication, lock,
                                     self.on_db_thread)
        self.sizes = Sizes(namespace, self.open_files, self.tokens, self.copies, self.cluster,
                           self.sessions, db, Notary(self.cluster_key))
        self.repair.on_cut = self.sizes.cut
        self.reclaims = Reclaims(namespace, self.tokens, self.open_files, self.copies, self.sizes,
                                 self.cluster, self.sessions, self.recovery, self.clock,
                                 self.capabilities, self.read)
        self.lifecycle = Lifecycle(namespace, db, self.sessions, self.tokens, self.cluster,
                                   self.open_files, self.sizes, self.unfinished,
                                   self.temporary_removal, self.recovery)
        self.files = FileCalls(namespace, db, self.read, self.on_db_thread, lock, self.open_files,
                               self.tokens, self.sizes, self.copies, self.cluster, self.repair,
                               self.repeats)
        self.changes = NamespaceChanges(
            namespace, db, self.read, lock, self.open_files, self.cluster, self.copies,
            self.layouts, self.replication, self.temporaries, self.orphans, self.deletions,
            Layout(0, self.stripe_blocks, self.replicas), self.block_size)

    async def db(self, fn, *args):
        """Runs a namespace change: at once if the writer is free, else on the metadata thread."""
        with contextlib.suppress(WriterBusy):
            return self.namespace.now(fn, *args)
        return await self.on_db_thread(fn, *args)

    async def read(self, fn, *args):
        """A read of the store: on the loop if it needs no round trip (`MetaStore.at_once`),
        else on the metadata thread (which fills etcd's cache), and then again on the loop if
        it can be now, so that what follows sees the present."""
        with contextlib.suppress(WouldWait):
            return self.namespace.at_once(fn, *args)
        found = await self.on_db_thread(fn, *args)
        with contextlib.suppress(WouldWait):
            return self.namespace.at_once(fn, *args)
        return found

    async def on_db_thread(self, fn, *args):
        """Runs something that may take long on the metadata thread (a sync, a bulk change)."""
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self.clock.run()),
                            loop.create_task(self.sessions.expire_leases()),
                            loop.create_task(self.lifecycle.evict_overdue()),
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

    # --- durability ------------------------------------------------------------------------
    async def _sync_metadata(self) -> None:
        """Puts committed namespace changes on the disk every second (see namespace.py)."""
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            await self.on_db_thread(self.namespace.sync)

