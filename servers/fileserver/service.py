"""The FileServer gRPC servicer (asyncio): checks the caller's session, then runs StripeStore
calls on disk threads and translates their results and failures into messages."""
from __future__ import annotations

import asyncio
import errno
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

import grpc

from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc

from ..rpc import session_of
from .sessions import NotAdmitted, NotServing, SessionTable
from .store import StripeStore

log = logging.getLogger("pfs.fileserver")

#: Disk calls run on this many threads at once.
DISK_THREADS = 16


def _answer_errors(method):
    """Bad requests get INVALID_ARGUMENT, a full disk RESOURCE_EXHAUSTED, other disk trouble
    INTERNAL; refused sessions PERMISSION_DENIED; all with the reason."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except ValueError as e:
            log.info("%s rejected: %s", method.__name__, e)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotAdmitted as e:
            log.info("%s refused: %s", method.__name__, e)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except NotServing as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("%s failed: the disk is full (%s)", method.__name__, e)
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    "the fileserver's disk is full; free space on it")
            log.error("%s failed: %s", method.__name__, e)
            await context.abort(grpc.StatusCode.INTERNAL, f"fileserver disk error: {e}")
    return wrapper


class FileServerService(pb_grpc.FileServerServicer):
    def __init__(self, store: StripeStore, sessions: SessionTable) -> None:
        self.store = store
        self.sessions = sessions
        self._disk = ThreadPoolExecutor(max_workers=DISK_THREADS, thread_name_prefix="disk")

    async def run(self, fn, *args):
        """Runs a store call on a disk thread."""
        return await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)

    @_answer_errors
    async def Read(self, request, context):
        with self.sessions.serving(session_of(context)):
            return pb.ReadReply(data=await self.run(self.store.read, request.file_id,
                                                    request.offset, request.length))

    @_answer_errors
    async def Write(self, request, context):
        with self.sessions.serving(session_of(context)):
            await self.run(self.store.write, request.file_id, request.offset, request.data)
        return pb.WriteReply()

    @_answer_errors
    async def Fsync(self, request, context):
        with self.sessions.serving(session_of(context)):
            await self.run(self.store.fsync, request.file_id)
        return pb.FsyncReply()

    @_answer_errors
    async def Health(self, request, context):
        objects, stored = await self.run(self.store.usage)
        return pb.HealthReply(server_uuid=self.store.uuid, objects=objects, bytes_stored=stored)
