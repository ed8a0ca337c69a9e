"""Striped I/O: moving a file range between a caller's buffer and the fileservers, in parallel.

The C core splits the range into one contiguous extent per fileserver (docs/design.md) and scatters or
gathers the bytes; every fileserver involved gets its request at once (gRPC futures), so a range
over w servers costs about one round trip, not w. Tokens are the caller's business: this module
only moves bytes.
"""
from __future__ import annotations

import errno
import threading
import time
from typing import Callable, Protocol

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
    """Talks to the fileservers for one session (every call carries its key); knows their
    addresses by index.

    A fileserver that is unreachable (restarting, say, perhaps on a new address) is retried for
    up to `retry_seconds`, asking the metaserver for the addresses again (`lookup()`) in between;
    every piece is idempotent (reads, and writes of the same bytes at the same offsets). A
    fileserver that refuses the session (the metaserver ended it) is final: `on_fenced(reason)`
    is told, and the call fails with ENOTCONN."""

    def __init__(self, addresses: dict[int, str], credentials: Credentials,
                 metadata: tuple[tuple[str, str], ...], retry_seconds: float,
                 lookup: Callable[[], dict[int, str]],
                 on_fenced: Callable[[str], None]) -> None:
        self._addresses = dict(addresses)
        self._credentials = credentials
        self._metadata = metadata
        self._retry_seconds = retry_seconds
        self._lookup = lookup
        self._on_fenced = on_fenced
        self._stubs: dict[int, tuple[grpc.Channel, pb_grpc.FileServerStub]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for channel, _ in self._stubs.values():
                channel.close()
            self._stubs.clear()

    def _stub(self, index: int) -> pb_grpc.FileServerStub:
        with self._lock:
            if index not in self._stubs:
                if index not in self._addresses:
                    raise errors.error(errno.EIO, f"fileserver {index} is unknown to this "
                                                  "client; re-initialize to learn the cluster")
                channel = self._credentials.channel(self._addresses[index])
                self._stubs[index] = (channel, pb_grpc.FileServerStub(channel))
            return self._stubs[index][1]

    def _retrying(self, piece: Callable[[], None]) -> None:
        give_up, pause = time.monotonic() + self._retry_seconds, 0.05
        while True:
            try:
                return piece()
            except OSError as e:
                if e.errno != errno.EHOSTDOWN or time.monotonic() >= give_up:
                    raise
                if not self._relearn_addresses():
                    time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
                    pause = min(2 * pause, 1.0)

    def _relearn_addresses(self) -> bool:
        """Asks for the fileservers' addresses again; True if any changed."""
        try:
            fresh = self._lookup()
        except OSError:
            return False
        with self._lock:
            changed = {i for i, a in fresh.items() if self._addresses.get(i) != a}
            for index in changed:
                if index in self._stubs:
                    self._stubs.pop(index)[0].close()
            self._addresses.update(fresh)
        return bool(changed)

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
        done = 0
        for start, size in self._windows(f.recipe, offset, length):
            self._retrying(lambda: self._read_window(f, start, size, dst[done:done + size]))
            done += size

    def _read_window(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        plan = self._plan(f.recipe, offset, length)
        calls = [self._stub(f.recipe.servers[e.server]).Read.future(
                    pb.ReadRequest(file_id=f.file_id, offset=e.local_offset, length=e.length),
                    timeout=CALL_TIMEOUT, metadata=self._metadata)
                 for e in plan.extents]
        sources = []
        for extent, call in zip(plan.extents, calls):
            data = self._result(call, f.recipe.servers[extent.server], "read").data
            if len(data) < extent.length:
                data = data + bytes(extent.length - len(data))
            sources.append(data)
        plan.gather(sources, dst)

    def write(self, f: StripedFile, offset: int, src: memoryview) -> None:
        """Stores src as file bytes [offset, offset + len(src)) on the fileservers."""
        done = 0
        for start, size in self._windows(f.recipe, offset, len(src)):
            self._retrying(lambda: self._write_window(f, start, src[done:done + size]))
            done += size

    def _write_window(self, f: StripedFile, offset: int, src: memoryview) -> None:
        plan = self._plan(f.recipe, offset, len(src))
        calls = [self._stub(f.recipe.servers[e.server]).Write.future(
                    pb.WriteRequest(file_id=f.file_id, offset=e.local_offset, data=bytes(piece)),
                    timeout=CALL_TIMEOUT, metadata=self._metadata)
                 for e, piece in zip(plan.extents, plan.scatter(src))]
        for extent, call in zip(plan.extents, calls):
            self._result(call, f.recipe.servers[extent.server], "write")

    def truncate(self, f: StripedFile, size: int) -> None:
        """Cuts or extends every object of the file to its part of a file of `size` bytes."""
        lengths = [0] * f.recipe.stripe_width
        if size:
            for extent in self._plan(f.recipe, 0, size).extents:
                lengths[extent.server] = extent.length

        def truncate_all() -> None:
            calls = [(s, self._stub(s).Truncate.future(
                         pb.TruncateRequest(file_id=f.file_id, length=length),
                         timeout=CALL_TIMEOUT, metadata=self._metadata))
                     for s, length in zip(f.recipe.servers, lengths)]
            for server, call in calls:
                self._result(call, server, "truncate")
        self._retrying(truncate_all)

    def fsync(self, f: StripedFile) -> None:
        """Returns once the fileservers have every write to the file so far on disk."""
        def fsync_all() -> None:
            calls = [(s, self._stub(s).Fsync.future(pb.FsyncRequest(file_id=f.file_id),
                                                     timeout=CALL_TIMEOUT, metadata=self._metadata))
                     for s in f.recipe.servers]
            for server, call in calls:
                self._result(call, server, "fsync")
        self._retrying(fsync_all)

    def _result(self, call, server: int, what: str):
        try:
            return call.result()
        except grpc.RpcError as e:
            where = f"{what} on fileserver {server} ({self._addresses.get(server)})"
            if e.code() == grpc.StatusCode.PERMISSION_DENIED:
                reason = f"{where} was refused: {e.details()}"
                self._on_fenced(reason)
                raise errors.error(errno.ENOTCONN, reason) from None
            raise errors.from_rpc(e, where) from None
