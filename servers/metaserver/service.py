"""The MetaServer gRPC servicer (asyncio): translates messages into namespace, session, cluster
and token calls, and checks every number and path before anything changes.

Identity: every call acting for a session names it in its metadata with the session's key;
`_session()` finds it or refuses the call (PERMISSION_DENIED without the right key, ABORTED for
a session that has ended).

Sizes (see openfiles.py): a size is believed only from a client that could have written it: one
holding a WRITE token on the bytes between the known size and the reported one. A durable size
(at close or fsync) must also be stored: the fileserver holding its last byte must have it. A
client that holds a WRITE token beyond the known size may have grown the file in its cache, so
Stat asks it (a glimpse) before answering.

Sessions survive a restart: they are recorded in the namespace, and a restarted metaserver lets
their clients reclaim them, with their open files and tokens, within a recovery window
(recovery.py); calls that need the state of before wait for the window to end.

Everything runs on one event loop. SQLite is read and written on it directly: reads are quick
and WAL never blocks them, and a commit only appends to the log (namespace.py). A hop to another
thread and back would cost each change two thread wakeups, which on a loaded machine are most of
its time. What may take long runs on the metadata thread instead: the syncs (fsyncs), the
marking of a lost fileserver's copies (every replicated file), and a change that finds the
writer busy (with a resync's commit, say), so that the loop never waits.
`_namespace_lock` keeps opens from interleaving with the deletes and renames that must see no
open file, across the waits for their commits.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from pfs._native import plan_stripes
from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.capability import CAPABILITY_SECONDS, Signer, column_ranges
from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.errnos import ERRNO_HEADER
from pfs.protocol.paths import brief, components
from pfs.protocol.ranges import INFINITY
from pfs.protocol.transport import Credentials

from .. import clusterkey
from ..rpc import session_of
from .cluster import AttachRefused, Cluster
from .copies import Copies
from .repair import Repair
from .deletions import Deletions
from .loopclock import LoopClock
from .namespace import Namespace, Node, StorageFull, WriterBusy
from .openfiles import OpenFile, OpenFiles
from .recovery import Recovery
from .sessions import NotYourSession, SessionEnded, Sessions, key_hash, new_key
from .sessions import Session as ClientSession
from .tokens import READ, WRITE, Grant, RequestCancelled, Revocation, SessionGone, TokenManager

log = logging.getLogger("pfs.metaserver")

#: How often overdue revocations are looked for.
EVICTION_CHECK_SECONDS = 0.5
#: How often committed namespace changes are put on the disk (at most lost to a power cut).
SYNC_SECONDS = 1.0
#: Directory entries per List reply (a reply must stay well below gRPC's message limit).
LIST_PAGE = 10_000
#: Files and token ranges a Reclaim may name at most (a client's claims are far fewer).
MAX_CLAIMS = 1_000_000
#: Seconds a Reclaim waits for the fileservers to attach again (to check sizes it is told).
RECLAIM_ATTACH_SECONDS = 3.0
#: The gRPC status of each errno a namespace call fails with (the errno itself travels in the
#: trailing metadata entry ERRNO_HEADER).
_STATUS = {errno.ENOENT: grpc.StatusCode.NOT_FOUND, errno.EEXIST: grpc.StatusCode.ALREADY_EXISTS,
           errno.EINVAL: grpc.StatusCode.INVALID_ARGUMENT,
           errno.ENAMETOOLONG: grpc.StatusCode.INVALID_ARGUMENT,
           errno.EFBIG: grpc.StatusCode.INVALID_ARGUMENT,
           errno.EHOSTDOWN: grpc.StatusCode.UNAVAILABLE}


def _answer_errors(method):
    """Domain failures become gRPC statuses with a message that says what to do."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except ConnectionError as e:  # a fileserver we needed to ask is not attached
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e),
                                ((ERRNO_HEADER, str(errno.EHOSTDOWN)),))
        except OSError as e:  # a path or namespace failure: its errno goes along
            await context.abort(_STATUS.get(e.errno, grpc.StatusCode.FAILED_PRECONDITION),
                                e.strerror or str(e), ((ERRNO_HEADER, str(e.errno)),))
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotYourSession as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except (SessionEnded, SessionGone) as e:
            await context.abort(grpc.StatusCode.ABORTED, f"session ended: {e}")
        except RequestCancelled as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"file closed: {e}")
        except StorageFull as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
    return wrapper


