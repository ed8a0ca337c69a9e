"""The recovery window of a restarted metaserver (Lustre's replay, for sessions, opens and tokens):
the window itself (Recovery) and each session's reclaim (Reclaims).

Invariant: no token is granted while a session that may hold one unclaimed (restored and not
reclaimed) could still act at a fileserver.

Sessions are recorded in the namespace (client id and the SHA-256 of the key) before Register
answers, and forgotten when they end, before their tokens can move. A metaserver that starts
with sessions recorded was stopped or crashed while they lived: their clients still hold files
open, tokens, cached writes and writes the fileservers have not stored. It restores them and
opens a window of `seconds` in which:

- the restored sessions are in the fileservers' session tables again, so that a reclaiming
  client can store what it holds;
- a client rejoins a stream with its session key and reclaims (Reclaim): it tells its open files
  and its tokens, and gets back, file by file, what does not conflict with what was reclaimed
  before it (a file deleted meanwhile, or tokens overlapping another's WRITE, are refused);
- no token is granted but by reclaim, and the calls that need the open files and tokens of
  before (Acquire, Open, Close, Delete, Rename, Truncate, ReportSize, Stat) wait for the window
  to end, as do the repair's resync and Scrub, which take tokens of their own; Register,
  Create, Mkdir, Rmdir, List, Status and Finish do not.

The window ends when every restored session has reclaimed or ended, or when its time is up.
Then the sessions that did not reclaim are ended as evicted ones are: fenced at every
fileserver, and only once their clients surely know their leases are over, before any token is
granted (`over` is set only then). Revocations that were in flight when the metaserver stopped
are forgotten: the token table is what the clients claimed, and tokens the metaserver had
granted but whose grant never reached its client were never claimed, so they are no one's.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable, Iterable

from pfs._proto import metaserver_pb2 as pb
from pfs.metadata import MAX_FILE_SIZE
from pfs.protocol.ranges import INFINITY

from .cluster import Cluster
from .copies import Copies
from .namespace import Node
from .openfiles import OpenFiles
from .sessions import Session, Sessions
from .sizes import Sizes
from .store import MetaStore
from .tokens import READ, WRITE, Grant, TokenManager

log = logging.getLogger("pfs.metaserver")

#: Files and token ranges a Reclaim may name at most (a client's claims are far fewer).
MAX_CLAIMS = 1_000_000
#: Seconds a Reclaim waits for the fileservers to attach again (to check sizes it is told).
RECLAIM_ATTACH_SECONDS = 3.0


class NothingToReclaim(Exception):
    """A reclaim from a session that was not restored, or once the window is over."""


class Recovery:
    """Which restored sessions have yet to reclaim, and whether the window is over."""

    def __init__(self, restored: Iterable[int]) -> None:
        self.awaiting = set(restored)
        self.all_back = asyncio.Event()  # every restored session reclaimed or ended
        self.over = asyncio.Event()  # the others are fenced: normal service resumes
        if not self.awaiting:
            self.all_back.set()
            self.over.set()

    @property
    def active(self) -> bool:
        return not self.over.is_set()

    def back(self, client_id: int) -> None:
        """The session reclaimed, or ended: the window need not wait for it."""
        self.awaiting.discard(client_id)
        if not self.awaiting:
            self.all_back.set()

    async def run(self, sessions: Sessions, seconds: float) -> None:
        """The recovery window: waits for the restored sessions to reclaim (at most
        `seconds`), ends those that did not as evicted ones are (fenced, and not before
        their clients surely know their leases are over), then lets normal service resume."""
        waiting = len(self.awaiting)
        log.warning("recovering %d client session(s) recorded before the restart: they have "
                    "%gs to reclaim their open files and tokens; until then no token is "
                    "granted", waiting, seconds)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.all_back.wait(), seconds)
        missing = sessions.awaiting_reclaim()
        endings = [sessions.end(client_id, "it did not reclaim its session within the "
                                           f"metaserver's recovery window of {seconds:g}s",
                                evicted=True)
                   for client_id in missing]
        await asyncio.gather(*[task for task in endings if task is not None])
        self.over.set()
        log.warning("recovery over: %d of %d session(s) reclaimed, %d evicted and fenced",
                    waiting - len(missing), waiting, len(missing))


class Reclaims:
    """A restored session's reclaim: gives it back, file by file, its open files and tokens."""

    def __init__(self, namespace: MetaStore, tokens: TokenManager, open_files: OpenFiles,
                 copies: Copies, sizes: Sizes, cluster: Cluster, sessions: Sessions,
                 recovery: Recovery, clock: Callable[[], float],
                 capabilities: Callable[[int, Node, Grant], list[bytes]],
                 read: Callable[..., Awaitable]) -> None:
        """`read`: MetaServer.read (the loop never waits on etcd)."""
        self.namespace, self.tokens, self.open_files = namespace, tokens, open_files
        self.copies, self.sizes, self.cluster = copies, sizes, cluster
        self.sessions, self.recovery, self.clock = sessions, recovery, clock
        self._capabilities = capabilities  # (MetaServer.capabilities)
        self._read = read

    async def reclaim(self, named: tuple[int, bytes | None],
                      request: pb.ReclaimRequest) -> pb.ReclaimReply:
        """The reclaim of the session `named` (client id, key), checked once more after its
        waits: the window may have ended meanwhile."""
        session = self.sessions.get(*named)
        if not session.restored or not self.recovery.active:
            raise NothingToReclaim("this session has nothing to reclaim: it was not recorded "
                                   "before a restart, or has reclaimed already")
        claims = checked_claims(request)
        nodes, stored = await self.stored_sizes(request)
        writing = await self._read(self.copies.writing_files, session.client_id)
        # From here on nothing waits: the window cannot end half-way through this reclaim.
        session = self.sessions.get(*named)
        if not session.restored or not self.recovery.active:
            raise NothingToReclaim("the recovery window ended before this reclaim was done")
        return self.give_back(session, request, claims, nodes, stored, writing)

    async def stored_sizes(self, request: pb.ReclaimRequest) -> tuple[dict[int, Node],
                                                                      dict[int, bool]]:
        """The claimed files that exist, and whether each size claimed beyond the durable one
        is stored (waiting, a while, for a fileserver that can say so to attach again)."""
        nodes: dict[int, Node] = {}
        for claim in request.files:
            with contextlib.suppress(OSError):
                nodes[claim.file_id] = node = await self._read(self.namespace.get, claim.file_id)
                if self.namespace.reads_wait:  # (read by the reclaim)
                    await self._read(self.copies.stale, node.node_id)
        grown = {claim.file_id: claim.size for claim in request.files
                 if claim.file_id in nodes and not nodes[claim.file_id].is_dir
                 and claim.size > nodes[claim.file_id].size}
        # Only those sizes wait for the fileservers, which attach again after a restart: a
        # reclaim that needs none (or another fileserver) must not spend the window on one
        # that stays away.
        give_up = self.clock() + RECLAIM_ATTACH_SECONDS
        while self.clock() < give_up and not all(self.sizes.askable(nodes[file_id], size)
                                                 for file_id, size in grown.items()):
            await asyncio.sleep(0.1)
        stored: dict[int, bool] = {}
        for file_id, size in grown.items():
            try:
                stored[file_id] = await self.sizes.stored(nodes[file_id], size)
            except OSError:  # (none can say: not believed)
                stored[file_id] = False
        return nodes, stored

    def give_back(self, session: Session, request: pb.ReclaimRequest,
                  claims: dict[int, list[tuple[int, int, int]]], nodes: dict[int, Node],
                  stored: dict[int, bool], writing: list[int]) -> pb.ReclaimReply:
        """The reclaim itself, which waits for nothing: the window cannot end half-way.
        `writing`: the files the session was recorded writing (copies.py)."""
        reply = pb.ReclaimReply(files=[
            self._reclaim_file(session.client_id, claim, claims[claim.file_id],
                               nodes.get(claim.file_id), stored.get(claim.file_id, False))
            for claim in request.files])
        session.restored = False
        session.writing.update(writing)
        self.sessions.heard_from(session)
        self.recovery.back(session.client_id)
        refused = sum(1 for f in reply.files if f.refused)
        log.info("client %d reclaimed its session: %d open file(s)%s", session.client_id,
                 len(reply.files) - refused, f", {refused} refused" if refused else "")
        return reply

    def _reclaim_file(self, client_id: int, claim: pb.FileClaim, tokens: list[tuple[int, int, int]],
                      node: Node | None, stored: bool) -> pb.ReclaimedFile:
        """Gives the client back one open file and its tokens, unless the file is gone or
        another client reclaimed conflicting tokens first; then says why not."""
        if node is None or node.is_dir:
            return pb.ReclaimedFile(file_id=claim.file_id, refused=f"file {claim.file_id} no "
                                    "longer exists")
        holder = self.tokens.restore(client_id, node.node_id, tokens)
        if holder is not None:
            return pb.ReclaimedFile(file_id=claim.file_id, refused=(
                f"its tokens conflict with those client {holder} reclaimed"))
        f = self.open_files.open(client_id, node)
        if claim.size > f.size:
            # Bytes in the client's cache (it holds a WRITE token up to them) are provisional;
            # a size it only learned is believed if the fileservers have its last byte.
            if self.sizes.believable(client_id, f, claim.size):
                self.open_files.told(f, client_id, claim.size, stored=False)
            elif stored:
                self.open_files.told(f, client_id, claim.size, stored=True)
            else:
                log.warning("client %d reclaimed file %d with size %d, which it could not have "
                            "written and is not stored; the file keeps %d", client_id,
                            node.node_id, claim.size, f.size)
        return pb.ReclaimedFile(
            file_id=node.node_id, size=f.size, size_epoch=f.size_epoch,
            stale=sorted(self.copies.stale(node.node_id)),
            missed=missed_ranges(self.copies, node.node_id),
            tokens=[pb.ReclaimedToken(start=start, end=end, mode=mode,
                                      capabilities=self._capabilities(
                                          client_id, node, Grant(start, end, mode, 0)))
                    for start, end, mode in tokens])


