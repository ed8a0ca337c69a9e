"""Client sessions: their ids and keys, the streams they joined and their leases.

A session starts at Register. It is bound to a random key issued at registration: a call acts
for a session only if it carries that key, so no client can act for another by naming its id.
Only the key's SHA-256 is kept (and recorded in the namespace, so that the session can be
reclaimed after a restart: recovery.py); a call's key is hashed and compared in constant time.

Each client process opens one stream, however many sessions it has, and each session joins it
with its key (a wrong key, or a session already on a stream, is refused and changes nothing). The
stream then acts for its members only: answers and acknowledgements name their session, and are
ignored unless that session joined this stream. Every message up the stream renews the lease of
every session on it; each heartbeat is acknowledged, and a client serves from its cache only
until its last acknowledged heartbeat's send time plus the lease. A session ends at once when
its stream breaks or its client leaves or finishes, when its lease runs out (a client cut off
without a broken stream, or one that never joined a stream), or when it is evicted (a revocation
it never acknowledged). Ending a session calls `on_end(session, evicted)`, which fences the
session and releases its tokens and open files, so the others proceed. An evicted client may
still believe its lease valid: `lease_end(session)` says when it surely knows better.

Silence is measured on `clock` (the metaserver's LoopClock, which leaves out the time its own
event loop lagged); acknowledgements are stamped with wall time, which `lease_end` uses, so that
an evicted client's view is surely over when it says.

A session recorded before a restart is `restore`d as awaiting its reclaim: it has no lease
until then (the recovery window ends it if its client does not come back), and may join a
stream again with its key.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol.ranges import INFINITY
from pfs.protocol.transport import SESSION_KEY_BYTES

from .stream_queries import StreamQueries
from .tokens import Revocation

log = logging.getLogger("pfs.metaserver.sessions")

_END = object()  # put in an outbox to close the stream


def key_hash(key: bytes) -> bytes:
    """What is kept of a session key: its SHA-256 (a 256-bit random key needs no slow hash)."""
    return hashlib.sha256(key).digest()


def new_key() -> bytes:
    return secrets.token_bytes(SESSION_KEY_BYTES)


class SessionEnded(Exception):
    """The session named by a call has ended (or never began)."""


class NotYourSession(Exception):
    """A call names a live session without its key."""


@dataclass(eq=False)
class Stream:
    """One client process's stream and the sessions that joined it."""
    peer: str
    last_seen: float  # on the sessions' clock: the last message up it
    last_acked: float = float("-inf")  # wall time: the last heartbeat we acknowledged
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    members: dict[int, "Session"] = field(default_factory=dict)
    open: bool = True


@dataclass(eq=False)
class Session:
    client_id: int
    key_hash: bytes
    last_seen: float  # on the sessions' clock: registration (a joined session goes by its stream)
    last_acked: float = field(default_factory=time.monotonic)  # wall time, see lease_end
    stream: Stream | None = None
    pending: list = field(default_factory=list)  # messages for it before it joined a stream
    # revoke id -> (file id, whether it takes the file's tail)
    revoked_files: dict[int, tuple[int, bool]] = field(default_factory=dict)
    ended: bool = False
    restored: bool = False  # recorded before a restart, and not reclaimed yet
    writing: set[int] = field(default_factory=set)  # files recorded as it may write (copies.py)