def _busy(what: str, path: str, openers: list[int]) -> OSError:
    return OSError(errno.EBUSY, f"cannot {what} {brief(path)}: it is open by client(s) "
                                f"{openers[:10]}; they must close it first")


#: Stale copies `pfs status` lists by name (the rest are counted).
STATUS_DEGRADED = 10


class MetaServerService(pb_grpc.MetaServerServicer):
    def __init__(self, namespace: Namespace, expected_fileservers: int, lease_seconds: float,
                 block_size: int, stripe_blocks: int, cluster_key: bytes,
                 recovery_seconds: float, replicas: int = 1,
                 credentials: Credentials | None = None) -> None:
        self.namespace = namespace
        self.copies = Copies(namespace)
        self.replicas = replicas
        self._cluster_key = cluster_key
        self.signer = Signer(cluster_key)
        self.block_size = block_size
        self.stripe_blocks = stripe_blocks
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata")
        # Leases and timeouts leave out the time our own event loop lagged (loopclock.py).
        self.clock = LoopClock()
        self.cluster = Cluster(functools.partial(self._db, namespace.register_fileserver),
                               namespace.fileservers(), expected_fileservers,
                               namespace.next_client_id(), clock=self.clock)
        self.sessions = Sessions(lease_seconds, on_end=self._session_ended, clock=self.clock)
        self.tokens = TokenManager(self._send_revoke, revoke_timeout=max(2 * lease_seconds, 5.0),
                                   clock=self.clock)
        self.open_files = OpenFiles()
        self._namespace_lock = asyncio.Lock()
        self.deletions = Deletions(namespace.pending_deletes(), self.cluster,
                                   functools.partial(self._db, namespace.delete_done))
        self.repair = Repair(namespace, self.copies, self.tokens, self.cluster, self.signer,
                             credentials or Credentials(), time.time)
        self._background: list[asyncio.Task] = []
        recorded = namespace.recorded_sessions()
        for client_id, hashed in recorded.items():
            self.sessions.restore(client_id, hashed)
            self.tokens.add_client(client_id)
        self.cluster.restore(recorded)
        self.recovery = Recovery(recorded)
        self.recovery_seconds = recovery_seconds

    async def _db(self, fn, *args):
        """Runs a namespace change: at once if the writer is free, else on the metadata thread."""
        with contextlib.suppress(WriterBusy):
            return self.namespace.now(fn, *args)
        return await self._on_db_thread(fn, *args)

    async def _on_db_thread(self, fn, *args):
        """Runs something that may take long on the metadata thread (a sync, a bulk change)."""
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, fn, *args)

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._background = [loop.create_task(self.clock.run()),
                            loop.create_task(self.sessions.expire_leases()),
                            loop.create_task(self._evict_overdue()),
                            loop.create_task(self.deletions.run()),
                            loop.create_task(self._resync()),
                            loop.create_task(self._sync_metadata())]
        if self.recovery.active:
            self._background.append(loop.create_task(self._recover()))

    async def _resync(self) -> None:
        """The resync of stale copies (repair.py), once the recovery window is over: its READ
        tokens must come after the clients' reclaims, which they could conflict with."""
        await self.recovery.over.wait()
        await self.repair.resync()

    async def stop(self) -> None:
        self.cluster.stopping = True
        for task in self._background:
            task.cancel()
        await self.sessions.stop()
        self._db_thread.submit(self.namespace.close).result()
        self._db_thread.shutdown()

    # --- identity ---------------------------------------------------------------------------
    def _session(self, context) -> ClientSession:
        named = session_of(context)
        if named is None:
            raise NotYourSession("this call carries no session key; start a session with "
                                 "pfs_initialize() first")
        return self.sessions.get(*named)

    async def _recovered(self, context=None) -> ClientSession | None:
        """Waits for the recovery window to end (recovery.py); then the calling session, if the
        call names one (it may have been evicted meanwhile)."""
        session = None if context is None else self._session(context)
        if self.recovery.active:
            await self.recovery.over.wait()
            session = None if context is None else self._session(context)
        return session

    # --- sizes ------------------------------------------------------------------------------
    def _believable(self, client_id: int, f: OpenFile, size: int) -> bool:
        """Whether the client could have made the file `size` bytes long: only by writing, under
        a WRITE token, every byte from the known end to the new one."""
        return size <= f.size or (size <= MAX_FILE_SIZE and self.tokens.holds(
            client_id, f.node.node_id, f.size, size, WRITE))

    def _reported(self, client_id: int, file_id: int, size: int, stored: bool) -> None:
        """A size told in passing (revocation acknowledgement, glimpse): kept if believable;
        `stored` when the client stored every byte below it first (see openfiles.py)."""
        f = self.open_files.get(file_id)
        if f is None:
            return
        if self._believable(client_id, f, size):
            self.open_files.told(f, client_id, size, stored)
        else:
            log.warning("client %d reported size %d for file %d without a WRITE token up to "
                        "it; ignored", client_id, size, file_id)

    async def _stored(self, node: Node, size: int) -> bool:
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

    async def _record_size(self, session: ClientSession, f: OpenFile, written_end: int,
                           touch: bool) -> None:
        """At close or fsync: the durable size becomes the client's written end (which must be
        believable, and stored), or the newest size known to be stored all the way if that is
        larger (best effort: a writer that still caches more will report it itself)."""
        if not self._believable(session.client_id, f, written_end):
            raise ValueError(f"size {written_end} is not one client {session.client_id} could "
                             f"have written (file {f.node.node_id} has {f.size} bytes, and the "
                             "client holds no WRITE token up to that size)")
        durable = f.node.size
        if written_end > durable:
            if not await self._stored(f.node, written_end):
                raise ValueError(f"size {written_end} of file {f.node.node_id} was never "
                                 "written: the fileserver holding its last byte does not have it")
            durable = written_end
        if f.stored > durable:
            with contextlib.suppress(ConnectionError):
                if await self._stored(f.node, f.stored):
                    durable = f.stored
        if durable > f.node.size or touch:
            await self._db(self.namespace.record_size, f.node.node_id, durable, touch)
            f.node = self.namespace.get(f.node.node_id)
        self.open_files.told(f, session.client_id, durable, stored=True)

    def _meta(self, node: Node, path: str | None = None) -> pb.FileMeta:
        f = self.open_files.get(node.node_id)
        if path is None:
            path = self.namespace.path_of(node.node_id)
        return pb.FileMeta(
            file_id=node.node_id, path=path, size=f.size if f else node.size,
            ctime=node.ctime, mtime=node.mtime, is_dir=node.is_dir,
            size_epoch=f.size_epoch if f else 0,
            recipe=pb.Recipe(block_size=node.block_size, stripe_blocks=node.stripe_blocks,
                             stripe_width=node.width, servers=node.servers,
                             replicas=node.replicas) if not node.is_dir else pb.Recipe())

    def _fileservers(self) -> list[pb.Fileserver]:
        online = self.cluster.online()
        members = self.namespace.members()
        return [pb.Fileserver(index=i, address=a, online=i in online,
                              name=members.get(i, ("", 0.0))[0],
                              lost_data_at=members.get(i, ("", 0.0))[1])
                for i, a in self.cluster.addresses().items()]

    # --- sessions ending --------------------------------------------------------------------
    async def _session_ended(self, session: ClientSession, evicted: bool) -> None:
        """Forgets the session's record, fences it at the fileservers, then (once an evicted
        client surely knows its lease is over) lets others have its tokens."""
        self.recovery.back(session.client_id)
        try:
            await self._db(self.namespace.forget_session, session.client_id)
        except (StorageFull, OSError) as e:  # restored after a restart, it is evicted again
            log.error("could not forget client %d's session: %s", session.client_id, e)
        await self.cluster.fence(session.client_id)
        if evicted:
            await asyncio.sleep(max(0.0, self.sessions.lease_end(session) - time.monotonic()))
        self.tokens.remove_client(session.client_id)
        self.open_files.close_all(session.client_id)

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

    # --- cluster ----------------------------------------------------------------------------
    async def Attach(self, request_iterator, context):
        if not clusterkey.proves(self._cluster_key, dict(context.invocation_metadata() or ())
                                 .get(clusterkey.ATTACH_HEADER)):
            log.warning("refused a fileserver from %s: it does not hold the cluster key",
                        context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "not a fileserver of this cluster: start it with the "
                                "metaserver's cluster key (--cluster-key-file)")
        hello = await anext(request_iterator, None)
        if hello is None or hello.WhichOneof("body") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a fileserver's stream must "
                                                                  "begin with its hello")
        problem = _fileserver_problem(hello.hello)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        name = hello.hello.name or hello.hello.server_uuid
        try:
            link = await self.cluster.attach(hello.hello.server_uuid, hello.hello.address, name)
        except (AttachRefused, OSError) as e:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(getattr(e, "strerror", None)
                                                                     or e))
        if link.lost_data:
            stale = await self._on_db_thread(self.copies.lost, link.index)
            log.warning("fileserver %d's copies of %d replicated files are stale: resyncing",
                        link.index, stale)
        self.repair.wake()  # (whatever it missed while away can be copied now)
        self.deletions.attached(link.index)

        async def read() -> None:
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
        reader = asyncio.get_running_loop().create_task(read())
        try:
            async for message in self.cluster.outgoing(link):
                yield message
        finally:
            reader.cancel()
            self.cluster.detach(link)

    async def Status(self, request, context):
        degraded, ranges, missed_bytes = self.copies.summary()
        return pb.StatusReply(expected_fileservers=self.cluster.expected,
                              fileservers=self._fileservers(), sessions=self.sessions.count(),
                              files=self.namespace.count_files(), block_size=self.block_size,
                              stripe_blocks=self.stripe_blocks, degraded_files=degraded,
                              resync_ranges=ranges, resync_bytes=missed_bytes,
                              replicas=self.replicas, degraded=[
                                  pb.DegradedCopy(path=self.namespace.path_of(f), fileserver=i,
                                                  missed_bytes=n)
                                  for f, i, n in self.copies.first_stale(STATUS_DEGRADED)])

    # --- sessions ---------------------------------------------------------------------------
    @_answer_errors
    async def Register(self, request, context):
        problem = self.cluster.shortfall()
        if problem:
            await context.abort(grpc.StatusCode.UNAVAILABLE, problem)
        key = new_key()
        client_id = await self._db(self.namespace.new_session, key_hash(key))
        session = self.sessions.start(client_id, key_hash(key),
                                      f"pid {request.pid} on {brief(request.hostname) or '?'} "
                                      f"from {context.peer()}")
        self.tokens.add_client(client_id)
        try:
            await self.cluster.admit(client_id)
        except asyncio.CancelledError:
            self.sessions.end(client_id, "its registration was abandoned")
            raise
        self.sessions.heard_from(session)  # the lease starts when the client learns its key
        return pb.RegisterReply(client_id=client_id, session_key=key,
                                fileservers=self._fileservers(),
                                lease_seconds=self.sessions.lease_seconds,
                                block_size=self.block_size, stripe_blocks=self.stripe_blocks,
                                replicas=self.replicas)

    async def Sessions(self, request_iterator, context):
        """A client process's stream, shared by its sessions (see sessions.py)."""
        stream = self.sessions.open_stream(context.peer())
        reader = asyncio.get_running_loop().create_task(self._read_stream(stream,
                                                                          request_iterator))
        try:
            async for message in self.sessions.outgoing(stream):
                yield message
        finally:
            reader.cancel()
            self.sessions.close_stream(stream, "its stream closed")

    async def _read_stream(self, stream, request_iterator) -> None:
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
                    self._reported(session.client_id, file_id, ack.size, stored=tail)
                self.tokens.acknowledge(session.client_id, ack.revoke_id)
            elif kind == "size_reply":
                self.sessions.answered(stream, message.size_reply)
        self.sessions.close_stream(stream, "the client closed its stream")

    @_answer_errors
    async def Finish(self, request, context):
        session = self._session(context)
        ending = self.sessions.end(session.client_id, "finished")
        if ending is not None:
            await ending
        return pb.FinishReply()

    # --- namespace --------------------------------------------------------------------------
    @_answer_errors
    async def Create(self, request, context):
        self._session(context)
        path = components(request.path)
        replicas = request.replicas or self.replicas
        servers = self.cluster.place(request.stripe_width, replicas)
        node = await self._db(self.namespace.create, path, self.block_size, self.stripe_blocks,
                              servers, replicas)
        online = self.cluster.online()
        for index in servers:
            if index not in online:  # born stale (cluster.place)
                await self._db(self.copies.missed, node.node_id, index, 0, INFINITY)
                log.info("file %d's copy on fileserver %d is stale from the start: it is "
                         "offline", node.node_id, index)
        log.debug("created %s (file %d) striped over fileservers %s", brief("/".join(path)),
                 node.node_id, servers)
        return pb.CreateReply(meta=self._meta(node, "/".join(path)))

    @_answer_errors
    async def Mkdir(self, request, context):
        self._session(context)
        path = components(request.path)
        node = await self._db(self.namespace.mkdir, path)
        return pb.MkdirReply(meta=self._meta(node, "/".join(path)))

    @_answer_errors
    async def Rmdir(self, request, context):
        self._session(context)
        await self._db(self.namespace.rmdir, components(request.path))
        return pb.RmdirReply()

    @_answer_errors
    async def Rename(self, request, context):
        await self._recovered(context)
        old, new = components(request.old_path), components(request.new_path)
        async with self._namespace_lock:
            for path in (old, new):
                try:
                    node = self.namespace.lookup(path)
                except OSError:
                    continue  # a missing name: the rename itself says what is wrong
                if not node.is_dir and self.open_files.is_open(node.node_id):
                    raise _busy("rename" if path == old else "replace", "/".join(path),
                                self.open_files.openers(node.node_id))
            replaced = await self._db(self.namespace.rename, old, new)
        if replaced is not None and not replaced.is_dir:
            self.deletions.add(replaced.node_id, replaced.servers)
        log.debug("renamed %s to %s", brief("/".join(old)), brief("/".join(new)))
        return pb.RenameReply()

    @_answer_errors
    async def Open(self, request, context):
        session = await self._recovered(context)
        path = components(request.path)
        async with self._namespace_lock:
            node = self.namespace.lookup(path)
            if node.is_dir:
                raise OSError(errno.EISDIR, f"is a directory: {brief(request.path)}")
            if self.open_files.has_open(session.client_id, node.node_id):
                raise OSError(errno.EBUSY, f"{brief(request.path)} is already open in this "
                                           "client; close it first")
            self.open_files.open(session.client_id, node)
        return pb.OpenReply(meta=self._meta(node, "/".join(path)))

    @_answer_errors
    async def Close(self, request, context):
        """Idempotent: a client whose first Close reply was lost may send it again. A Close that
        fails (a size the client could not have written, a full disk) changes nothing."""
        session = await self._recovered(context)
        f = self.open_files.get(request.file_id)
        if f is not None and session.client_id in f.openers:
            await self._record_size(session, f, request.size, request.wrote)
            # Not open any more before the tokens go, so no request is granted in between.
            self.open_files.close(session.client_id, request.file_id)
            self.tokens.release_file(session.client_id, request.file_id)
        return pb.CloseReply()

    @_answer_errors
    async def Delete(self, request, context):
        await self._recovered(context)
        path = components(request.path)
        async with self._namespace_lock:
            node = self.namespace.lookup(path)
            if self.open_files.is_open(node.node_id):
                raise _busy("delete", request.path, self.open_files.openers(node.node_id))
            await self._db(self.namespace.unlink, path)
        log.debug("deleted %s (file %d)", brief("/".join(path)), node.node_id)
        self.deletions.add(node.node_id, node.servers)
        return pb.DeleteReply()

    @_answer_errors
    async def Stat(self, request, context):
        await self._recovered()  # (a size may be in the cache of a client not back yet)
        if request.WhichOneof("file") == "path":
            caller = None if session_of(context) is None else self._session(context).client_id
            path = components(request.path)
            node, canonical = self.namespace.lookup(path), "/".join(path)
        else:
            session = self._session(context)
            f = self.open_files.of(session.client_id, request.file_id)
            caller, node, canonical = session.client_id, f.node, None
        f = self.open_files.get(node.node_id)
        if f is not None:
            for holder in self.tokens.writers_beyond(node.node_id, f.size):
                if holder != caller:
                    answer = await self.sessions.query_size(holder, node.node_id,
                                                            timeout=self.sessions.lease_seconds)
                    if answer is not None:
                        self._reported(holder, node.node_id, answer, stored=False)
        return pb.StatReply(meta=self._meta(node, canonical))

    @_answer_errors
    async def List(self, request, context):
        path = components(request.path)
        prefix = "/".join(path) + "/" if path else ""
        page = self.namespace.listdir(path, request.after, LIST_PAGE + 1)
        return pb.ListReply(entries=[self._meta(node, prefix + name)
                                     for name, node in page[:LIST_PAGE]],
                            more=len(page) > LIST_PAGE)

    @_answer_errors
    async def ReportSize(self, request, context):
        session = await self._recovered(context)
        f = self.open_files.of(session.client_id, request.file_id)
        await self._record_size(session, f, request.size, touch=False)
        await self._on_db_thread(self.namespace.sync)  # the size survives a machine crash
        return pb.ReportSizeReply()

    @_answer_errors
    async def Truncate(self, request, context):
        session = await self._recovered(context)
        f = self.open_files.of(session.client_id, request.file_id)
        if request.size > MAX_FILE_SIZE:
            raise OSError(errno.EFBIG, f"a PFS file ends at {MAX_FILE_SIZE} bytes")
        if not self.tokens.holds(session.client_id, request.file_id, request.size, INFINITY,
                                 WRITE):
            raise ValueError("truncate needs a WRITE token from the new end to infinity")
        if request.size > f.node.size and not await self._stored(f.node, request.size):
            raise ValueError(f"the objects of file {request.file_id} were not extended to "
                             f"{request.size} bytes")
        # mtime moves at the close that follows (the client counts a truncate as a write).
        await self._db(self.namespace.record_size, request.file_id, request.size, False, True)
        f.node = self.namespace.get(request.file_id)
        return pb.TruncateReply(size_epoch=self.open_files.truncated(f, request.size))

    # --- tokens -----------------------------------------------------------------------------
    @_answer_errors
    async def Acquire(self, request, context):
        session = await self._recovered(context)
        f = self.open_files.of(session.client_id, request.file_id)
        answer = asyncio.get_running_loop().create_future()

        def done(grant, error) -> None:
            answer.set_exception(error) if error else answer.set_result(grant)
        pending = self.tokens.request(session.client_id, request.file_id, request.start,
                                      request.end, request.mode, done)
        try:
            grant = await answer
        except asyncio.CancelledError:
            self.tokens.cancel(pending)
            raise
        if session.ended:  # while it waited: an ended session is signed nothing (cluster.py)
            raise SessionEnded(f"client {session.client_id}'s session ended while it waited "
                               "for a token; call pfs_initialize again")
        # Nothing may fail once the grant is numbered: the client must learn of every grant.
        return pb.AcquireReply(start=grant.start, end=grant.end, mode=grant.mode,
                               grant_seq=grant.grant_seq, size=f.size, size_epoch=f.size_epoch,
                               capabilities=self._capabilities(session.client_id, f.node, grant),
                               stale=sorted(self.copies.stale(f.node.node_id)))

    # --- recovery (recovery.py) ------------------------------------------------------------
    async def _recover(self) -> None:
        """The recovery window: waits for the restored sessions to reclaim (at most
        recovery_seconds), ends those that did not as evicted ones are (fenced, and not before
        their clients surely know their leases are over), then lets normal service resume."""
        waiting = len(self.recovery.awaiting)
        log.warning("recovering %d client session(s) recorded before the restart: they have "
                    "%gs to reclaim their open files and tokens; until then no token is "
                    "granted", waiting, self.recovery_seconds)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.recovery.all_back.wait(), self.recovery_seconds)
        missing = self.sessions.awaiting_reclaim()
        endings = [self.sessions.end(client_id, "it did not reclaim its session within the "
                                                f"metaserver's recovery window of "
                                                f"{self.recovery_seconds:g}s", evicted=True)
                   for client_id in missing]
        await asyncio.gather(*[task for task in endings if task is not None])
        self.recovery.over.set()
        log.warning("recovery over: %d of %d session(s) reclaimed, %d evicted and fenced",
                    waiting - len(missing), waiting, len(missing))

    @_answer_errors
    async def Reclaim(self, request, context):
        session = self._session(context)
        if not session.restored or not self.recovery.active:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this session has nothing "
                                "to reclaim: it was not recorded before a restart, or has "
                                "reclaimed already")
        claims = _checked_claims(request)
        # Sizes told are checked against the fileservers, which attach again after a restart.
        give_up = self.clock() + RECLAIM_ATTACH_SECONDS
        while not self.cluster.complete() and self.clock() < give_up:
            await asyncio.sleep(0.1)
        nodes: dict[int, Node] = {}
        stored: dict[int, bool] = {}
        for claim in request.files:
            with contextlib.suppress(OSError):
                nodes[claim.file_id] = node = self.namespace.get(claim.file_id)
                if not node.is_dir and claim.size > node.size:
                    try:
                        stored[claim.file_id] = await self._stored(node, claim.size)
                    except ConnectionError:
                        stored[claim.file_id] = False
        # From here on nothing waits: the window cannot end half-way through this reclaim.
        session = self._session(context)
        if not session.restored or not self.recovery.active:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the recovery window "
                                "ended before this reclaim was done")
        reply = pb.ReclaimReply(files=[
            self._reclaim_file(session.client_id, claim, claims[claim.file_id],
                               nodes.get(claim.file_id), stored.get(claim.file_id, False))
            for claim in request.files])
        session.restored = False
        self.sessions.heard_from(session)
        self.recovery.back(session.client_id)
        refused = sum(1 for f in reply.files if f.refused)
        log.info("client %d reclaimed its session: %d open file(s)%s", session.client_id,
                 len(reply.files) - refused, f", {refused} refused" if refused else "")
        return reply

    def _reclaim_file(self, client_id: int, claim: pb.FileClaim, tokens: list[tuple[int, int, int]],
                      node: Node | None, stored: bool) -> pb.ReclaimedFile:
        """Gives the client back one open file and its tokens, unless the file is gone or
        another client reclaimed conflicting tokens first; then says why not."""
        if node is None or node.is_dir:
            return pb.ReclaimedFile(file_id=claim.file_id, refused=f"file {claim.file_id} no "
                                    "longer exists")
        holder = self.tokens.restore(client_id, node.node_id, tokens)
        if holder is not None:
            return pb.ReclaimedFile(file_id=claim.file_id, refused=(
                f"its tokens conflict with those client {holder} reclaimed"))
        f = self.open_files.open(client_id, node)
        if claim.size > f.size:
            # Bytes in the client's cache (it holds a WRITE token up to them) are provisional;
            # a size it only learned is believed if the fileservers have its last byte.
            if self._believable(client_id, f, claim.size):
                self.open_files.told(f, client_id, claim.size, stored=False)
            elif stored:
                self.open_files.told(f, client_id, claim.size, stored=True)
            else:
                log.warning("client %d reclaimed file %d with size %d, which it could not have "
                            "written and is not stored; the file keeps %d", client_id,
                            node.node_id, claim.size, f.size)
        return pb.ReclaimedFile(
            file_id=node.node_id, size=f.size, size_epoch=f.size_epoch,
            stale=sorted(self.copies.stale(node.node_id)),
            tokens=[pb.ReclaimedToken(start=start, end=end, mode=mode,
                                      capabilities=self._capabilities(
                                          client_id, node, Grant(start, end, mode, 0)))
                    for start, end, mode in tokens])

    def _capabilities(self, client_id: int, node: Node, grant) -> list[bytes]:
        """One capability per stripe column for a grant (pfs/capability.py)."""
        expires = time.time() + CAPABILITY_SECONDS
        ranges = column_ranges(node.block_size, node.stripe_blocks, node.width, grant.start,
                               grant.end)
        return [self.signer.sign(node.node_id, client_id, grant.mode, start, end, expires,
                                 node.copies(column))
                for column, (start, end) in enumerate(ranges)]

    # --- copies ----------------------------------------------------------------------------
    @_answer_errors
    async def ReportMissed(self, request, context):
        """Records a copy's missed (or damaged) bytes before the client counts a write stored
        (copies.py). Believed from a client with the file open: marking a copy stale never
        loses data, it costs a resync."""
        session = self._session(context)
        f = self.open_files.of(session.client_id, request.file_id)
        if request.server not in f.node.servers or f.node.replicas < 2:
            raise ValueError(f"fileserver {request.server} holds no copy of file "
                             f"{request.file_id} that another copy could stand in for")
        if not request.start < request.end <= INFINITY:
            raise ValueError(f"missed range [{request.start}, {request.end}) is empty")
        await self._db(self.copies.missed, request.file_id, request.server, request.start,
                       request.end)
        log.warning("the copy of file %d on fileserver %d missed bytes %d-%d (client %d: "
                    "%.300r): stale until resynced", request.file_id, request.server,
                    request.start, request.end - 1, session.client_id, request.why)
        self.repair.wake()
        return pb.ReportMissedReply()

    async def Scrub(self, request, context):
        """Checks every copy of the files under a path (copies.py, repair.py), streaming
        progress; asks for no session (an operator's tool, as `pfs status`)."""
        await self._recovered()  # (its tokens come after the clients' reclaims)
        try:
            files = self._files_under(components(request.path))
        except OSError as e:
            await context.abort(_STATUS.get(e.errno, grpc.StatusCode.FAILED_PRECONDITION),
                                e.strerror or str(e), ((ERRNO_HEADER, str(e.errno)),))
        totals, unrepairable = None, 0
        try:
            async for totals, node in self.repair.scrub(files):
                path = self.namespace.path_of(node.node_id)
                yield pb.ScrubProgress(files=totals.files, bytes=totals.bytes,
                                       damaged=totals.damaged, current=path,
                                       unrepairable=[path] * (totals.unrepairable > unrepairable))
                unrepairable = totals.unrepairable
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"scrub stopped: {e}",
                                ((ERRNO_HEADER, str(errno.EHOSTDOWN)),))
        yield pb.ScrubProgress(files=totals.files if totals else 0,
                               bytes=totals.bytes if totals else 0,
                               damaged=totals.damaged if totals else 0, done=True)

    def _files_under(self, path: tuple[str, ...]) -> list[Node]:
        """The files at or below `path`, a page of a directory at a time."""
        node = self.namespace.lookup(path)
        if not node.is_dir:
            return [node]
        files, pending = [], [path]
        while pending:
            here, after = pending.pop(), ""
            while page := self.namespace.listdir(here, after, LIST_PAGE):
                for name, child in page:
                    (pending.append(here + (name,)) if child.is_dir else files.append(child))
                after = page[-1][0]
        return files

    # --- durability ------------------------------------------------------------------------
    async def _sync_metadata(self) -> None:
        """Puts committed namespace changes on the disk every second (see namespace.py)."""
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            await self._on_db_thread(self.namespace.sync)


