"""The FileServer gRPC servicer: checks the caller's capabilities and session, then translates
messages into StripeStore calls, and results and failures back into messages."""
from __future__ import annotations

import errno
import functools
import logging
import os
import secrets
import threading

import grpc

from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc
from pfs.protocol import capability, wire
from pfs.protocol.capability import READ, WRITE, Signer
from pfs.protocol.errnos import ERRNO_HEADER
from pfs.protocol.ranges import INFINITY
from pfs.protocol.receipts import Notary, incarnation

from .fencing import NotAdmitted, NotServing, SessionTable
from .store import Corrupt, StripeStore

log = logging.getLogger("pfs.fileserver")


class NotPermitted(Exception):
    """The call's capabilities do not cover what it asks (`code`: EACCES, or EKEYEXPIRED when
    they only ran out)."""

    def __init__(self, message: str, code: int = errno.EACCES) -> None:
        super().__init__(message)
        self.code = code


def _abort(context, status: grpc.StatusCode, message: str, code: int) -> None:
    """Ends the call with `status` and its errno in the trailing metadata (the client reads
    it there)."""
    context.set_trailing_metadata(((ERRNO_HEADER, str(code)),))
    context.abort(status, message)


def _answer_errors(method):
    """Bad requests get INVALID_ARGUMENT; calls without the capability they need, and fenced
    sessions, PERMISSION_DENIED (with errno EACCES, EKEYEXPIRED or ENOTCONN, which the client
    tells apart); a full disk RESOURCE_EXHAUSTED, a file too large for the disk EFBIG, other
    disk trouble INTERNAL; all with the reason."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ValueError as e:
            log.info("%s rejected: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotPermitted as e:
            log.info("%s refused: %s", method.__name__, e)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(e), e.code)
        except NotAdmitted as e:
            log.info("%s refused: %s", method.__name__, e)
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(e), errno.ENOTCONN)
        except NotServing as e:  # (EAGAIN: alive, and serving again once back in contact)
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(e), errno.EAGAIN)
        except Corrupt as e:
            log.error("%s refused: %s", method.__name__, e)
            _abort(context, grpc.StatusCode.DATA_LOSS, str(e), errno.EIO)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("%s failed: the disk is full (%s)", method.__name__, e)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "the fileserver's disk is full; free space on it")
            if e.errno == errno.EFBIG:
                _abort(context, grpc.StatusCode.OUT_OF_RANGE, "the file would be larger than "
                       "the fileserver's disk allows", errno.EFBIG)
            log.error("%s failed: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INTERNAL, f"fileserver disk error: {e}")
    return wrapper


#: Reads up to this many bytes land in their thread's scratch buffer (so the THREADS buffers
#: take 64 MiB at most); larger ones, rare (a client's call of more than 8 MiB), get their own.
SCRATCH_BYTES = 2 << 20


class _Scratch(threading.local):
    """Each serving thread's read buffer, grown to the largest read it served."""

    buffer = bytearray()

    def of(self, size: int) -> bytearray | None:
        if size > SCRATCH_BYTES + 2 * wire.CHECKSUM_UNIT:
            return None
        if len(self.buffer) < size:
            self.buffer = bytearray(size)
        return self.buffer


