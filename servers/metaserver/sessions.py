"""Client sessions: their ids, their message streams, their leases and their open files.

A session starts at Register and lives while its client-opened stream does. Every message from
the client renews the lease; a session ends at once when its stream breaks, when the client
finishes, when it is evicted (a revocation it never acknowledged), or when its lease runs out
(a client cut off without a broken stream). Ending a session calls `on_end`, which releases its
tokens and open files, so the others proceed.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pfs._proto import metaserver_pb2 as pb

log = logging.getLogger("pfs.metaserver.sessions")

_END = object()  # put in an outbox to close the stream


@dataclass(eq=False)
class Session:
    client_id: int
    description: str
    last_seen: float = field(default_factory=time.monotonic)
    outbox: "queue.Queue[object]" = field(default_factory=queue.Queue)
    open_files: set[int] = field(default_factory=set)
    revoked_files: dict[int, int] = field(default_factory=dict)  # revoke id -> file id
    ended: bool = False


class SessionEnded(Exception):
    pass


class Sessions:
    def __init__(self, lease_seconds: float, on_end: Callable[[int], None]) -> None:
        self.lease_seconds = lease_seconds
        self._on_end = on_end
        self._lock = threading.Lock()
        self._sessions: dict[int, Session] = {}
        self._size_replies: dict[int, tuple[threading.Event, list[int]]] = {}
        self._query_ids = itertools.count(1)
        self._stop = threading.Event()
        threading.Thread(target=self._expire_leases, name="leases", daemon=True).start()

    def stop(self) -> None:
        """Ends every session (closing their streams) and the lease checker."""
        self._stop.set()
        with self._lock:
            clients = list(self._sessions)
        for client_id in clients:
            self.end(client_id, "the metaserver is stopping")

    def start(self, client_id: int, description: str) -> Session:
        session = Session(client_id, description)
        with self._lock:
            self._sessions[client_id] = session
        log.info("client %d started a session (%s)", client_id, description)
        return session

    def get(self, client_id: int) -> Session:
        with self._lock:
            session = self._sessions.get(client_id)
        if session is None or session.ended:
            raise SessionEnded(f"client {client_id} has no session (it ended or never began); "
                               "call pfs_initialize again")
        return session

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def openers(self, file_id: int) -> list[int]:
        with self._lock:
            return [c for c, s in self._sessions.items() if file_id in s.open_files]

    def end(self, client_id: int, reason: str) -> None:
        with self._lock:
            session = self._sessions.pop(client_id, None)
            if session is None:
                return
            session.ended = True
        session.outbox.put(_END)
        log.info("client %d session ended: %s", client_id, reason)
        self._on_end(client_id)

    def evict(self, client_id: int, reason: str) -> None:
        """End a session from a context that must not block (the token manager's lock)."""
        threading.Thread(target=self.end, args=(client_id, reason), daemon=True).start()

    # --- the stream -------------------------------------------------------------------------
    def send(self, client_id: int, message: pb.ServerMessage) -> None:
        with self._lock:
            session = self._sessions.get(client_id)
        if session is not None:
            session.outbox.put(message)

    def outgoing(self, session: Session):
        """The messages to stream to the client, until the session ends."""
        yield pb.ServerMessage(started=pb.SessionStarted(client_id=session.client_id))
        while True:
            message = session.outbox.get()
            if message is _END:
                return
            yield message

    def heard_from(self, session: Session) -> None:
        session.last_seen = time.monotonic()

    def _expire_leases(self) -> None:
        while not self._stop.wait(min(0.5, self.lease_seconds / 4)):
            deadline = time.monotonic() - self.lease_seconds
            with self._lock:
                expired = [c for c, s in self._sessions.items() if s.last_seen < deadline]
            for client_id in expired:
                self.end(client_id, f"lease of {self.lease_seconds:g}s ran out")

    # --- size queries (glimpses) ------------------------------------------------------------
    def query_size(self, client_id: int, file_id: int, timeout: float) -> int | None:
        """Asks a client how large it knows the file to be; None if it does not answer."""
        query_id = next(self._query_ids)
        answered, answer = threading.Event(), []
        with self._lock:
            self._size_replies[query_id] = (answered, answer)
        try:
            self.send(client_id, pb.ServerMessage(
                size_query=pb.SizeQuery(query_id=query_id, file_id=file_id)))
            answered.wait(timeout)
            return answer[0] if answer else None
        finally:
            with self._lock:
                del self._size_replies[query_id]

    def size_answered(self, query_id: int, size: int) -> None:
        with self._lock:
            waiting = self._size_replies.get(query_id)
        if waiting:
            waiting[1].append(size)
            waiting[0].set()
