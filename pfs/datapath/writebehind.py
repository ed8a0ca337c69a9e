"""Writes held by the client until the fileservers have stored them.

A write returns once its bytes are copied into its requests; the requests go on in the
background, so the next write is prepared while the last is on the wire (write-behind, as
Lustre's client does under max_dirty_mb and max_rpcs_in_flight). What keeps this correct:

- Bytes held never exceed `limit`: a new write waits for older ones to be stored first.
- Anything that reads or writes bytes at the fileservers first waits for the held writes that
  overlap them (`wait_for`), so two writes of one byte never pass each other and a read sees
  every earlier write. Giving up a token, close, fsync and truncate wait for the file's writes.
- A write is held, bytes and all, until every one of its requests is stored. A request that
  fails keeps its bytes: the write is then *unstored*, and whoever next waits for it sends its
  failed requests again. Until one of those tries succeeds, every wait for the write fails with
  `Unstored`, naming the bytes and the cause: the failure is sticky, so no fsync or close can
  report as stored what is not. Only `drop_all` (the session is gone, and with it the right to
  write) lets go of unstored bytes, saying how many were lost; every later call then fails.

Thread-safe.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from pfs.protocol.ranges import INFINITY


@dataclass(eq=False)
class Request:
    """A call storing bytes (on one stripe column, with all its copies): `send(payload)` makes
    it, and is called again with the same payload until it succeeds."""
    payload: bytes
    send: Callable[[bytes], Future]


@dataclass(eq=False)
class _Write:
    file_id: int
    name: str
    start: int
    end: int
    waiting: list[Request]  # not yet stored
    running: int = 0  # of them, on the wire now
    failure: OSError | None = None  # why the last try of a request failed

    @property
    def unstored(self) -> bool:
        return not self.running and bool(self.waiting)


class Unstored(OSError):
    """Written bytes that the fileservers have not stored (yet): `ranges` of file `file_id`."""

    def __init__(self, writes: list[_Write]) -> None:
        cause = writes[0].failure
        ranges = _merged([(w.start, w.end) for w in writes])
        shown = ", ".join(f"{s}-{e - 1}" for s, e in ranges[:3])
        more = f" and {len(ranges) - 3} more ranges" if len(ranges) > 3 else ""
        super().__init__(
            cause.errno if cause is not None and cause.errno else 5,
            f"bytes {shown}{more} of {writes[0].name!r} are not stored: {cause}. The client "
            "keeps them and tries again at the next fsync, close or write that touches them; "
            "they are lost only if the session is")
        self.file_id = writes[0].file_id
        self.ranges = ranges


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


class InFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._changed = threading.Condition()
        self._writes: list[_Write] = []
        self._bytes = 0
        self._dropped: OSError | None = None  # why drop_all let go of everything

    def write(self, file_id: int, name: str, start: int, end: int,
              requests: list[Request]) -> None:
        """Holds the write of [start, end) of the file and starts its requests, once the writes
        it overlaps are stored and there is room; raises Unstored if one of those is not."""
        while True:
            self.wait_for(file_id, start, end)
            with self._changed:
                self._check()
                self._changed.wait_for(lambda: self._room_for(end - start) or all(
                    w.unstored for w in self._writes))
                if self._room_for(end - start):
                    write = _Write(file_id, name, start, end, list(requests))
                    self._writes.append(write)
                    self._bytes += end - start
                    self._start(write)
                    return
                stuck = list(self._writes)  # only unstored writes take the room: try them
            self._retry(stuck)

    def _room_for(self, size: int) -> bool:
        return self._bytes + size <= self.limit or not self._writes

    def wait_for(self, file_id: int, start: int = 0, end: int = INFINITY) -> None:
        """Returns once every held write overlapping [start, end) of the file is stored: waits
        for those on the wire, and sends the failed requests of unstored ones again. Raises
        Unstored, and holds on to them, if that fails again."""
        def overlapping() -> list[_Write]:
            return [w for w in self._writes
                    if w.file_id == file_id and w.start < end and start < w.end]
        with self._changed:
            self._changed.wait_for(lambda: not any(w.running for w in overlapping()))
            self._check()
            unstored = [w for w in overlapping() if w.unstored]
        if unstored:
            self._retry(unstored)

    def _retry(self, writes: list[_Write]) -> None:
        with self._changed:
            for write in writes:
                if write.unstored:
                    self._start(write)
            self._changed.wait_for(lambda: not any(w.running for w in writes))
            self._check()
            failed = [w for w in writes if w.waiting]
        if failed:
            raise Unstored(failed)

    def _check(self) -> None:
        if self._dropped is not None:
            raise self._dropped

    def _start(self, write: _Write) -> None:
        """Sends the write's waiting requests (the lock is held)."""
        for request in list(write.waiting):
            write.running += 1
            try:
                future = request.send(request.payload)
            except OSError as e:
                self._done(write, request, e)
            else:
                future.add_done_callback(
                    lambda f, r=request: self._done(write, r, f.exception()))

    def _done(self, write: _Write, request: Request, failure: BaseException | None) -> None:
        with self._changed:
            write.running -= 1
            if failure is None:
                if request in write.waiting:
                    write.waiting.remove(request)
            else:
                write.failure = failure if isinstance(failure, OSError) else OSError(
                    5, f"{type(failure).__name__}: {failure}")
            if not write.waiting and not write.running and write in self._writes:
                self._writes.remove(write)
                self._bytes -= write.end - write.start
            self._changed.notify_all()

    def unstored(self, file_id: int) -> list[tuple[int, int]]:
        """The byte ranges of the file that are held and not stored now."""
        with self._changed:
            return _merged([(w.start, w.end) for w in self._writes
                            if w.file_id == file_id and w.unstored])

    def discard(self, file_id: int) -> int:
        """Lets go of the file's held writes once none is on the wire (the file is being
        deleted); the bytes given up."""
        with self._changed:
            self._changed.wait_for(lambda: not any(
                w.running for w in self._writes if w.file_id == file_id))
            mine = [w for w in self._writes if w.file_id == file_id]
            for write in mine:
                self._writes.remove(write)
                self._bytes -= write.end - write.start
            self._changed.notify_all()
        return sum(w.end - w.start for w in mine)

    def drop_all(self, reason: OSError) -> dict[int, int]:
        """Lets go of every held write (the session is lost: none may be stored any more), and
        fails every later call with `reason`; returns the bytes each file lost that no
        fileserver is known to have stored."""
        with self._changed:
            self._dropped = reason
            lost: dict[int, int] = {}
            for write in self._writes:
                lost[write.file_id] = lost.get(write.file_id, 0) + write.end - write.start
            self._writes.clear()
            self._bytes = 0
            self._changed.notify_all()
        return lost