class FileServerService(pb_grpc.FileServerServicer):
    def __init__(self, store: StripeStore, sessions: SessionTable, signer: Signer,
                 notary: Notary) -> None:
        self.store = store
        self.sessions = sessions
        self.signer = signer
        self.notary = notary  # signs the receipts of writes (pfs/protocol/receipts.py)
        self.boot = secrets.token_hex(8)  # this process's: a restart is another incarnation
        self.incarnation = incarnation(store.uuid, self.boot)
        self.index: int | None = None  # ours in the cluster, once the metaserver said
        self._scratch = _Scratch()

    def _client(self, context, file_id: int, start: int, end: int, mode: int) -> int:
        return self._caller(context, file_id, start, end, mode)[0]

    def _caller(self, context, file_id: int, start: int, end: int,
                mode: int) -> tuple[int, float]:
        """The session a call acts for: that of its capabilities, which must cover bytes
        [start, end) of the file's object here in `mode` (NotPermitted otherwise); and when
        the newest of them expires. The numbers are checked first, so a bad request is told
        what is wrong with it."""
        self.store.check(file_id, start, 0 if end == INFINITY else end - start)
        good, expired = [], False
        for key, value in context.invocation_metadata() or ():
            if key != capability.HEADER:
                continue
            try:
                c = self.signer.verify(value)
            except ValueError as e:
                raise NotPermitted(str(e)) from None
            if c.file_id == file_id and self.index in c.servers and c.allows(mode):
                if c.expires > self.sessions.metaserver_time():
                    good.append(c)
                else:
                    expired = True
        clients = {c.client_id for c in good}
        if len(clients) == 1 and capability.covers(good, start, end):
            return clients.pop(), max(c.expires for c in good)
        what = "read" if mode == READ else "write"
        if expired:
            raise NotPermitted(f"the capability to {what} file {file_id} here has expired; ask "
                               "the metaserver for the token again", errno.EKEYEXPIRED)
        raise NotPermitted(f"no capability to {what} bytes {start}-{end - 1} of file "
                           f"{file_id}'s object here: data calls need a token for their range "
                           "(open the file and use it through a PFS client)")

    # --- the raw-bytes data service (pfs/wire.py) -----------------------------------------
    @_answer_errors
    def read(self, request: bytes, context) -> bytes:
        """The bytes are read into this thread's scratch buffer, the reply assembled from it:
        one fresh buffer per read, the reply's (a large one costs its page faults)."""
        file_id, offset, length = wire.parse_read(request)
        with self.sessions.serving(self._client(context, file_id, offset, offset + length,
                                                READ)):
            scratch = self._scratch.of(length + 2 * wire.CHECKSUM_UNIT)  # (length was checked)
            return wire.read_reply(*self.store.read(file_id, offset, length, scratch))

    @_answer_errors
    def write(self, request: bytes, context) -> bytes:
        """Stores the bytes; the reply is their receipt (none before we know our index)."""
        file_id, offset, crcs, data = wire.parse_write(request)
        end = offset + len(data)
        client, expires = self._caller(context, file_id, offset, end, WRITE)
        with self.sessions.serving(client):
            self.store.write(file_id, offset, crcs, data)
        index = self.index
        if index is None or not data:
            return b""
        return self.notary.sign(file_id, index, client, offset, end, expires, self.incarnation)

    def data_handler(self) -> grpc.GenericRpcHandler:
        """The handler of the raw-bytes data service (requests and replies are not decoded)."""
        return grpc.method_handlers_generic_handler(wire.DATA_SERVICE, {
            "Read": grpc.unary_unary_rpc_method_handler(self.read),
            "Write": grpc.unary_unary_rpc_method_handler(self.write)})

    # --- the protobuf service -------------------------------------------------------------

    @_answer_errors
    def Fsync(self, request, context):
        with self.sessions.serving(self._client(context, request.file_id, 0, 0, READ)):
            self.store.fsync(request.file_id)
        return pb.FsyncReply()

    @_answer_errors
    def Truncate(self, request, context):
        self.store.check(request.file_id, max(request.length, request.keep), 0)
        with self.sessions.serving(self._client(context, request.file_id,
                                                min(request.keep, request.length), INFINITY,
                                                WRITE)):
            self.store.truncate(request.file_id, request.length, request.keep)
        return pb.TruncateReply()

    @_answer_errors
    def Checksums(self, request, context):
        end = request.offset + request.length
        with self.sessions.serving(self._client(context, request.file_id, request.offset, end,
                                                READ)):
            start, crcs, length, complete = self.store.checksums(request.file_id,
                                                                 request.offset, request.length)
        return pb.ChecksumsReply(start=start, crcs=crcs.tobytes(), length=length,
                                 complete=complete)

    @_answer_errors
    def Health(self, request, context):
        objects, stored = self.store.usage()
        disk = os.statvfs(self.store.root)
        return pb.HealthReply(server_uuid=self.store.uuid, objects=objects, bytes_stored=stored,
                              disk_total_bytes=disk.f_blocks * disk.f_frsize,
                              disk_free_bytes=disk.f_bavail * disk.f_frsize)
