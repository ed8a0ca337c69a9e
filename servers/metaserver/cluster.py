"""The cluster's fileservers: who is attached, where new files go, and which client sessions
each fileserver may serve (the fencing of docs/consistency.md).

Each fileserver keeps a control stream open to us. Over it we send the session table (whole at
attach, then each change, numbered by a version) and it acknowledges every version it has put in
force. It serves data only while its heartbeats are acknowledged, and stops on its own once the
lease that its last acknowledged heartbeat bought has run out.

The table a fileserver gets at attach is the live sessions plus a floor, `new_sessions_from`:
client ids are handed out in increasing order and never again, so every id from the floor on is
a session begun since, and is served until it is fenced. Starting a session thus sends nothing
to the fileservers (thousands of clients starting at once would otherwise cost every fileserver
a message and the metaserver an acknowledgement each); only a session whose registration ends
after a fileserver's welcome, with an id below its floor, is admitted by a message.

Fencing: `fence(client)` returns only when no fileserver can still act for that session: each one
has acknowledged the change, or its lease has run out (it stopped serving by itself). Only then
may the session's tokens go to another client. A fileserver that does not acknowledge in time
has its stream closed, so it re-attaches and receives the whole table again.

A fileserver's index is stable across restarts (the namespace keeps it by the fileserver's
name), so recipes stay valid. A member that comes back under its name with a new data directory
(its disk was lost or wiped) keeps its index and is known to have lost its objects. No other
fileserver may take the address of one that is online. The session table names sessions by
client id only: fileservers never learn a session's key.
"""
from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol.receipts import incarnation

from .stream_queries import StreamQueries

log = logging.getLogger("pfs.metaserver.cluster")

HEARTBEAT_SECONDS = 1.0
#: A fileserver serves this long after sending a heartbeat we acknowledged (and is offline for
#: us once that long has passed since we last heard one).
FILESERVER_LEASE_SECONDS = 5.0
#: How long an admit or fence may wait for a fileserver's acknowledgement before its stream is
#: closed (it then re-attaches and gets the whole table).
ACK_TIMEOUT = 3.0
_DETACH = object()  # put in a link's outbox to close its stream
#: The metaserver's own session id, for the data calls of its repairs (client ids start at 1);
#: always in the session table.
METASERVER_CLIENT = 0


class AttachRefused(Exception):
    """A fileserver may not attach (its address or identity is taken by a live one)."""


@dataclass(eq=False)
class Link:
    """One attachment of a fileserver: its control stream while it lasts."""
    index: int
    uuid: str
    address: str
    name: str
    lost_data: bool = False  # it came back with a new data directory
    boot: str = ""  # its process's nonce (pfs/protocol/receipts.py); "" from an old one
    new_sessions_from: int = 0  # of its welcome: it serves ids from here on unless fenced
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    acked_version: int = 0
    last_heartbeat: float = float("-inf")  # when we received the last heartbeat we acknowledged
    attached: bool = True
    detached_at: float = float("inf")  # when its stream ended


