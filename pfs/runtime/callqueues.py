"""Calls grouped by key (a session): each key's calls start in the order submitted, at most
`per_key` of them at once, on threads shared by every key.

The threads come from a Workers pool without a fixed size: a call that finds every thread busy
gets a new one, and idle threads end after a while. So one key whose calls are slow (a Client
whose revocations wait for its lock, or for a fileserver) holds at most `per_key` threads and
never delays another key's calls, while a process whose sessions are quiet has no thread here
at all.
"""
from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Hashable

from .threads import Workers

log = logging.getLogger("pfs.client")

#: Seconds an idle thread of the pool waits for work before it ends.
IDLE_SECONDS = 10.0


class Lanes:
    def __init__(self, per_key: int, name: str) -> None:
        self._per_key = per_key
        self._workers = Workers(None, name, idle_seconds=IDLE_SECONDS)
        self._lock = threading.Lock()
        self._running: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, collections.deque] = {}

    def submit(self, key: Hashable, fn: Callable[..., Any], *args: Any) -> None:
        """Runs fn(*args) once the key's earlier calls have started and fewer than `per_key`
        of them run. Its result is dropped: fn handles its own failures."""
        with self._lock:
            if self._running.get(key, 0) >= self._per_key:
                self._waiting.setdefault(key, collections.deque()).append((fn, args))
                return
            self._running[key] = self._running.get(key, 0) + 1
        self._workers.submit(self._run, key, fn, args)

    def _run(self, key: Hashable, fn: Callable[..., Any], args: tuple) -> None:
        while True:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the key's next calls must still run
                log.exception("%r failed", fn)
            with self._lock:
                waiting = self._waiting.get(key)
                if not waiting:
                    self._running[key] -= 1
                    if not self._running[key]:
                        del self._running[key]
                    return
                fn, args = waiting.popleft()
                if not waiting:
                    del self._waiting[key]

    def close(self) -> None:
        self._workers.shutdown()
