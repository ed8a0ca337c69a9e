"""The FileServer gRPC servicer: checks the caller's session, then translates messages into
StripeStore calls, and results and failures back into messages."""
from __future__ import annotations

import errno
import functools
import logging

import grpc

from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc

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

    @_answer_errors
    def Read(self, request, context):
        with self.sessions.serving(session_of(context)):
            return pb.ReadReply(data=self.store.read(request.file_id, request.offset,
                                                     request.length))

    @_answer_errors
    def Write(self, request, context):
        with self.sessions.serving(session_of(context)):
            self.store.write(request.file_id, request.offset, request.data)
        return pb.WriteReply()

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
        return pb.HealthReply(server_uuid=self.store.uuid, objects=objects, bytes_stored=stored)
