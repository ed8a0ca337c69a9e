"""Log lines that repeat, merged: the first of a kind is logged at once, the others of that kind
within a window are counted, and one line with their count closes the window.

Invariant: nothing is dropped silently: every line held back is counted in the summary, which
is logged when the window ends (by a timer, so a burst that stops still gets its count). Why:
a fileserver away for half a second made every write of every client report missed bytes, 162
warnings saying one thing; an operator needs the first and the count.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Hashable

#: Seconds during which lines of one kind are counted rather than logged.
WINDOW_SECONDS = 10.0


@dataclass
class _Burst:
    level: int
    summary: str  # what the held-back lines were, for the closing line
    until: float
    held: int = 0
    timer: threading.Timer | None = None


class Repeats:
    """`repeats.log(level, kind, summary, msg, *args)`: logs `msg % args` unless a line of
    `kind` was logged within the window; then counts it, and at the window's end logs
    "<summary>: N more in the last W s". Thread-safe."""

    def __init__(self, logger: logging.Logger, window: float = WINDOW_SECONDS) -> None:
        self._logger = logger
        self._window = window
        self._bursts: dict[Hashable, _Burst] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: Hashable, summary: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            burst = self._bursts.get(kind)
            if burst is not None and now < burst.until:
                burst.held += 1
                if burst.timer is None:
                    burst.timer = threading.Timer(burst.until - now, self._close, (kind, burst))
                    burst.timer.daemon = True
                    burst.timer.start()
                return
            self._bursts[kind] = _Burst(level, summary, now + self._window)
        self._logger.log(level, msg, *args)

    def _close(self, kind: Hashable, burst: _Burst) -> None:
        with self._lock:
            if self._bursts.get(kind) is burst:
                del self._bursts[kind]
        self._logger.log(burst.level, "%s: %d more like it in the last %gs", burst.summary,
                         burst.held, self._window)
