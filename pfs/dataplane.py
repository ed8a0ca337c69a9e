"""Striped I/O: moving a file range between a caller's buffer and the fileservers, in parallel.

The C core splits the range into one contiguous extent per fileserver (docs/design.md) and scatters
or gathers the bytes; every fileserver involved gets its request at once, each from a thread of
that fileserver's own (blocking calls on long-lived threads: a gRPC future would start a thread
per call), so a range over w servers costs about one round trip, not w. Reads and writes are raw
bytes (pfs/wire.py). Writes are write-behind: `write` returns once the bytes are copied into the
requests and the writes go on in the background; they are held, bytes and all, until stored, and
a failed one is sent again by whoever next needs it (pfs/inflight.py says what keeps that
correct); `settle` waits for them. Tokens are the caller's business: this module only moves
bytes.

A fileserver's channel and threads are shared by every Client of the process (pfs/shared.py);
each call carries its own capabilities.
"""
from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import Future
from typing import Callable, Iterator, Protocol

import grpc

from pfs._native import plan_stripes
from pfs._proto import fileserver_pb2 as pb
from pfs._proto import fileserver_pb2_grpc as pb_grpc

from . import capability, errors, shared, wire
from .capability import READ, WRITE, Held
from .inflight import InFlight, Request
from .metadata import Recipe
from .ranges import INFINITY
from .transport import MAX_CHUNK, Credentials
from .workers import Workers

#: Seconds one fileserver call may take before the operation fails with ETIMEDOUT.
CALL_TIMEOUT = 60.0
#: Calls the Clients of one process have in flight to one fileserver at most (Lustre's
#: max_rpcs_in_flight); the threads making them start as calls need them.
RPCS_IN_FLIGHT = 8


class StripedFile(Protocol):
    file_id: int
    name: str
    recipe: Recipe
    held: Held  # its capabilities, sent with every call


#: What a call sends as proof of its token, chosen anew at every try (renewed ones count).
Capabilities = Callable[[], list[bytes]]


class _Server:
    """One fileserver as a process sees it: a channel, its calls, and the threads making them."""

    def __init__(self, index: int, address: str, credentials: Credentials) -> None:
        self.address = address
        self.channel = credentials.channel(address)
        self.read = self.channel.unary_unary(wire.READ_METHOD)  # raw bytes both ways
        self.write = self.channel.unary_unary(wire.WRITE_METHOD)
        self.stub = pb_grpc.FileServerStub(self.channel)
        self.threads = Workers(RPCS_IN_FLIGHT, f"pfs-fs{index}")

    def close(self) -> None:
        self.threads.shutdown()
        self.channel.close()


def _all_of(futures: list[Future]) -> Future:
    """A future of all the futures: their results in order, or the first failure once all are
    done (so that nothing is left running unattended)."""
    combined: Future = Future()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0]:
                return
        failure = next((f.exception() for f in futures if f.exception() is not None), None)
        if failure is not None:
            combined.set_exception(failure)
        else:
            combined.set_result([f.result() for f in futures])
    if not futures:
        combined.set_result([])
    for future in futures:
        future.add_done_callback(one_done)
    return combined


