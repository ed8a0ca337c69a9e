"""Writes in flight: byte ranges sent to the fileservers and not yet acknowledged.

A write returns once its bytes are copied into the requests; the requests go on in the
background, so the next write is prepared while the last is on the wire (write-behind, as
Lustre's client does under max_dirty_mb and max_rpcs_in_flight). What keeps this correct:

- Bytes in flight never exceed `limit`: a new write waits for the oldest ones first.
- Anything that reads or writes bytes at the fileservers first waits for the writes in flight
  that overlap them (`wait_for`), so two writes of one byte never pass each other and a read
  sees every earlier write. Giving up a token, closing, fsync and truncate wait for the writes in
  flight on the file first.
- A write that fails is remembered on its file; the next `wait_for` of that file raises it, and
  so close and fsync report it (as write-behind file systems do). Its bytes are not stored.

Thread-safe.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from .ranges import INFINITY


@dataclass(eq=False)
class _Write:
    file_id: int
    start: int
    end: int


class InFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._changed = threading.Condition()
        self._writes: list[_Write] = []
        self._bytes = 0
        self._failures: dict[int, OSError] = {}  # file id -> the first write that failed

    def send(self, file_id: int, start: int, end: int,
             start_write: Callable[[], Future]) -> None:
        """Waits until there is room (and for earlier writes overlapping [start, end)), then
        starts the write and returns; `start_write()` returns a future of its completion."""
        self.wait_for(file_id, start, end)
        with self._changed:
            self._changed.wait_for(lambda: self._bytes + (end - start) <= self.limit
                                   or not self._writes)
            write = _Write(file_id, start, end)
            self._writes.append(write)
            self._bytes += end - start
        try:
            future = start_write()
        except BaseException as e:
            self._finished(write, e if isinstance(e, OSError) else None)
            raise
        future.add_done_callback(lambda f: self._finished(write, f.exception()))

    def _finished(self, write: _Write, failure: BaseException | None) -> None:
        with self._changed:
            self._writes.remove(write)
            self._bytes -= write.end - write.start
            if failure is not None:
                self._failures.setdefault(write.file_id, failure if isinstance(failure, OSError)
                                          else OSError(str(failure)))
            self._changed.notify_all()

    def wait_for(self, file_id: int, start: int = 0, end: int = INFINITY) -> None:
        """Returns once no write overlapping [start, end) of the file is in flight; raises the
        file's failed write, if any (once)."""
        with self._changed:
            self._changed.wait_for(lambda: not any(
                w.file_id == file_id and w.start < end and start < w.end for w in self._writes))
            failure = self._failures.pop(file_id, None)
        if failure is not None:
            raise failure

    def forget(self, file_id: int) -> None:
        """Drops the file's failure, if any (the file was closed or dropped without it)."""
        with self._changed:
            self._failures.pop(file_id, None)
