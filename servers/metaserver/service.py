"""The MetaServer gRPC servicer (asyncio): translates messages into calls of the metaserver
(server.py) and back.

Invariant: every number and path of a request is checked before anything changes, and a
domain failure becomes a gRPC status whose message says what to do (`_answer_errors`).

Identity: every call acting for a session names it in its metadata with the session's key;
`_session()` finds it or refuses the call (PERMISSION_DENIED without the right key, ABORTED for
a session that has ended).

Sessions survive a restart (recovery.py): calls that need the state of before (open files,
tokens, sizes) wait for the recovery window to end (`_recovered`).
"""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
import stat

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol.errnos import ERRNO_HEADER
from pfs.protocol.paths import brief, components

from .. import clusterkey
from ..rpc import session_of
from .cluster import AttachRefused
from .layouts import Layout
from .lifecycle import ClusterIncomplete
from .namespace import NewAttributes, Node, StorageFull
from .openfiles import OpenFile
from .recovery import NothingToReclaim, missed_ranges
from .repair import ScrubTotals
from .server import MetaServer
from .sessions import NotYourSession, SessionEnded
from .sessions import Session as ClientSession
from .tokens import Grant, RequestCancelled, SessionGone

log = logging.getLogger("pfs.metaserver")

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
            await _abort_failed(context, e)
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
        except ClusterIncomplete as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except NothingToReclaim as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    return wrapper


async def _abort_failed(context, e: OSError) -> None:
    await context.abort(_STATUS.get(e.errno, grpc.StatusCode.FAILED_PRECONDITION),
                        e.strerror or str(e), ((ERRNO_HEADER, str(e.errno)),))


def _named(context) -> tuple[int, bytes]:
    """The session the call names (client id, key)."""
    named = session_of(context)
    if named is None:
        raise NotYourSession("this call carries no session key; start a session with "
                             "pfs_initialize() first")
    return named


#: Stale copies `pfs status` lists by name (the rest are counted).
STATUS_DEGRADED = 10
#: The longest symlink target (Linux PATH_MAX).
SYMLINK_MAX = 4096
#: An operator's call refused to a caller without the cluster key.
_KEY_NEEDED = "%s needs the cluster key (--cluster-key-file: the metaserver's DATA_DIR/cluster.key)"


