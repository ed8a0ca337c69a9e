"""A fixed set of daemon threads running submitted calls, each returning a Future.

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
    def __init__(self, count: int, name: str) -> None:
        self._jobs: "queue.SimpleQueue[tuple[Future, Callable, tuple] | None]" = \
            queue.SimpleQueue()
        self._count = count
        for k in range(count):
            threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """The threads stop once the calls already submitted are done."""
        for _ in range(self._count):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - handed to whoever waits
                    future.set_exception(e)
