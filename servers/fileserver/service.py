"""The FileServer gRPC servicer: checks the caller's session, then translates messages into
StripeStore calls, and results and failures back into messages."""
from __future__ import annotations

import errno
import functools
import logging
import os

import grpc

from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc
from pfs import wire

from ..rpc import session_of
from .sessions import NotAdmitted, NotServing, SessionTable
from .store import StripeStore

log = logging.getLogger("pfs.fileserver")


def _answer_errors(method):
    """Bad requests get INVALID_ARGUMENT, a full disk RESOURCE_EXHAUSTED, other disk trouble
    INTERNAL; refused sessions PERMISSION_DENIED; all with the reason."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ValueError as e:
            log.info("%s rejected: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotAdmitted as e:
            log.info("%s refused: %s", method.__name__, e)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except NotServing as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("%s failed: the disk is full (%s)", method.__name__, e)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              "the fileserver's disk is full; free space on it")
            log.error("%s failed: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INTERNAL, f"fileserver disk error: {e}")
    return wrapper


class FileServerService(pb_grpc.FileServerServicer):
    def __init__(self, store: StripeStore, sessions: SessionTable) -> None:
        self.store = store
        self.sessions = sessions

    # --- the raw-bytes data service (pfs/wire.py) -----------------------------------------
    @_answer_errors
    def read(self, request: bytes, context) -> bytes:
        file_id, offset, length = wire.parse_read(request)
        with self.sessions.serving(session_of(context)):
            return self.store.read(file_id, offset, length)

    @_answer_errors
    def write(self, request: bytes, context) -> bytes:
        file_id, offset, data = wire.parse_write(request)
        with self.sessions.serving(session_of(context)):
            self.store.write(file_id, offset, data)
        return b""

    def data_handler(self) -> grpc.GenericRpcHandler:
        """The handler of the raw-bytes data service (requests and replies are not decoded)."""
        return grpc.method_handlers_generic_handler(wire.DATA_SERVICE, {
            "Read": grpc.unary_unary_rpc_method_handler(self.read),
            "Write": grpc.unary_unary_rpc_method_handler(self.write)})

    # --- the protobuf service -------------------------------------------------------------

    @_answer_errors
    def Fsync(self, request, context):
        with self.sessions.serving(session_of(context)):
            self.store.fsync(request.file_id)
        return pb.FsyncReply()

    @_answer_errors
    def Truncate(self, request, context):
        with self.sessions.serving(session_of(context)):
            self.store.truncate(request.file_id, request.length)
        return pb.TruncateReply()

    @_answer_errors
    def Health(self, request, context):
        objects, stored = self.store.usage()
        disk = os.statvfs(self.store.root)
        return pb.HealthReply(server_uuid=self.store.uuid, objects=objects, bytes_stored=stored,
                              disk_total_bytes=disk.f_blocks * disk.f_frsize,
                              disk_free_bytes=disk.f_bavail * disk.f_frsize)