class MetaServerService(pb_grpc.MetaServerServicer):
    """The metaserver's gRPC calls, each translated into calls of the metaserver (server.py)."""

    def __init__(self, server: MetaServer) -> None:
        self.server = server

    # --- identity ---------------------------------------------------------------------------
    def _session(self, context) -> ClientSession:
        return self.server.sessions.get(*_named(context))

    def _caller(self, context) -> int | None:
        """The calling session's client id, for a call that may name none."""
        return None if session_of(context) is None else self._session(context).client_id

    async def _recovered(self, context=None) -> ClientSession | None:
        """Waits for the recovery window to end (recovery.py); then the calling session, if the
        call names one (it may have been evicted meanwhile)."""
        session = None if context is None else self._session(context)
        if self.server.recovery.active:
            await self.server.recovery.over.wait()
            session = None if context is None else self._session(context)
        return session

    def _meta(self, node: Node, path: str) -> pb.FileMeta:
        return _file_meta(node, self.server.open_files.get(node.node_id), path)

    # --- cluster ----------------------------------------------------------------------------
    async def _need_cluster_key(self, context, refusal: str) -> None:
        """Refuses a call from anyone without the cluster key (fileservers, operators)."""
        if not clusterkey.proves(self.server.cluster_key, dict(context.invocation_metadata() or ())
                                 .get(clusterkey.ATTACH_HEADER)):
            log.warning("refused %s: it does not hold the cluster key", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)

    async def Attach(self, request_iterator, context):
        await self._need_cluster_key(context, "not a fileserver of this cluster: start it with "
                                              "the metaserver's cluster key (--cluster-key-file)")
        hello = await _hello(request_iterator, context)
        name = hello.hello.name or hello.hello.server_uuid
        try:
            link = await self.server.cluster.attach(hello.hello.server_uuid,
                                                    hello.hello.address, name, hello.hello.boot)
        except (AttachRefused, OSError) as e:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(getattr(e, "strerror", None)
                                                                     or e))
        await self.server.fileserver_attached(link)
        reader = asyncio.get_running_loop().create_task(
            self.server.read_fileserver(link, request_iterator))
        try:
            async for message in self.server.cluster.outgoing(link):
                yield message
        finally:
            reader.cancel()
            self.server.cluster.detach(link)

    async def Status(self, request, context):
        return await _status(self.server)

    @_answer_errors
    async def RemoveMember(self, request, context):
        """An operator's call, allowed to holders of the cluster key only (as Attach)."""
        await self._need_cluster_key(context, _KEY_NEEDED % "removing a member")
        moved = await self.server.membership.remove(request.name)
        return pb.RemoveMemberReply(files_moved=moved,
                                    members=len(self.server.cluster.addresses()))

    async def DrainMember(self, request, context):
        """An operator's call, as RemoveMember; streams the progress."""
        await self._need_cluster_key(context, _KEY_NEEDED % "draining a member")
        try:
            async for moved, files, current in self.server.membership.drain(request.name):
                yield pb.DrainProgress(files=files, moved=moved, current=current,
                                       done=moved == files and not current)
        except OSError as e:
            await _abort_failed(context, e)

    # --- sessions ---------------------------------------------------------------------------
    @_answer_errors
    async def Register(self, request, context):
        server = self.server
        client_id, key = await server.lifecycle.register(
            f"pid {request.pid} on {brief(request.hostname) or '?'} from {context.peer()}")
        return pb.RegisterReply(client_id=client_id, session_key=key,
                                fileservers=await _fileservers(server),
                                lease_seconds=server.sessions.lease_seconds,
                                block_size=server.block_size, stripe_blocks=server.stripe_blocks,
                                replicas=server.replicas)

    async def Sessions(self, request_iterator, context):
        """A client process's stream, shared by its sessions (see sessions.py)."""
        stream = self.server.sessions.open_stream(context.peer())
        reader = asyncio.get_running_loop().create_task(
            self.server.lifecycle.read_stream(stream, request_iterator))
        try:
            async for message in self.server.sessions.outgoing(stream):
                yield message
        finally:
            reader.cancel()
            self.server.sessions.close_stream(stream, "its stream closed")

    @_answer_errors
    async def Finish(self, request, context):
        await self.server.lifecycle.finish(self._session(context))
        return pb.FinishReply()

    # --- namespace --------------------------------------------------------------------------
    @_answer_errors
    async def Create(self, request, context):
        session = self._session(context)
        path = components(request.path)
        node = await self.server.changes.create(session.client_id, path, request.stripe_width,
                                                request.replicas,
                                                _new_attributes(request.attributes))
        return pb.CreateReply(meta=self._meta(node, "/".join(path)))

    @_answer_errors
    async def SetLayout(self, request, context):
        self._session(context)
        wanted = request.layout
        added, dropped = await self.server.changes.set_layout(components(request.path), Layout(
            wanted.stripe_width, wanted.stripe_blocks, wanted.replicas))
        return pb.SetLayoutReply(copies_to_make=added, copies_dropped=dropped)

    @_answer_errors
    async def GetLayout(self, request, context):
        own, effective, source = await self.server.changes.layout_of(components(request.path),
                                                                     request.path)
        return pb.GetLayoutReply(own=_layout(own),
                                 effective=_layout(effective), source="/".join(source or ()),
                                 inherited=source is not None)

    @_answer_errors
    async def Mkdir(self, request, context):
        return pb.MkdirReply(meta=await self._new_node(request, context, "mkdir"))

    @_answer_errors
    async def Symlink(self, request, context):
        return pb.SymlinkReply(meta=await self._new_node(request, context, "symlink",
                                                         _symlink_target))

    @_answer_errors
    async def Mknod(self, request, context):
        return pb.MknodReply(meta=await self._new_node(request, context, "mknod",
                                                       _special_type, _device))

    async def _new_node(self, request, context, kind: str, *arguments):
        """A directory, symlink or special file (the store's `kind`) at request.path, checked
        in order: session, path, the call's `arguments` (checks returning values), attributes."""
        self._session(context)
        path = components(request.path)
        values = [argument(request) for argument in arguments]
        node = await self.server.db(getattr(self.server.namespace, kind), path, *values,
                                    _new_attributes(request.attributes))
        return self._meta(node, "/".join(path))

    @_answer_errors
    async def SetAttr(self, request, context):
        """Of the node at a path, or of a file the caller has open (named or not any more)."""
        client_id = self._session(context).client_id
        changes = {k: getattr(request, k) for k in ("mode", "uid", "gid", "atime", "mtime")
                   if request.HasField(k)}
        _check_mode(changes.get("mode"))
        if request.WhichOneof("file") == "path":
            path = components(request.path)
            node = await self.server.changes.set_attributes(path, **changes)
            return pb.SetAttrReply(meta=self._meta(node, "/".join(path)))
        self.server.open_files.of(client_id, request.file_id)
        node = await self.server.changes.set_attributes(request.file_id, **changes)
        return pb.SetAttrReply(meta=await self._meta_by_id(node))

    @_answer_errors
    async def Rmdir(self, request, context):
        self._session(context)
        await self.server.changes.rmdir(components(request.path))
        return pb.RmdirReply()

    @_answer_errors
    async def Rename(self, request, context):
        await self._recovered(context)
        await self.server.changes.rename(components(request.old_path),
                                         components(request.new_path), request.open_ok)
        return pb.RenameReply()

    @_answer_errors
    async def Open(self, request, context):
        session = await self._recovered(context)
        path = components(request.path)
        if request.mode not in (pb.TOKEN_MODE_UNSPECIFIED, pb.READ, pb.WRITE):
            raise ValueError(f"token mode must be READ or WRITE, not {request.mode}")
        node = await self.server.files.open(session.client_id, path, request.path)
        reply = pb.OpenReply(meta=self._meta(node, "/".join(path)))
        granted = self.server.files.grant_at_open(session, node.node_id, request.mode)
        if granted is not None:  # from here nothing may fail (see Acquire)
            reply.grant.CopyFrom(self._grant_reply(session, *granted))
        reply.held.extend(pb.TokenClaim(start=s, end=e, mode=m) for s, e, m in
                          self.server.tokens.holdings(session.client_id, node.node_id))
        return reply

    @_answer_errors
    async def Close(self, request, context):
        """Idempotent (filecalls.py)."""
        session = await self._recovered(context)
        kept = await self.server.files.close(session, request.file_id, request.size,
                                             request.wrote, request.keep_tokens, request.release,
                                             request.receipts)
        return pb.CloseReply(kept=kept)

    @_answer_errors
    async def Delete(self, request, context):
        await self._recovered(context)
        await self.server.changes.delete(components(request.path), request.path, request.open_ok)
        return pb.DeleteReply()

    @_answer_errors
    async def Stat(self, request, context):
        await self._recovered()  # (a size may be in the cache of a client not back yet)
        if request.WhichOneof("file") == "path":
            caller = self._caller(context)
            path = components(request.path)
            node = await self.server.files.stat(caller, path=path)
            return pb.StatReply(meta=self._meta(node, "/".join(path)))
        node = await self.server.files.stat(self._session(context).client_id,
                                            file_id=request.file_id)
        return pb.StatReply(meta=await self._meta_by_id(node))

    async def _meta_by_id(self, node: Node) -> pb.FileMeta:
        """The metadata of a node reached by its id, with its path now ("": none left)."""
        return self._meta(node, await self.server.read(self.server.namespace.path_of,
                                                       node.node_id))

    @_answer_errors
    async def List(self, request, context):
        path = components(request.path)
        prefix = "/".join(path) + "/" if path else ""
        page, more = await self.server.changes.listing(path, request.after)
        # Files being written: their sizes as they are now.
        await self.server.sizes.glimpse_all((node.node_id for _, node in page),
                                            self._caller(context))
        return pb.ListReply(entries=[self._meta(node, prefix + name) for name, node in page],
                            more=more)

    @_answer_errors
    async def ReportSize(self, request, context):
        session = await self._recovered(context)
        await self.server.files.report_size(session, request.file_id, request.size,
                                            request.receipts)
        return pb.ReportSizeReply()

    @_answer_errors
    async def Truncate(self, request, context):
        session = await self._recovered(context)
        epoch = await self.server.files.truncate(session.client_id, request.file_id,
                                                 request.size)
        return pb.TruncateReply(size_epoch=epoch)

    # --- tokens -----------------------------------------------------------------------------
    @_answer_errors
    async def Acquire(self, request, context):
        session = await self._recovered(context)
        f, grant = await self.server.files.acquire(session, request.file_id, request.start,
                                                   request.end, request.mode)
        # Nothing may fail once the grant is numbered: the client must learn of every grant.
        return self._grant_reply(session, f, grant)

    def _grant_reply(self, session: ClientSession, f: OpenFile, grant: Grant
                     ) -> pb.AcquireReply:
        return pb.AcquireReply(start=grant.start, end=grant.end, mode=grant.mode,
                               grant_seq=grant.grant_seq, size=f.size, size_epoch=f.size_epoch,
                               capabilities=self.server.capabilities(session.client_id, f.node,
                                                                     grant),
                               stale=sorted(self.server.copies.stale(f.node.node_id)),
                               missed=missed_ranges(self.server.copies, f.node.node_id))

    # --- recovery (recovery.py) ------------------------------------------------------------
    @_answer_errors
    async def Reclaim(self, request, context):
        return await self.server.reclaims.reclaim(_named(context), request)

    # --- copies ----------------------------------------------------------------------------
    @_answer_errors
    async def ReportMissed(self, request, context):
        ranges = await self.server.files.report_missed(
            self._session(context), request.file_id, request.server, request.start, request.end,
            request.why)
        return pb.ReportMissedReply(
            stale=sorted({i for i, _, _ in ranges}),
            missed=[pb.MissedRange(server=i, start=start, end=end) for i, start, end in ranges])

    async def Scrub(self, request, context):
        """Checks every copy of the files under a path (copies.py, repair.py), streaming
        progress; asks for no session (an operator's tool, as `pfs status`)."""
        await self._recovered()  # (its tokens come after the clients' reclaims)
        try:
            files = await self.server.read(self.server.changes.files_under,
                                           components(request.path))
        except OSError as e:
            await _abort_failed(context, e)
        totals = ScrubTotals()
        try:
            async for totals, path, new in self.server.repair.scrub_by_path(
                    files, functools.partial(self.server.read, self.server.namespace.path_of)):
                yield pb.ScrubProgress(files=totals.files, bytes=totals.bytes,
                                       damaged=totals.damaged, current=path,
                                       unrepairable=[path] * new)
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"scrub stopped: {e}",
                                ((ERRNO_HEADER, str(errno.EHOSTDOWN)),))
        yield pb.ScrubProgress(files=totals.files, bytes=totals.bytes, damaged=totals.damaged,
                               done=True)

