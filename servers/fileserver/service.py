"""The FileServer gRPC servicer: translates messages into StripeStore calls, and back."""
from __future__ import annotations

import functools
import logging

import grpc

from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc

from .store import StripeStore

log = logging.getLogger("pfs.fileserver")


def _answer_errors(method):
    """Bad requests get INVALID_ARGUMENT, disk trouble INTERNAL; both with the reason."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ValueError as e:
            log.info("%s rejected: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except OSError as e:
            log.error("%s failed: %s", method.__name__, e)
            context.abort(grpc.StatusCode.INTERNAL, f"fileserver disk error: {e}")
    return wrapper


class FileServerService(pb_grpc.FileServerServicer):
    def __init__(self, store: StripeStore) -> None:
        self.store = store

    @_answer_errors
    def Read(self, request, context):
        return pb.ReadReply(data=self.store.read(request.file_id, request.offset, request.length))

    @_answer_errors
    def Write(self, request, context):
        self.store.write(request.file_id, request.offset, request.data)
        return pb.WriteReply()

    @_answer_errors
    def Fsync(self, request, context):
        self.store.fsync(request.file_id)
        return pb.FsyncReply()

    @_answer_errors
    def Delete(self, request, context):
        self.store.delete(request.file_id)
        log.info("deleted the object of file %d", request.file_id)
        return pb.DeleteReply()

    @_answer_errors
    def Health(self, request, context):
        objects, stored = self.store.usage()
        return pb.HealthReply(server_uuid=self.store.uuid, objects=objects, bytes_stored=stored)
