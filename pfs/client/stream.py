"""The one stream a process keeps open to a metaserver, shared by all its sessions; it owns the
table of who is on it and who is joining, and talks to sessions only through `Member`.

Clients listen on no port: revocations reach them over a stream they open. A process opens one
per metaserver (and credentials), however many Clients it has, when the first session joins, and
closes it when the last one leaves (pfs/runtime/holdings.py counts them). Each session joins it
with its key, as every call of that session carries it; the metaserver refuses a wrong key
without changing anything. Up the stream go one heartbeat every quarter lease, for every session
on it, and the sessions' answers, each tagged with its client id; down come heartbeat
acknowledgements and the questions for each session (revocations, size queries), tagged likewise.

One direction: the stream calls its members (`Member`: renewed, received, size_of,
disconnected, rejoined, lose_soon) and never reaches into them; a session reaches the stream only
through `join`, `submit`, the `Seat` it was given and the `Answer` that came with a revocation.

Two threads serve the stream: gRPC's, which sends what `_outgoing` yields (a heartbeat when one
is due, whatever else waits), and a reader, which never blocks on a Client: it renews leases,
answers size queries, and hands revocations and lost sessions to the session's lane of a shared
pool (pfs/runtime/callqueues.py), where they may wait for that Client's lock without holding up
the heartbeats or the other Clients. Sessions are held weakly: a Client the program dropped is
collected, and its session leaves the stream (pfs/client/session.py).

A session is renewed by an acknowledgement only if it arrives after the session's "joined": the
metaserver answers in the order it reads, so that heartbeat was read after the session joined,
and renewed it.

When the stream breaks, its sessions are not given up but recover (pfs/client/leasing.py): the
reader opens a new stream, less and less often while the metaserver does not answer (at most
every RECONNECT_SECONDS, logging how long it has been), and rejoins each with its key. A
metaserver that ended them (it is alive, and saw the stream break) refuses, and they are lost as
before; one that restarted takes them back, and each reclaims what it holds.
"""
from __future__ import annotations

import errno
import logging
import queue
import threading
import time
import weakref
from typing import Any, Callable, Protocol

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.protocol import errnos
from pfs.protocol.heartbeats import END, Heartbeats, messages_for
from pfs.protocol.transport import RECONNECT_SECONDS, Credentials
from pfs.runtime import holdings
from pfs.runtime.callqueues import Lanes

log = logging.getLogger("pfs.client")

#: Revocations of one session handled at once at most (each waits for its own byte range).
REVOCATIONS_PER_SESSION = 4
#: Seconds between reports that the metaserver still does not answer.
OUTAGE_LOG_SECONDS = 30.0


class Member(Protocol):
    """A session as the stream sees it (session.py's MetaSession): the stream calls these, on
    its reader thread, and the session calls the stream only through `join`, `submit` and its
    Seat."""
    client_id: int
    session_key: bytes
    heartbeat_seconds: float

    def renewed(self, sent: float) -> None: ...
    def received(self, revoke: pb.Revoke, answer: "Answer") -> None: ...
    def size_of(self, file_id: int) -> int: ...
    def disconnected(self, reason: str) -> bool: ...
    def rejoined(self, seat: "Seat") -> None: ...
    def lose_soon(self, reason: str) -> None: ...


#: How a session acknowledges a revocation: answer(size), on the stream it came on (nothing
#: is sent if that one has broken meanwhile).
Answer = Callable[[int], None]


class _Call:
    """One opening of the stream: its outbox, heartbeats and sessions."""

    def __init__(self, heartbeat_seconds: float) -> None:
        self.outbox: "queue.SimpleQueue[object]" = queue.SimpleQueue()  # put() is reentrant
        self.heartbeat_seconds = heartbeat_seconds
        self.heartbeats = Heartbeats()
        # Changed and copied under `lock`, by any thread but a finalizer's (whose sessions go
        # from these by themselves, being weak references).
        self.lock = threading.Lock()
        self.members: "weakref.WeakValueDictionary[int, Member]" = \
            weakref.WeakValueDictionary()  # joining or joined
        self.joined: "weakref.WeakValueDictionary[int, Member]" = \
            weakref.WeakValueDictionary()
        self.ended: str | None = None  # why it broke

    def sessions(self, joined: bool) -> list[Member]:
        with self.lock:
            return list((self.joined if joined else self.members).values())

    def remove(self, client_id: int) -> Member | None:
        with self.lock:
            self.members.pop(client_id, None)
            return self.joined.pop(client_id, None)