async def _status(server: MetaServer) -> pb.StatusReply:
    """(Every read of the store through MetaServer.read: the loop never waits on etcd.)"""
    degraded, ranges, missed_bytes = await server.read(server.copies.summary)
    active, standbys, epoch = await server.read(server.failover_state)
    stale = await server.read(server.copies.first_stale, STATUS_DEGRADED)
    paths = {f: await server.read(server.namespace.path_of, f) for f, _, _ in stale}
    return pb.StatusReply(active=active, standbys=standbys, epoch=epoch,
                          expected_fileservers=server.cluster.expected,
                          fileservers=await _fileservers(server),
                          sessions=server.sessions.count(),
                          files=await server.read(server.namespace.count_files),
                          block_size=server.block_size,
                          stripe_blocks=server.stripe_blocks, degraded_files=degraded,
                          resync_ranges=ranges, resync_bytes=missed_bytes,
                          replicas=server.replicas, degraded=[
                              pb.DegradedCopy(path=paths[f], fileserver=i, missed_bytes=n)
                              for f, i, n in stale])


def _file_meta(node: Node, f: OpenFile | None, path: str) -> pb.FileMeta:
    """A file's metadata: its size and truncate count those of its open state, if open. A file
    without a path (only the root has none) is an orphan: no link left."""
    return pb.FileMeta(
        file_id=node.node_id, path=path, size=f.size if f else node.size,
        ctime=node.ctime, mtime=node.mtime, is_dir=node.is_dir,
        size_epoch=f.size_epoch if f else 0, mode=node.mode, uid=node.uid, gid=node.gid,
        atime=node.atime, is_symlink=node.is_symlink, symlink_target=node.target or "",
        special_type=node.special or 0, rdev=node.rdev or 0,
        nlink=2 + node.subdirs if node.is_dir else int(bool(path)),
        recipe=pb.Recipe(block_size=node.block_size, stripe_blocks=node.stripe_blocks,
                         stripe_width=node.width, servers=node.servers,
                         replicas=node.replicas) if not node.is_dir else pb.Recipe())


