"""Striped I/O: moving a file range between a caller's buffer and the fileservers, in parallel.

The C core splits the range into one contiguous extent per fileserver (SPEC §2) and scatters or
gathers the bytes; every fileserver involved gets its request at once (gRPC futures), so a range
over w servers costs about one round trip, not w. Tokens are the caller's business: this module
only moves bytes.
"""
from __future__ import annotations

import errno
import threading
from typing import Protocol

import grpc

from pfs._native import plan_stripes
from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc

from . import errors
from .metadata import Recipe
from .transport import MAX_CHUNK, Credentials

#: Seconds one fileserver call may take before the operation fails with ETIMEDOUT.
CALL_TIMEOUT = 60.0


class StripedFile(Protocol):
    file_id: int
    recipe: Recipe


class DataPlane:
    """Talks to the fileservers; knows their addresses by index."""

    def __init__(self, addresses: dict[int, str], credentials: Credentials) -> None:
        self._addresses = dict(addresses)
        self._credentials = credentials
        self._stubs: dict[int, pb_grpc.FileServerStub] = {}
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for channel in self._channels:
                channel.close()
            self._channels.clear()
            self._stubs.clear()

    def _stub(self, index: int) -> pb_grpc.FileServerStub:
        with self._lock:
            stub = self._stubs.get(index)
            if stub is None:
                if index not in self._addresses:
                    raise errors.error(errno.EIO, f"fileserver {index} is unknown to this client; "
                                          "re-initialize to learn the cluster again")
                channel = self._credentials.channel(self._addresses[index])
                self._channels.append(channel)
                stub = self._stubs[index] = pb_grpc.FileServerStub(channel)
            return stub

    @staticmethod
    def _windows(recipe: Recipe, offset: int, length: int):
        """Splits a range so that no fileserver gets more than MAX_CHUNK bytes in one call,
        while every window still spans all the servers it can."""
        unit = recipe.block_size * recipe.stripe_blocks
        window = (recipe.stripe_width * unit * (MAX_CHUNK // unit)) if unit <= MAX_CHUNK else MAX_CHUNK
        end = offset + length
        while offset < end:
            step = min(window, end - offset)
            yield offset, step
            offset += step

    def _plan(self, recipe: Recipe, offset: int, length: int):
        return plan_stripes(offset, length, recipe.block_size, recipe.stripe_blocks,
                            recipe.stripe_width)

    def read(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        """Fills dst[:length] with file bytes [offset, offset+length). Bytes the fileservers do
        not have (never written back by a client that died) read as zeros."""
        recipe, file_id, done = f.recipe, f.file_id, 0
        for start, size in self._windows(recipe, offset, length):
            plan = self._plan(recipe, start, size)
            calls = [self._stub(recipe.servers[e.server]).Read.future(
                        pb.ReadRequest(file_id=file_id, offset=e.local_offset, length=e.length),
                        timeout=CALL_TIMEOUT)
                     for e in plan.extents]
            sources = []
            for extent, call in zip(plan.extents, calls):
                data = self._result(call, recipe.servers[extent.server], "read").data
                if len(data) < extent.length:
                    data = data + bytes(extent.length - len(data))
                sources.append(data)
            plan.gather(sources, dst[done:done + size])
            done += size

    def write(self, f: StripedFile, offset: int, src: memoryview) -> None:
        """Stores src as file bytes [offset, offset + len(src)) on the fileservers."""
        recipe, file_id, done = f.recipe, f.file_id, 0
        for start, size in self._windows(recipe, offset, len(src)):
            plan = self._plan(recipe, start, size)
            pieces = plan.scatter(src[done:done + size])
            calls = [self._stub(recipe.servers[e.server]).Write.future(
                        pb.WriteRequest(file_id=file_id, offset=e.local_offset, data=bytes(piece)),
                        timeout=CALL_TIMEOUT)
                     for e, piece in zip(plan.extents, pieces)]
            for extent, call in zip(plan.extents, calls):
                self._result(call, recipe.servers[extent.server], "write")
            done += size

    def fsync(self, f: StripedFile) -> None:
        """Returns once the fileservers have every write to the file so far on disk."""
        calls = [(s, self._stub(s).Fsync.future(pb.FsyncRequest(file_id=f.file_id),
                                                 timeout=CALL_TIMEOUT))
                 for s in f.recipe.servers]
        for server, call in calls:
            self._result(call, server, "fsync")

    def _result(self, call, server: int, what: str):
        try:
            return call.result()
        except grpc.RpcError as e:
            raise errors.from_rpc(e, f"{what} on fileserver {server} "
                                     f"({self._addresses.get(server)})") from None
