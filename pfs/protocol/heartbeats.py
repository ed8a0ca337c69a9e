"""A holder never believes its lease to last longer than the metaserver does: heartbeats up a
stream and the lease they renew, for a client's session and a fileserver's attachment alike.

A lease runs from when an acknowledged heartbeat was *sent*, not from when its acknowledgement
arrived: a holder never believes its lease to last longer than the metaserver does.
"""
from __future__ import annotations

import itertools
import queue
import threading
import time
from typing import Iterator

END = object()  # put in an outbox to end the stream


class Heartbeats:
    """The send times of heartbeats not yet acknowledged (sent from one thread, acknowledged
    from another)."""

    def __init__(self) -> None:
        self._seqs = itertools.count(1)
        self._sent: dict[int, float] = {}
        self._lock = threading.Lock()

    def send(self) -> int:
        """The number of a heartbeat being sent now."""
        with self._lock:
            seq = next(self._seqs)
            self._sent[seq] = time.monotonic()
            return seq

    def acknowledged(self, seq: int) -> float | None:
        """When heartbeat `seq` was sent (None if it is unknown); older ones, never
        acknowledged, are forgotten."""
        with self._lock:
            for old in [s for s in self._sent if s < seq]:
                del self._sent[old]
            return self._sent.pop(seq, None)


def messages_for(outbox: "queue.Queue[object]", seconds: float) -> Iterator[object]:
    """Yields what is put in `outbox` during the next `seconds` (until the next heartbeat is
    due); returns True if END was put: the stream is to end."""
    deadline = time.monotonic() + seconds
    while (wait := deadline - time.monotonic()) > 0:
        try:
            message = outbox.get(timeout=wait)
        except queue.Empty:
            break
        if message is END:
            return True
        yield message
    return False