def _layout(layout: Layout) -> pb.Layout:
    return pb.Layout(stripe_width=layout.stripe_width, stripe_blocks=layout.stripe_blocks,
                     replicas=layout.replicas)


#: What Mknod makes (a regular file is Create's, a directory Mkdir's).
SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


def _special_type(request) -> int:
    if request.special_type not in SPECIAL_TYPES:
        raise OSError(errno.EINVAL, f"a special file is a FIFO, socket, character or block device "
                                    f"(stat.S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK), not type "
                                    f"{request.special_type:#o}")
    return request.special_type


def _device(request) -> int | None:
    if request.rdev >= 1 << 63:  # (kept as a signed 64-bit integer)
        raise OSError(errno.EINVAL, f"device number {request.rdev} out of range")
    return request.rdev or None


def _symlink_target(request) -> str:
    if not request.target or len(request.target) > SYMLINK_MAX or "\0" in request.target:
        raise OSError(errno.EINVAL if request.target else errno.ENOENT,
                      f"a symlink's target is 1 to {SYMLINK_MAX} characters, without NUL")
    return request.target


def _new_attributes(a: pb.NewAttributes) -> NewAttributes:
    _check_mode(a.mode)
    return NewAttributes(*(getattr(a, k) if a.HasField(k) else None
                           for k in ("mode", "uid", "gid")))