class Sessions:
    def __init__(self, lease_seconds: float,
                 on_end: Callable[[Session, bool], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self._on_end = on_end
        self._clock = clock
        self._sessions: dict[int, Session] = {}
        self.sizes = StreamQueries()  # file sizes asked of clients (glimpses)
        self._asked: dict[int, int] = {}  # size query number -> the client asked
        self._ending: set[asyncio.Task] = set()
        self._stopping = False  # streams close without ending their sessions

    async def stop(self) -> None:
        """Closes every stream. The sessions stay recorded: their clients reclaim them when
        the metaserver starts again (recovery.py), as after a crash."""
        self._stopping = True
        for stream in {s.stream for s in self._sessions.values() if s.stream is not None}:
            self.close_stream(stream, "the metaserver is stopping")
        if self._ending:
            await asyncio.wait(self._ending, timeout=5)

    def start(self, client_id: int, hashed_key: bytes, description: str) -> Session:
        session = Session(client_id, hashed_key, self._clock())
        self._sessions[client_id] = session
        log.info("client %d started a session (%s)", client_id, description)
        return session

    def restore(self, client_id: int, hashed_key: bytes) -> Session:
        """A session recorded before the metaserver restarted, awaiting its reclaim."""
        session = self._sessions[client_id] = Session(client_id, hashed_key, self._clock(),
                                                      restored=True)
        return session

    def awaiting_reclaim(self) -> list[int]:
        return [i for i, session in self._sessions.items() if session.restored]

    def get(self, client_id: int, key: bytes | None) -> Session:
        """The live session `client_id`, if `key` is its key."""
        session = self._sessions.get(client_id)
        if session is None:  # ended sessions leave the table at once
            raise SessionEnded(f"client {client_id} has no session (it ended or never began); "
                               "call pfs_initialize again")
        if key is None or not hmac.compare_digest(key_hash(key), session.key_hash):
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
        stream = session.stream
        if stream is not None:
            # Later heartbeats on the stream are not this session's: its lease stops here.
            session.last_acked = max(session.last_acked, stream.last_acked)
            del stream.members[client_id]
            if stream.open:
                stream.outbox.put_nowait(pb.ServerMessage(ended=pb.SessionNotice(
                    client_id=client_id, reason=reason)))
        log.info("client %d session ended: %s", client_id, reason)
        task = asyncio.get_running_loop().create_task(self._on_end(session, evicted))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)
        return task

    def lease_end(self, session: Session) -> float:
        """When the client's own view of its lease runs out at the latest (monotonic time)."""
        last = session.last_acked
        if session.stream is not None and not session.ended:
            last = max(last, session.stream.last_acked)
        return last + self.lease_seconds

    def find(self, client_id: int) -> Session | None:
        """The live session of a client, for the metaserver's own messages to it."""
        return self._sessions.get(client_id)

    def send(self, session: Session, message: pb.ServerMessage) -> None:
        """Sends a message down the session's stream (held until it joins one)."""
        if session.stream is not None:
            session.stream.outbox.put_nowait(message)
        else:
            session.pending.append(message)

    def revoke(self, revocation: Revocation) -> None:
        """Sends a revocation (the token manager's) down its holder's stream, remembering what
        it takes, for the size its acknowledgement carries."""
        session = self.find(revocation.client_id)
        if session is None:
            return  # its tokens are being released anyway
        session.revoked_files[revocation.revoke_id] = (revocation.file_id,
                                                       revocation.end == INFINITY)
        self.send(session, pb.ServerMessage(revoke=pb.Revoke(
            revoke_id=revocation.revoke_id, file_id=revocation.file_id,
            start=revocation.start, end=revocation.end, to_mode=revocation.to_mode,
            granted_upto=revocation.granted_upto, client_id=revocation.client_id)))

    def heard_from(self, session: Session) -> None:
        """The client has just learned its key: its lease starts (until it joins a stream)."""
        session.last_seen, session.last_acked = self._clock(), time.monotonic()

    # --- streams ----------------------------------------------------------------------------
    def open_stream(self, peer: str) -> Stream:
        return Stream(peer, self._clock())

    def close_stream(self, stream: Stream, reason: str) -> None:
        """The stream is gone: every session on it ends."""
        if not stream.open:
            return
        stream.open = False
        for client_id in list(stream.members):
            if self._stopping:
                stream.members.pop(client_id).stream = None
            else:
                self.end(client_id, reason)
        stream.outbox.put_nowait(_END)

    async def outgoing(self, stream: Stream):
        """The messages to stream to the client process, until the stream closes."""
        while (message := await stream.outbox.get()) is not _END:
            yield message

    def join(self, stream: Stream, client_id: int, key: bytes) -> None:
        """Puts a session on the stream if `key` is its key; says which it was down the stream.
        A stopping metaserver does not answer (the client tries again once it is back)."""
        if self._stopping:
            return
        try:
            session = self.get(client_id, key)
        except (SessionEnded, NotYourSession) as e:
            reason = str(e)
        else:
            if session.stream is None:
                session.stream = stream
                stream.members[client_id] = session
                # The client's lease may run from when it sent the join (a restored session's
                # first renewal): so may our idea of it.
                session.last_acked = max(session.last_acked, time.monotonic())
                stream.outbox.put_nowait(pb.ServerMessage(joined=pb.SessionJoined(
                    client_id=client_id)))
                for message in session.pending:
                    stream.outbox.put_nowait(message)
                session.pending.clear()
                return
            reason = f"client {client_id} already has its session stream"
        log.warning("refused client %d's join from %s: %s", client_id, stream.peer, reason)
        stream.outbox.put_nowait(pb.ServerMessage(refused=pb.SessionNotice(
            client_id=client_id, reason=reason)))

    def member(self, stream: Stream, client_id: int) -> Session | None:
        """The session, if it is live and joined this stream (a stream acts for no other)."""
        return stream.members.get(client_id)

    def heard_on(self, stream: Stream, heartbeat: pb.Heartbeat | None = None) -> None:
        """A message came up the stream: every session on it is alive."""
        stream.last_seen = self._clock()
        if heartbeat is not None and stream.open:
            stream.last_acked = time.monotonic()
            stream.outbox.put_nowait(pb.ServerMessage(
                heartbeat_ack=pb.HeartbeatAck(seq=heartbeat.seq)))

    async def expire_leases(self) -> None:
        """Runs until cancelled: ends the sessions whose clients went silent."""
        while True:
            await asyncio.sleep(min(0.5, self.lease_seconds / 4))
            deadline = self._clock() - self.lease_seconds
            for client_id, session in list(self._sessions.items()):
                if session.restored:
                    continue  # the recovery window decides
                seen = session.last_seen if session.stream is None else session.stream.last_seen
                if seen < deadline:
                    self.end(client_id, f"lease of {self.lease_seconds:g}s ran out")

    # --- size queries (glimpses) ------------------------------------------------------------
    async def query_size(self, client_id: int, file_id: int, timeout: float) -> int | None:
        """Asks a client how large it knows the file to be; None if it does not answer."""
        asked: list[int] = []

        def send(number: int) -> bool:
            session = self._sessions.get(client_id)
            if session is not None:
                asked.append(number)
                self._asked[number] = client_id
                self.send(session, pb.ServerMessage(size_query=pb.SizeQuery(
                    query_id=number, file_id=file_id, client_id=client_id)))
            return session is not None
        try:
            return await self.sizes.ask(send, timeout)
        finally:
            for number in asked:
                del self._asked[number]

    def answered(self, stream: Stream, reply: pb.SizeReply) -> None:
        """A size answer, taken only from the session asked, on its own stream."""
        if (self._asked.get(reply.query_id) == reply.client_id
                and self.member(stream, reply.client_id) is not None):
            self.sizes.answered(reply.query_id, reply.size)