def missed_ranges(copies: Copies, file_id: int) -> list[pb.MissedRange]:
    """What each stale copy of the file lacks, as grants (and reclaims) tell clients."""
    return [pb.MissedRange(server=server, start=start, end=end)
            for server, start, end in copies.missed_ranges(file_id)]


def checked_claims(request: pb.ReclaimRequest) -> dict[int, list[tuple[int, int, int]]]:
    """Each claimed file's token ranges, once every number is checked (ValueError if not)."""
    claims: dict[int, list[tuple[int, int, int]]] = {}
    if len(request.files) + sum(len(f.tokens) for f in request.files) > MAX_CLAIMS:
        raise ValueError(f"a reclaim names at most {MAX_CLAIMS} files and token ranges")
    for f in request.files:
        if f.file_id in claims:
            raise ValueError(f"file {f.file_id} is claimed twice")
        if f.size > MAX_FILE_SIZE:
            raise ValueError(f"size {f.size} of file {f.file_id} is beyond {MAX_FILE_SIZE}")
        for t in f.tokens:
            if not 0 <= t.start < t.end <= INFINITY or t.mode not in (READ, WRITE):
                raise ValueError(f"token [{t.start}, {t.end}) mode {t.mode} of file "
                                 f"{f.file_id} is not a token")
        claims[f.file_id] = [(t.start, t.end, t.mode) for t in f.tokens]
    return claims
