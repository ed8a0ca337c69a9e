"""Client sessions: their ids and keys, their message streams and their leases.

A session starts at Register and lives while its client-opened stream does. It is bound to a
random key issued at registration: a call acts for a session only if it carries that key
(compared in constant time), so no client can act for another by naming its id.

Every message from the client renews the lease; each heartbeat is acknowledged, and the client
serves from its cache only until its last acknowledged heartbeat's send time plus the lease. A
session ends at once when its stream breaks or the client finishes, when its lease runs out (a
client cut off without a broken stream), or when it is evicted (a revocation it never
acknowledged). Ending a session calls `on_end(session, evicted)`, which fences the session and
releases its tokens and open files, so the others proceed. An evicted client may still believe
its lease valid: `lease_end(session)` says when it surely knows better.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from pfs._proto import metaserver_pb2 as pb
from pfs.transport import SESSION_KEY_BYTES

from .questions import Questions

log = logging.getLogger("pfs.metaserver.sessions")

_END = object()  # put in an outbox to close the stream


class SessionEnded(Exception):
    """The session named by a call has ended (or never began)."""


class NotYourSession(Exception):
    """A call names a live session without its key."""


@dataclass(eq=False)
class Session:
    client_id: int
    key: bytes
    last_seen: float = field(default_factory=time.monotonic)
    last_acked: float = field(default_factory=time.monotonic)  # last heartbeat we acknowledged
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    # revoke id -> (file id, whether it takes the file's tail)
    revoked_files: dict[int, tuple[int, bool]] = field(default_factory=dict)
    streaming: bool = False
    ended: bool = False


class Sessions:
    def __init__(self, lease_seconds: float,
                 on_end: Callable[[Session, bool], Awaitable[None]]) -> None:
        self.lease_seconds = lease_seconds
        self._on_end = on_end
        self._sessions: dict[int, Session] = {}
        self.sizes = Questions()  # file sizes asked of clients (glimpses)
        self._ending: set[asyncio.Task] = set()

    async def stop(self) -> None:
        """Ends every session (closing their streams)."""
        for client_id in list(self._sessions):
            self.end(client_id, "the metaserver is stopping")
        if self._ending:
            await asyncio.wait(self._ending, timeout=5)

    def start(self, client_id: int, description: str) -> Session:
        session = Session(client_id, secrets.token_bytes(SESSION_KEY_BYTES))
        self._sessions[client_id] = session
        log.info("client %d started a session (%s)", client_id, description)
        return session

    def get(self, client_id: int, key: bytes | None) -> Session:
        """The live session `client_id`, if `key` is its key."""
        session = self._sessions.get(client_id)
        if session is None:  # ended sessions leave the table at once
            raise SessionEnded(f"client {client_id} has no session (it ended or never began); "
                               "call pfs_initialize again")
        if key is None or not hmac.compare_digest(key, session.key):
            raise NotYourSession(f"this call does not carry the key of client {client_id}'s "
                                 "session")
        return session

    def count(self) -> int:
        return len(self._sessions)

    def end(self, client_id: int, reason: str, evicted: bool = False) -> asyncio.Task | None:
        """Ends the session now; fencing and releasing its tokens follow in the task returned
        (None when the session had ended already)."""
        session = self._sessions.pop(client_id, None)
        if session is None:
            return None
        session.ended = True
        session.outbox.put_nowait(_END)
        log.info("client %d session ended: %s", client_id, reason)
        task = asyncio.get_running_loop().create_task(self._on_end(session, evicted))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return task

    def lease_end(self, session: Session) -> float:
        """When the client's own view of its lease runs out at the latest (monotonic time)."""
        return session.last_acked + self.lease_seconds

    # --- the stream -------------------------------------------------------------------------
    def find(self, client_id: int) -> Session | None:
        """The live session of a client, for the metaserver's own messages to it."""
        return self._sessions.get(client_id)

    async def outgoing(self, session: Session):
        """The messages to stream to the client, until the session ends."""
        yield pb.ServerMessage(started=pb.SessionStarted(client_id=session.client_id))
        while (message := await session.outbox.get()) is not _END:
            yield message

    def heard_from(self, session: Session, heartbeat: pb.Heartbeat | None = None) -> None:
        now = time.monotonic()
        session.last_seen = now
        if heartbeat is not None and not session.ended:
            session.last_acked = now
            session.outbox.put_nowait(pb.ServerMessage(
                heartbeat_ack=pb.HeartbeatAck(seq=heartbeat.seq)))

    async def expire_leases(self) -> None:
        """Runs until cancelled: ends the sessions whose clients went silent."""
        while True:
            await asyncio.sleep(min(0.5, self.lease_seconds / 4))
            deadline = time.monotonic() - self.lease_seconds
            for client_id, session in list(self._sessions.items()):
                if session.last_seen < deadline:
                    self.end(client_id, f"lease of {self.lease_seconds:g}s ran out")

    # --- size queries (glimpses) ------------------------------------------------------------
    async def query_size(self, client_id: int, file_id: int, timeout: float) -> int | None:
        """Asks a client how large it knows the file to be; None if it does not answer."""
        def send(number: int) -> bool:
            session = self._sessions.get(client_id)
            if session is not None:
                session.outbox.put_nowait(pb.ServerMessage(
                    size_query=pb.SizeQuery(query_id=number, file_id=file_id)))
            return session is not None
        return await self.sizes.ask(send, timeout)
