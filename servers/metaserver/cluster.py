"""Which fileservers the cluster has, which are online, and where new files are striped.

A fileserver is online while its heartbeats keep arriving; its index is stable across restarts
(the namespace keeps it by the fileserver's uuid), so recipes stay valid.
"""
from __future__ import annotations

import itertools
import threading
import time

from .namespace import Namespace

HEARTBEAT_SECONDS = 1.0
#: Missing this many heartbeats in a row makes a fileserver offline.
MISSED_HEARTBEATS = 5


class Cluster:
    def __init__(self, namespace: Namespace, expected_fileservers: int) -> None:
        self.namespace = namespace
        self.expected = expected_fileservers
        self._lock = threading.Lock()
        self._last_heartbeat: dict[int, float] = {}
        self._placement = itertools.count()

    def heartbeat(self, uuid: str, address: str) -> int:
        index = self.namespace.register_fileserver(uuid, address)
        with self._lock:
            self._last_heartbeat[index] = time.monotonic()
        return index

    def online(self) -> set[int]:
        deadline = time.monotonic() - HEARTBEAT_SECONDS * MISSED_HEARTBEATS
        with self._lock:
            return {i for i, t in self._last_heartbeat.items() if t >= deadline}

    def shortfall(self) -> str | None:
        """Why clients cannot start now, or None when enough fileservers are online."""
        online = len(self.online())
        if online < self.expected:
            return (f"only {online} of {self.expected} fileservers are online; start the missing "
                    "ones (or wait for them to register) and try again")
        return None

    def place(self, width: int) -> list[int]:
        """The servers of a new file: `width` consecutive online servers, starting one further
        along for each file, so that files spread evenly."""
        online = sorted(self.online())
        if not 1 <= width <= len(online):
            raise ValueError(f"stripe_width must be between 1 and the {len(online)} online "
                             f"fileservers, got {width}")
        first = next(self._placement) % len(online)
        return [online[(first + k) % len(online)] for k in range(width)]