def _checked_claims(request: pb.ReclaimRequest) -> dict[int, list[tuple[int, int, int]]]:
    """Each claimed file's token ranges, once every number is checked (ValueError if not)."""
    claims: dict[int, list[tuple[int, int, int]]] = {}
    if len(request.files) + sum(len(f.tokens) for f in request.files) > MAX_CLAIMS:
        raise ValueError(f"a reclaim names at most {MAX_CLAIMS} files and token ranges")
    for f in request.files:
        if f.file_id in claims:
            raise ValueError(f"file {f.file_id} is claimed twice")
        if f.size > MAX_FILE_SIZE:
            raise ValueError(f"size {f.size} of file {f.file_id} is beyond {MAX_FILE_SIZE}")
        for t in f.tokens:
            if not 0 <= t.start < t.end <= INFINITY or t.mode not in (READ, WRITE):
                raise ValueError(f"token [{t.start}, {t.end}) mode {t.mode} of file "
                                 f"{f.file_id} is not a token")
        claims[f.file_id] = [(t.start, t.end, t.mode) for t in f.tokens]
    return claims


def _fileserver_problem(hello: pb.FileserverHello) -> str | None:
    if not 0 < len(hello.server_uuid) <= 64:
        return "a fileserver's uuid must be 1-64 characters"
    host, sep, port = hello.address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or len(hello.address) > 255:
        return f"a fileserver's address must be host:port, not {brief(hello.address)}"
    return None