class Seat:
    """A session's place on the stream: the opening of it the session is on (a rejoin moves
    it). Holds no reference to the session, so a finalizer may leave with it."""

    def __init__(self, call: _Call, client_id: int) -> None:
        self._call, self._client_id = call, client_id

    def moved_to(self, other: "Seat") -> None:
        self._call = other._call

    def leave(self, finalizing: bool = False) -> None:
        """Takes the session off the stream; the metaserver ends it if it has not already.
        From a finalizer (`finalizing`), it only queues: the session is gone from the call
        already."""
        if not finalizing:
            self._call.remove(self._client_id)
        if self._call.ended is None:
            self._call.outbox.put(pb.ClientMessage(leave=pb.LeaveSession(
                client_id=self._client_id)))


def _answer(call: _Call, revoke: pb.Revoke) -> Answer:
    def answer(size: int) -> None:
        if call.ended is None:
            call.outbox.put(pb.ClientMessage(revoke_ack=pb.RevokeAck(
                revoke_id=revoke.revoke_id, size=size, client_id=revoke.client_id)))
    return answer


class SessionStream:
    def __init__(self, address: str, credentials: Credentials) -> None:
        self.address = address
        self._holdings = holdings.Holdings()
        self._stub = pb_grpc.MetaServerStub(self._holdings.hold(
            channel_key(address, credentials), lambda: credentials.channel(address)))
        self._lock = threading.Lock()
        self._call: _Call | None = None
        self._closed = False
        self._lanes = Lanes(REVOCATIONS_PER_SESSION, "pfs-revoke")
        # Sessions waiting for the metaserver's answer to their join: (answered, [refusal]).
        self._joins: dict[int, tuple[threading.Event, list[str]]] = {}
        self._outage: float | None = None  # when the metaserver stopped answering
        self._pause = 0.0  # before the next try to reach it
        self._reported = 0.0  # when the outage was last logged

    def join(self, session: Member, timeout: float) -> Seat:
        """Puts the session on the stream (opening it if needed); its Seat. Raises OSError if
        the metaserver refuses it or does not answer in time."""
        answered, refusal = self._joins[session.client_id] = (threading.Event(), [])
        with self._lock:
            call = self._joining([session])
        call.outbox.put(pb.ClientMessage(join=pb.JoinSession(client_id=session.client_id,
                                                             session_key=session.session_key)))
        if not answered.wait(timeout):
            refusal.append("it did not answer in time")
        del self._joins[session.client_id]
        if refusal:
            call.remove(session.client_id)
            raise errnos.error(errno.ENOTCONN, f"the metaserver at {self.address} did not take "
                                               f"the session onto its stream: {refusal[0]}")
        return Seat(call, session.client_id)

    def submit(self, client_id: int, fn: Callable[..., Any], *args: Any) -> None:
        """Runs fn(*args) on the session's lane of the process's revocation threads, after
        the session's earlier calls there have started (runtime/callqueues.py)."""
        self._lanes.submit(client_id, fn, *args)

    def close(self) -> None:
        """The last session has left: ends the stream."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        if call is not None:
            call.outbox.put(END)
        self._lanes.close()
        self._holdings.release_all()

    # --- the stream -------------------------------------------------------------------------
    def _joining(self, sessions: list[Member]) -> _Call:
        """The stream for the sessions to join, with them among its members: the one open, or
        a new one, which they are members of before it starts (so that if it breaks at once,
        its reader knows whom that fails). The caller holds `_lock`."""
        call = self._call
        fresh = call is None or call.ended is not None
        if fresh:
            call = self._call = _Call(sessions[0].heartbeat_seconds)
        with call.lock:
            for session in sessions:
                call.members[session.client_id] = session
        if fresh:
            responses = self._stub.Sessions(self._outgoing(call))
            threading.Thread(target=self._listen, args=(call, responses), daemon=True,
                             name="pfs-stream").start()
        return call

    @staticmethod
    def _outgoing(call: _Call):
        while True:
            yield pb.ClientMessage(heartbeat=pb.Heartbeat(seq=call.heartbeats.send()))
            if (yield from messages_for(call.outbox, call.heartbeat_seconds)):
                return

    def _listen(self, call: _Call, responses) -> None:
        reason = "the metaserver closed the session stream"
        try:
            for message in responses:
                if self._outage is not None:
                    self._answered()
                self._receive(call, message)
        except grpc.RpcError as e:
            reason = f"the session stream broke: {e.code().name} {e.details()}"
        except Exception as e:  # noqa: BLE001 - a bug here must not leave sessions unheard
            log.exception("reading the session stream failed")
            reason = f"the client failed to read the session stream: {e!r}"
            responses.cancel()  # the metaserver ends every session on it
        with self._lock:
            call.ended = reason
            if self._call is call:
                self._call = None
        rejoin = self._disconnected(call, reason)
        if rejoin:
            self._rejoin(rejoin, reason)

    def _disconnected(self, call: _Call, reason: str) -> list["weakref.ref[Member]"]:
        """Tells the broken stream's sessions; those that wait to rejoin, weakly: a Client the
        program drops meanwhile must go (with its session), not wait for the metaserver."""
        rejoin = []
        for session in call.sessions(joined=False):
            joining = self._joins.get(session.client_id)
            if joining is not None:
                joining[1].append(reason)
                joining[0].set()
            elif not self._closed and session.disconnected(reason):
                rejoin.append(weakref.ref(session))
        return rejoin

    def _rejoin(self, waiting: list["weakref.ref[Member]"], reason: str) -> None:
        """After the stream broke: waits a little (more each time, while the metaserver does not
        answer), opens a new stream and rejoins the sessions still there with their keys; the
        answers come to the new stream's reader (`_receive`)."""
        with self._lock:
            now = time.monotonic()
            if self._outage is None:
                self._outage = self._reported = now
            elif now - self._reported >= OUTAGE_LOG_SECONDS:
                self._reported = now
                log.warning("the metaserver at %s has not answered for %.0fs (%s); %d "
                            "session(s) of this process wait to rejoin", self.address,
                            now - self._outage, reason, len(waiting))
            self._pause = min(max(2 * self._pause, 0.1), RECONNECT_SECONDS)
            pause = self._pause
        time.sleep(pause)
        sessions = [session for session in (ref() for ref in waiting) if session is not None]
        with self._lock:
            if self._closed or not sessions:
                return
            call = self._joining(sessions)
        for session in sessions:
            call.outbox.put(pb.ClientMessage(join=pb.JoinSession(
                client_id=session.client_id, session_key=session.session_key)))

    def _answered(self) -> None:
        """The metaserver answers again."""
        with self._lock:
            if self._outage is None:
                return
            log.warning("the metaserver at %s answers again after %.1fs", self.address,
                        time.monotonic() - self._outage)
            self._outage, self._pause = None, 0.0

    def _receive(self, call: _Call, message: pb.ServerMessage) -> None:
        kind = message.WhichOneof("body")
        if kind == "heartbeat_ack":
            sent = call.heartbeats.acknowledged(message.heartbeat_ack.seq)
            if sent is not None:
                for session in call.sessions(joined=True):
                    session.renewed(sent)
        elif kind == "revoke":
            session = call.joined.get(message.revoke.client_id)
            if session is not None:
                session.received(message.revoke, _answer(call, message.revoke))
        elif kind == "size_query":
            query = message.size_query
            session = call.joined.get(query.client_id)
            if session is not None:
                call.outbox.put(pb.ClientMessage(size_reply=pb.SizeReply(
                    query_id=query.query_id, size=session.size_of(query.file_id),
                    client_id=query.client_id)))
        elif kind in ("joined", "refused"):
            answer = getattr(message, kind)
            session = call.members.get(answer.client_id)
            if session is None:  # given up (or collected) while joining: the metaserver ends it
                if kind == "joined":
                    call.outbox.put(pb.ClientMessage(leave=pb.LeaveSession(
                        client_id=answer.client_id)))
                return
            if kind == "joined":
                with call.lock:
                    call.joined[answer.client_id] = session
            joining = self._joins.get(answer.client_id)
            if joining is not None:
                if kind == "refused":
                    joining[1].append(answer.reason)
                joining[0].set()
            elif kind == "joined":  # a recovering session, back
                session.rejoined(Seat(call, answer.client_id))
            else:
                call.remove(answer.client_id)
                session.lose_soon(f"the metaserver did not take the session back: "
                                  f"{answer.reason}")
        elif kind == "ended":
            session = call.remove(message.ended.client_id)
            if session is not None:
                session.lose_soon(f"the metaserver ended the session: {message.ended.reason}")


def channel_key(address: str, credentials: Credentials) -> tuple:
    """The shared channel to a server, for these credentials."""
    return ("channel", address, credentials.identity())


def stream_key(address: str, credentials: Credentials) -> tuple:
    return ("stream", address, credentials.identity())