class DataPlane:
    """Talks to the fileservers for one session (every call carries the capabilities of the
    file's tokens, pfs/capability.py); knows their addresses by index.

    A fileserver that is unreachable (restarting, say, perhaps on a new address) is retried for
    up to `retry_seconds`, asking the metaserver for the addresses again (`lookup()`) in between;
    every call is idempotent (reads, and writes of the same bytes at the same offsets). A
    fileserver that refuses the session (the metaserver ended it) is final: `on_fenced(reason)`
    is told, and the call fails with ENOTCONN."""

    def __init__(self, addresses: dict[int, str], credentials: Credentials,
                 retry_seconds: float, lookup: Callable[[], dict[int, str]],
                 on_fenced: Callable[[str], None], write_behind: int) -> None:
        self._addresses = dict(addresses)
        self._credentials = credentials
        self._retry_seconds = retry_seconds
        self._lookup = lookup
        self._on_fenced = on_fenced
        self._servers: dict[int, _Server] = {}  # those this session holds (pfs/shared.py)
        self._holdings = shared.Holdings()
        self._holdings.watch(self)
        self._lock = threading.Lock()
        self._in_flight = InFlight(write_behind, lambda r: self._submit(
            r.server, "write", r.payload, "write", r.capabilities))

    def close(self) -> None:
        with self._lock:
            self._servers.clear()
            self._holdings.release_all()

    # --- reads and writes -------------------------------------------------------------------
    @staticmethod
    def windows(recipe: Recipe, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """Splits a range so that no fileserver gets more than MAX_CHUNK bytes in one call,
        while every window still spans all the servers it can: (offset, length) each."""
        unit = recipe.block_size * recipe.stripe_blocks
        window = (recipe.stripe_width * unit * (MAX_CHUNK // unit)) if unit <= MAX_CHUNK \
            else MAX_CHUNK
        end = offset + length
        while offset < end:
            step = min(window, end - offset)
            yield offset, step
            offset += step

    @staticmethod
    def _plan(recipe: Recipe, offset: int, length: int):
        return plan_stripes(offset, length, recipe.block_size, recipe.stripe_blocks,
                            recipe.stripe_width)

    def read(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        """Fills dst[:length] with file bytes [offset, offset+length), once the writes in flight
        that overlap them are done. The bytes must exist (the caller reads below the file's
        size): a fileserver that does not have them lost them, which is EIO, never zeros."""
        self._in_flight.wait_for(f.file_id, offset, offset + length)
        done = 0
        for start, size in self.windows(f.recipe, offset, length):
            self._read_window(f, start, size, dst[done:done + size])
            done += size

    def _read_window(self, f: StripedFile, offset: int, length: int, dst: memoryview) -> None:
        plan = self._plan(f.recipe, offset, length)
        replies = self._call_all(
            [(f.recipe.servers[e.server], "read",
              wire.read_request(f.file_id, e.local_offset, e.length),
              self._capabilities(f, e.server, e.local_offset, e.local_offset + e.length, READ))
             for e in plan.extents], "read")
        for e, data in zip(plan.extents, replies):
            if len(data) < e.length:
                self._missing(f, offset, length, e, len(data))
        if len(replies) == 1 and len(plan.c_segments()) == 1:  # one piece: no gathering
            dst[:length] = replies[0]
            return
        plan.gather(replies, dst)

    def _missing(self, f: StripedFile, offset: int, length: int, extent, got: int) -> None:
        """A fileserver returned fewer bytes than the file has there: its object is shorter
        than the file says (lost, or wiped). EIO naming the file, the bytes and the server."""
        index = f.recipe.servers[extent.server]
        first = next(s.file_offset + got - (s.local_offset - extent.local_offset)
                     for s in self._plan(f.recipe, offset, length).segments()
                     if s.server == extent.server and
                     s.local_offset + s.length > extent.local_offset + got)
        raise errors.error(errno.EIO, f"fileserver {index} ({self._addresses.get(index)}) does "
                                      f"not have byte {first} of {f.name!r} (and maybe more): "
                                      "its copy of the file is lost or damaged; no zeros are "
                                      "returned in their place")

    def write(self, f: StripedFile, offset: int, src: memoryview) -> None:
        """Stores src as file bytes [offset, offset + len(src)) on the fileservers, in the
        background: returns once src is copied (`settle` waits for the writes). Raises Unstored
        when an earlier write that this one must follow cannot be stored."""
        done = 0
        for start, size in self.windows(f.recipe, offset, len(src)):
            requests = self._requests(f, start, src[done:done + size])
            self._in_flight.write(f.file_id, f.name, start, start + size, requests)
            done += size

    def settle(self, f: StripedFile, start: int = 0, end: int = INFINITY) -> None:
        """Returns once the held writes to [start, end) of the file are stored, sending failed
        ones again; raises Unstored if some are still not."""
        self._in_flight.wait_for(f.file_id, start, end)

    def unstored(self, f: StripedFile) -> list[tuple[int, int]]:
        """The byte ranges of the file written but not stored now (after a failure)."""
        return self._in_flight.unstored(f.file_id)

    def discard(self, f: StripedFile) -> int:
        """Lets go of the file's held writes (it is being deleted); the bytes given up."""
        return self._in_flight.discard(f.file_id)

    def drop_all(self, reason: OSError) -> dict[int, int]:
        """Lets go of every held write (the session is lost: `reason` fails every later call
        that needs them); the bytes lost per file id."""
        return self._in_flight.drop_all(reason)

    def _requests(self, f: StripedFile, offset: int, src: memoryview) -> list[Request]:
        """The requests storing one window (see `windows`), the bytes copied into them."""
        plan = self._plan(f.recipe, offset, len(src))
        segments = plan.segments()
        if len(plan.extents) == len(segments):  # each extent is one slice of src
            pieces = [src[s.file_offset - offset:s.file_offset - offset + s.length]
                      for s in sorted(segments, key=lambda s: s.server)]
        else:
            pieces = plan.scatter(src)
        return [Request(f.recipe.servers[e.server],
                        wire.write_request(f.file_id, e.local_offset, piece),
                        self._capabilities(f, e.server, e.local_offset,
                                           e.local_offset + e.length, WRITE))
                for e, piece in zip(plan.extents, pieces)]

    @staticmethod
    def _capabilities(f: StripedFile, column: int, start: int, end: int,
                      mode: int) -> Capabilities:
        return lambda: f.held.for_call(column, start, end, mode)

    def truncate(self, f: StripedFile, size: int, old_size: int) -> None:
        """Cuts or extends every object of the file, `old_size` bytes long, to its part of a
        file of `size` bytes, zeros past the old end (once its writes in flight are stored:
        none may land past the new end)."""
        self.settle(f)
        lengths, keep = self._lengths(f.recipe, size), self._lengths(f.recipe, old_size)
        self._call_all([(server, "Truncate", pb.TruncateRequest(
                            file_id=f.file_id, length=n, keep=k),
                         self._capabilities(f, column, min(n, k), INFINITY, WRITE))
                        for column, (server, n, k) in enumerate(zip(f.recipe.servers, lengths,
                                                                    keep))], "truncate")

    def _lengths(self, recipe: Recipe, size: int) -> list[int]:
        """Each stripe column's object length for a file of `size` bytes."""
        lengths = [0] * recipe.stripe_width
        if size:
            for extent in self._plan(recipe, 0, size).extents:
                lengths[extent.server] = extent.length
        return lengths

    def fsync(self, f: StripedFile) -> None:
        """Returns once the fileservers have every write to the file so far on disk."""
        self.settle(f)
        self._call_all([(server, "Fsync", pb.FsyncRequest(file_id=f.file_id),
                         self._capabilities(f, column, 0, 0, READ))
                        for column, server in enumerate(f.recipe.servers)], "fsync")

    # --- calls ------------------------------------------------------------------------------
    def _server(self, index: int) -> _Server:
        with self._lock:
            if index not in self._servers:
                if index not in self._addresses:
                    raise errors.error(errno.EIO, f"fileserver {index} is unknown to this "
                                                  "client; re-initialize to learn the cluster")
                address = self._addresses[index]
                self._servers[index] = self._holdings.hold(
                    _server_key(address, self._credentials),
                    lambda: _Server(index, address, self._credentials))
            return self._servers[index]

    def _submit(self, index: int, method: str, request, what: str,
                capabilities: Capabilities) -> Future:
        """Starts one call on a thread of its fileserver."""
        return self._server(index).threads.submit(self._call_retrying, index, method, request,
                                                  what, capabilities)

    def _call_all(self, calls: list[tuple[int, str, object, Capabilities]], what: str) -> list:
        """Makes the calls (fileserver index, method, request, capabilities) at once and waits
        for all of them; the first failure is raised once all are done. A lone call is made
        right here: with nothing to overlap, a hand-off to another thread only adds latency."""
        if len(calls) == 1:
            index, method, request, capabilities = calls[0]
            return [self._call_retrying(index, method, request, what, capabilities)]
        return _all_of([self._submit(index, method, request, what, capabilities)
                        for index, method, request, capabilities in calls]).result()

    def _call_retrying(self, index: int, method: str, request, what: str,
                       capabilities: Capabilities):
        """One call; a fileserver that cannot be reached is tried again until retry_seconds
        have passed, at its new address if it moved."""
        give_up, pause = time.monotonic() + self._retry_seconds, 0.05
        while True:
            server = self._server(index)
            try:
                return self._call(server, index, method, request, what, capabilities())
            except OSError as e:
                if e.errno != errno.EHOSTDOWN or time.monotonic() >= give_up:
                    raise
                if not self._relearn_addresses():
                    time.sleep(min(pause, max(0.0, give_up - time.monotonic())))
                    pause = min(2 * pause, 1.0)

    def _call(self, server: _Server, index: int, method: str, request, what: str,
              capabilities: list[bytes]):
        call = getattr(server, method) if method in ("read", "write") else \
            getattr(server.stub, method)
        try:
            return call(request, timeout=CALL_TIMEOUT,
                        metadata=tuple((capability.HEADER, c) for c in capabilities))
        except grpc.RpcError as e:
            failure = errors.from_rpc(e, f"{what} on fileserver {index} ({server.address})")
            if failure.errno == errno.ENOTCONN:  # the session was fenced: final
                self._on_fenced(failure.strerror)
            raise failure from None

    def _relearn_addresses(self) -> bool:
        """Asks for the fileservers' addresses again; True if any changed."""
        try:
            fresh = self._lookup()
        except OSError:
            return False
        with self._lock:
            changed = {i for i, a in fresh.items() if self._addresses.get(i) != a}
            for index in changed:
                if index in self._servers:
                    self._holdings.release(_server_key(self._servers.pop(index).address,
                                                       self._credentials))
            self._addresses.update(fresh)
        return bool(changed)


def _server_key(address: str, credentials: Credentials) -> tuple:
    """The process's shared channel and threads for the fileserver at `address`."""
    return ("fileserver", address, credentials.identity())
