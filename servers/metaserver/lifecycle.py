"""A session's life at the metaserver: its registration, the client stream it speaks on, and its
end (finished, given up, evicted, or not reclaimed after a restart).

Invariant: a session's tokens move to others only once it is fenced at every fileserver, its
copies left apart are recorded (unfinished.py), and, if evicted, its client surely knows its
lease is over; it is recorded in the namespace before its client learns its key.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from .cluster import Cluster
from .namespace import StorageFull
from .openfiles import OpenFiles
from .recovery import Recovery
from .sessions import Session, Sessions, key_hash, new_key
from .sizes import Sizes
from .store import MetaStore
from .temporaries import TemporaryRemoval
from .tokens import TokenManager
from .unfinished import UnfinishedWrites

log = logging.getLogger("pfs.metaserver")

#: How often overdue revocations are looked for.
EVICTION_CHECK_SECONDS = 0.5


class ClusterIncomplete(Exception):
    """Too few fileservers are attached for a session to start (the message says which)."""


class Lifecycle:
    def __init__(self, namespace: MetaStore, db: Callable[..., Awaitable], sessions: Sessions,
                 tokens: TokenManager, cluster: Cluster, open_files: OpenFiles, sizes: Sizes,
                 unfinished: UnfinishedWrites, temporary_removal: TemporaryRemoval,
                 recovery: Recovery) -> None:
        self._namespace, self._db, self._sessions = namespace, db, sessions
        self._tokens, self._cluster, self._open_files = tokens, cluster, open_files
        self._sizes, self._unfinished = sizes, unfinished
        self._temporary_removal, self._recovery = temporary_removal, recovery

    async def register(self, description: str) -> tuple[int, bytes]:
        """A new session (client id, key), admitted at every fileserver; `description` names
        the client process in the log."""
        problem = self._cluster.shortfall()
        if problem:
            raise ClusterIncomplete(problem)
        key = new_key()
        client_id = await self._db(self._namespace.new_session, key_hash(key))
        session = self._sessions.start(client_id, key_hash(key), description)
        self._tokens.add_client(client_id)
        try:
            await self._cluster.admit(client_id)
        except asyncio.CancelledError:
            self._sessions.end(client_id, "its registration was abandoned")
            raise
        self._sessions.heard_from(session)  # the lease starts when the client learns its key
        return client_id, key

    async def finish(self, session: Session) -> None:
        ending = self._sessions.end(session.client_id, "finished")
        if ending is not None:
            await ending

    async def ended(self, session: Session, evicted: bool) -> None:
        """Forgets the session's record, fences it at the fileservers, then (once an evicted
        client surely knows its lease is over) lets others have its tokens."""
        self._recovery.back(session.client_id)
        try:
            await self._db(self._namespace.forget_session, session.client_id)
        except (StorageFull, OSError) as e:  # restored after a restart, it is evicted again
            log.error("could not forget client %d's session: %s", session.client_id, e)
        await self._cluster.fence(session.client_id)
        await self._unfinished.settle(session)
        if evicted:
            await asyncio.sleep(max(0.0, self._sessions.lease_end(session) - time.monotonic()))
        self._tokens.remove_client(session.client_id)
        self._open_files.close_all(session.client_id)
        self._temporary_removal.session_ended(session.client_id,
                                              self._sessions.lease_end(session))

    async def evict_overdue(self) -> None:
        while True:
            await asyncio.sleep(EVICTION_CHECK_SECONDS)
            for client_id in self._tokens.overdue():
                self._sessions.end(client_id, "it did not acknowledge a revocation", evicted=True)

    async def read_stream(self, stream, request_iterator) -> None:
        """A client process's stream (the servicer's Sessions), until it closes."""
        sessions = self._sessions
        async for message in request_iterator:
            kind = message.WhichOneof("body")
            sessions.heard_on(stream, message.heartbeat if kind == "heartbeat" else None)
            if kind == "join":
                sessions.join(stream, message.join.client_id, message.join.session_key)
            elif kind == "leave":
                if sessions.member(stream, message.leave.client_id) is not None:
                    sessions.end(message.leave.client_id, "its client gave it up")
            elif kind == "revoke_ack":
                ack = message.revoke_ack
                session = sessions.member(stream, ack.client_id)
                if session is None:  # ended meanwhile, or not this stream's to answer for
                    continue
                revoked = session.revoked_files.pop(ack.revoke_id, None)
                if revoked is not None:  # before the waiting request is granted
                    file_id, tail = revoked  # a client gives up the tail only once all is stored
                    self._sizes.reported(session.client_id, file_id, ack.size, stored=tail)
                self._tokens.acknowledge(session.client_id, ack.revoke_id)
            elif kind == "size_reply":
                sessions.answered(stream, message.size_reply)
        sessions.close_stream(stream, "the client closed its stream")
