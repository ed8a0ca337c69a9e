"""A set of daemon threads running submitted calls, each returning a Future: a call submitted
is run, even while the interpreter exits, and costs a thread only if none is idle.

Threads start only when a call finds none idle, up to `count` (None: as many as calls run at
once), so a pool shared by many Clients costs threads only for the work it has; with
`idle_seconds`, a thread idle that long ends (the pool shrinks back after a burst).

concurrent.futures' pools refuse new work once the interpreter begins to exit, but a program's
files left open are written back exactly then (an exit closes its files, as POSIX programs'
do): these threads keep working until the interpreter is gone.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class Workers:
    def __init__(self, count: int | None, name: str, idle_seconds: float | None = None) -> None:
        self._jobs: "queue.SimpleQueue[tuple[Future, Callable, tuple] | None]" = \
            queue.SimpleQueue()
        self._count = count
        self._name = name
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._threads = 0  # running
        self._idle = 0  # of them, waiting for a call
        self._queued = 0  # calls submitted and not yet taken
        self._started = 0  # ever (names the threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and (self._count is None
                                                   or self._threads < self._count)
            if start:
                self._threads += 1
                self._started += 1
                name = f"{self._name}-{self._started}"
        self._jobs.put((future, fn, args))
        if start:
            threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def close(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """The threads stop once the calls already submitted are done."""
        with self._lock:
            count = self._threads
        for _ in range(count):
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=self._idle_seconds)
            except queue.Empty:
                job = ()
            with self._lock:
                self._idle -= 1
                if job == () and self._queued > self._idle:
                    continue  # a call is on its way to us
                if not job:  # idle too long, or shut down
                    self._threads -= 1
                    return
                self._queued -= 1
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                    future.set_exception(e)
            del future, fn, args, job  # (a finished call keeps nothing alive)