def _check_mode(mode: int | None) -> None:
    if mode is not None and mode > 0o7777:
        raise OSError(errno.EINVAL, f"mode {mode:o} is more than permission bits (07777)")


async def _fileservers(server: MetaServer) -> list[pb.Fileserver]:
    cluster, members = server.cluster, await server.read(server.namespace.members)
    online = cluster.online()
    return [pb.Fileserver(index=i, address=a, online=i in online,
                          name=members.get(i, ("", 0.0))[0],
                          lost_data_at=members.get(i, ("", 0.0))[1],
                          offline_seconds=0.0 if i in online else cluster.offline_seconds(i),
                          draining=i in cluster.draining)
            for i, a in cluster.addresses().items()]


async def _hello(request_iterator, context) -> pb.FileserverMessage:
    """A fileserver's first message, its hello, once checked (else the call is refused)."""
    hello = await anext(request_iterator, None)
    if hello is None or hello.WhichOneof("body") != "hello":
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a fileserver's stream must "
                                                              "begin with its hello")
    problem = _fileserver_problem(hello.hello)
    if problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
    return hello


def _fileserver_problem(hello: pb.FileserverHello) -> str | None:
    if not 0 < len(hello.server_uuid) <= 64:
        return "a fileserver's uuid must be 1-64 characters"
    host, sep, port = hello.address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 \
            or len(hello.address) > 255:
        return f"a fileserver's address must be host:port, not {brief(hello.address)}"
    return None