class Cluster:
    def __init__(self, register_fileserver: Callable[[str, str, str],
                                                      Awaitable[tuple[int, bool]]],
                 addresses: dict[int, str], names: dict[int, str], expected_fileservers: int,
                 first_client_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._register = register_fileserver
        self._addresses = dict(addresses)  # index -> last known address, attached or not
        self._names = dict(names)  # index -> the member's name, what operators see
        self.expected = expected_fileservers
        self._clock = clock
        self._started = clock()  # a member not attached since is offline since then
        self._links: dict[int, Link] = {}  # index -> current (or last) attachment
        self._sessions: set[int] = {METASERVER_CLIENT}  # the session table: client ids
        # No client id below this is a session not yet in the table: the next welcome's floor.
        self._new_sessions_from = first_client_id
        self.epoch = 0  # the active metaserver's epoch (election.py), told in every welcome
        self._version = 1  # of the table; a fileserver that acknowledged none may not serve
        self._wakeup = asyncio.Event()  # replaced by a fresh one at every notification
        self._placement = itertools.count()
        self.lengths = StreamQueries()  # object lengths asked of fileservers
        self.stopping = False  # fileservers leaving then are expected, not a problem
        self.draining: set[int] = set()  # members new files are not placed on (members.py)

    # --- membership -------------------------------------------------------------------------
    def addresses(self) -> dict[int, str]:
        return dict(sorted(self._addresses.items()))

    def name(self, index: int) -> str:
        """How logs and errors name a fileserver: by its member name, as `pfs status` does
        (indices are what recipes hold, not what operators know)."""
        return self._names.get(index) or f"#{index}"

    def online(self) -> set[int]:
        return {i for i, link in self._links.items() if link.attached and self._live(link)}

    def responsive(self) -> set[int]:
        """The online fileservers heard from within the last two heartbeats: one cut off
        from us a moment ago is online until its lease runs out, but not responsive."""
        return {i for i in self.online()
                if self._clock() < self._links[i].last_heartbeat + 2 * HEARTBEAT_SECONDS}

    def _live(self, link: Link) -> bool:
        return self._clock() < link.last_heartbeat + FILESERVER_LEASE_SECONDS

    def offline_seconds(self, index: int) -> float:
        """How long we have known fileserver `index` offline (0 while online): since its
        stream ended or its heartbeats' lease ran out, whichever came first; a member that
        has not attached since we started, since then. Clients give up on it sooner the
        longer it has been away (pfs/datapath/fileservers.py)."""
        link = self._links.get(index)
        if link is None:
            since = self._started
        elif link.attached and self._live(link):
            return 0.0
        else:
            since = min(link.detached_at, link.last_heartbeat + FILESERVER_LEASE_SECONDS)
            since = max(since, self._started)
        return max(0.0, self._clock() - since)

    def shortfall(self) -> str | None:
        """Why clients cannot start now, or None: the cluster has formed (every expected
        fileserver has joined once) and some fileserver is online. A member that is down
        later leaves the cluster degraded, not closed: clients start, and only the calls that
        need it wait or fail."""
        joined, online = len(self._addresses), len(self.online())
        if joined < self.expected:
            return (f"only {joined} of {self.expected} fileservers have joined the cluster; start "
                    "the missing ones (or wait for them to register) and try again")
        if not online:
            return "no fileserver is online; start them (see `pfs status`) and try again"
        return None

    def widest(self, replicas: int) -> int:
        """The widest stripe a new file with `replicas` copies can have now: a member of its
        own for every copy of every column, the first copy of each online (as the clients'
        ClusterLayout.widest says)."""
        return max(1, min(len(self.online() - self.draining),
                          (len(self._addresses) - len(self.draining)) // replicas))

    def place(self, width: int, replicas: int = 1) -> list[int]:
        """The servers of a new file: width × replicas distinct members (copy k of column c at
        k * width + c), consecutive from one further along for each file, so that files spread
        evenly; a copy is never on the server of another copy of its column (nor, objects
        being one per file and server, on any other server of the file). The first copy of
        every column is on an online server; the other copies go to online ones while there
        are enough, else to offline members (copies born stale, resynced when they return:
        a cluster with a member down still takes new replicated files)."""
        online = sorted(self.online() - self.draining)
        members = len(self._addresses) - len(self.draining)
        if not 1 <= replicas <= members:
            raise ValueError(f"replicas must be between 1 and the {members} fileservers, "
                             f"got {replicas}")
        if not 1 <= width * replicas <= members:
            raise ValueError(f"stripe_width × replicas must be between 1 and the {members} "
                             f"fileservers (each copy of each column on a fileserver of its "
                             f"own), got {width} × {replicas}")
        if width > len(online):
            raise OSError(errno.EHOSTDOWN, f"only {len(online)} of the {members} fileservers "
                                           f"are online: a file {width} wide cannot be placed "
                                           "now; try again once they are back (see `pfs "
                                           "status`), or create it narrower")
        first = next(self._placement)
        ordered = online[first % len(online):] + online[:first % len(online)]
        offline = [i for i in sorted(self._addresses)
                   if i not in online and i not in self.draining]
        return (ordered + offline)[:width * replicas]

    def forget(self, index: int) -> None:
        """Member `index` was removed (members.py): it is no fileserver of ours any more."""
        self.draining.discard(index)
        link = self._links.pop(index, None)
        if link is not None:
            self.detach(link)
        self._addresses.pop(index, None)
        self._names.pop(index, None)

    def incarnation(self, index: int) -> bytes | None:
        """The incarnation (pfs/protocol/receipts.py) of fileserver `index` while it is
        attached and online; None otherwise, or when it names no process of its own."""
        link = self._links.get(index)
        if link is None or not link.boot or not link.attached or not self._live(link):
            return None
        return incarnation(link.uuid, link.boot)

    async def attach(self, uuid: str, address: str, name: str, boot: str = "") -> Link:
        """A fileserver's control stream opened: its link, whose outbox starts with Welcome."""
        for link in self._links.values():
            if link.attached and self._live(link) and (link.uuid == uuid or link.name == name
                                                       or link.address == address):
                what = ("this fileserver" if link.uuid == uuid else f"fileserver {link.name}")
                raise AttachRefused(
                    f"{what} is already attached at {link.address} and online; is a second "
                    "fileserver running with the same data directory, name or address?")
        index, lost = await self._register(name, uuid, address)
        if lost:
            log.error("fileserver %s came back with a new data directory: the objects it "
                      "held are lost (reads of them fail with EIO; replicated files are "
                      "resynced)", name)
        old = self._links.get(index)
        if old is not None and old.attached:
            self.detach(old)
        link = Link(index, uuid, address, name, lost, boot=boot,
                    new_sessions_from=self._new_sessions_from)
        link.last_heartbeat = old.last_heartbeat if old else float("-inf")
        self._links[index] = link
        self._addresses[index] = address
        self._names[index] = name
        link.outbox.put_nowait(pb.ControlMessage(welcome=pb.Welcome(
            index=index, heartbeat_seconds=HEARTBEAT_SECONDS,
            lease_seconds=FILESERVER_LEASE_SECONDS, version=self._version,
            sessions=sorted(self._sessions), new_sessions_from=link.new_sessions_from,
            epoch=self.epoch)))
        log.info("fileserver %s attached from %s", name, address)
        return link

    def detach(self, link: Link) -> None:
        if link.attached:
            link.attached = False
            link.detached_at = self._clock()
            link.outbox.put_nowait(_DETACH)
            log.log(logging.INFO if self.stopping else logging.WARNING,
                    "fileserver %s detached", link.name)
            self._notify()

    async def outgoing(self, link: Link):
        while (message := await link.outbox.get()) is not _DETACH:
            yield message

    def heartbeat(self, link: Link, seq: int) -> None:
        # Only a link that has put the table in force may keep serving.
        if link.attached and link.acked_version >= 1:
            link.last_heartbeat = self._clock()
            link.outbox.put_nowait(pb.ControlMessage(heartbeat_ack=pb.HeartbeatAck(
                seq=seq, time=time.time())))

    def table_acked(self, link: Link, version: int) -> None:
        link.acked_version = max(link.acked_version, version)
        self._notify()

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    # --- the session table ------------------------------------------------------------------
    def restore(self, client_ids) -> None:
        """Sessions restored after a restart (recovery.py): fileservers learn them as they
        attach, with the whole table."""
        self._sessions.update(client_ids)

    def complete(self) -> bool:
        """Whether every member is online."""
        return len(self.online()) == len(self._addresses)

    async def admit(self, client_id: int) -> None:
        """Lets a new session's calls through at every fileserver: at once where the id is at
        or above the fileserver's floor (nearly always); elsewhere it returns once the attached
        ones have it in force (one that does not answer in time is made to re-attach)."""
        self._sessions.add(client_id)
        self._new_sessions_from = max(self._new_sessions_from, client_id + 1)
        below = [link for link in self._links.values()
                 if link.attached and client_id < link.new_sessions_from]
        if below:
            await self._change(pb.ControlMessage(admit=pb.SessionAdmitted(
                version=self._bump(), client_id=client_id)), until_lease_ends=False, only=below)

    async def fence(self, client_id: int) -> None:
        """Returns once no fileserver can still serve the session (docs/consistency.md, fencing)."""
        self._sessions.discard(client_id)
        await self._change(pb.ControlMessage(fence=pb.SessionFenced(
            version=self._bump(), client_id=client_id, time=time.time())), until_lease_ends=True)

    def _bump(self) -> int:
        self._version += 1
        return self._version

    async def _change(self, message: pb.ControlMessage, until_lease_ends: bool,
                      only: list[Link] | None = None) -> None:
        """Sends a table change to every attached fileserver (or those `only`) and waits for
        each: until it has acknowledged, or (`until_lease_ends`) its lease has run out, whichever
        comes first. Without `until_lease_ends`, one that does not acknowledge is merely
        detached. A fileserver attaching meanwhile gets the change with its welcome."""
        version = self._version

        def targets() -> list[Link]:  # (all: a re-attached fileserver's new link among them)
            return list(self._links.values()) if only is None else only
        for link in targets():
            if link.attached:
                link.outbox.put_nowait(message)
        give_up = self._clock() + ACK_TIMEOUT

        def waiting() -> list[Link]:
            return [link for link in targets() if link.acked_version < version
                    and (link.attached if not until_lease_ends else self._live(link))]

        while pending := waiting():
            now = self._clock()
            if now >= give_up:
                for link in pending:
                    log.warning("fileserver %s did not confirm session table version %d "
                                "within %gs; closing its stream", link.name, version,
                                ACK_TIMEOUT)
                    self.detach(link)
                if not until_lease_ends:
                    return
                give_up = float("inf")
            leases_end = min(link.last_heartbeat + FILESERVER_LEASE_SECONDS for link in pending)
            wakeup = self._wakeup
            try:
                await asyncio.wait_for(wakeup.wait(), max(0.01, min(give_up, leases_end) - now))
            except asyncio.TimeoutError:
                pass

    # --- objects ----------------------------------------------------------------------------
    async def object_length(self, index: int, file_id: int) -> int:
        """The length of the file's object on fileserver `index` (it must be attached)."""
        link = self._links.get(index)
        if link is None or not link.attached:
            raise ConnectionError(f"fileserver {self.name(index)} is not attached")
        log.debug("asking fileserver %s the length of file %d's object", self.name(index),
                  file_id)

        def send(number: int) -> bool:
            link.outbox.put_nowait(pb.ControlMessage(length_query=pb.LengthQuery(
                query_id=number, file_id=file_id)))
            return True
        length = await self.lengths.ask(send, ACK_TIMEOUT)
        if length is None:
            raise ConnectionError(f"fileserver {self.name(index)} did not answer")
        return length

    def delete_objects(self, index: int, file_ids: list[int]) -> bool:
        """Asks fileserver `index` to delete the files' objects; False if it is not attached."""
        link = self._links.get(index)
        if link is None or not link.attached:
            return False
        link.outbox.put_nowait(pb.ControlMessage(delete=pb.DeleteObjects(file_ids=file_ids)))
        return True
