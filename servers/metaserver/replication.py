"""Changing an existing file's replica count (`pfs setstripe FILE --replicas N`), and draining a
member (`pfs member drain NAME`), which is two such changes per file.

Invariant: a change never leaves a column without the good copies it had, up to the count
asked. Raising the count gives every stripe column new copies on members the file does not use
yet (online ones first, none on a member being drained), recorded as missing everything, so the
resync (repair.py) makes them from the good copies in the background; `pfs status` shows it.
Lowering it keeps, per column, the copies that missed nothing first, and of those the ones not
on an `avoid`ed member (a drain, which is refused while that would keep one), and drops the
rest: their objects are deleted in the background, as a deleted file's are. Either is one
commit, made while the metaserver holds a WRITE token on the whole file (so no client holds
one, or capabilities, made for the old recipe) and while no client has it open.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Awaitable, Callable

from pfs.protocol.paths import brief

from .cluster import Cluster
from .copies import Copies
from .deletions import Deletions
from .namespace import Node
from .openfiles import OpenFiles
from .repair import Repair
from .store import MetaStore

log = logging.getLogger("pfs.metaserver")


def placed(node: Node, replicas: int, stale: set[int], members: list[int], online: set[int],
           avoid: set[int] = frozenset()) -> tuple[list[int], list[int], list[int]]:
    """The file's servers with `replicas` copies, the members given new copies and those
    whose copies are dropped; OSError saying why when it cannot be done."""
    width, have = node.width, node.replicas
    columns = [node.copies(c) for c in range(width)]
    if replicas > have:
        spare = [i for i in members if i not in node.servers and i not in avoid]
        need = (replicas - have) * width
        if len(spare) < need:
            raise OSError(errno.ENOSPC, f"{replicas} copies of a file {width} wide need "
                                        f"{replicas * width} fileservers, each copy of a column "
                                        f"on one of its own; {len(spare)} more can take one "
                                        "now: add fileservers, or ask fewer copies")
        spare.sort(key=lambda i: (i not in online, (i - node.node_id) % (max(members) + 1)))
        added = spare[:need]
        return list(node.servers) + added, added, []
    kept = []
    for copies in columns:
        ordered = sorted(copies, key=lambda i: (i in stale, i in avoid, copies.index(i)))
        if any(i in avoid for i in ordered[:replicas]):  # (a good copy is never dropped
            raise OSError(errno.EBUSY, "its copies elsewhere are not in sync yet")  # for it)
        kept.append(ordered[:replicas])
    servers = [kept[c][k] for k in range(replicas) for c in range(width)]
    return servers, [], [i for i in node.servers if i not in servers]


class Replication:
    """Changes files' replica counts on the metaserver's loop, as the invariant above says."""

    def __init__(self, namespace: MetaStore, cluster: Cluster, copies: Copies,
                 open_files: OpenFiles, deletions: Deletions, repair: Repair,
                 namespace_lock: asyncio.Lock, db: Callable[..., Awaitable]) -> None:
        self._namespace, self._cluster, self._copies = namespace, cluster, copies
        self._open_files, self._deletions, self._repair = open_files, deletions, repair
        self._lock, self._db = namespace_lock, db

    async def change(self, file_id: int, replicas: int, avoid: set[int] = frozenset()
                     ) -> tuple[list[int], list[int]]:
        """Gives the file `replicas` copies (none on `avoid`): the members given new copies,
        and those whose copies were dropped."""
        try:
            return await self._change(file_id, replicas, avoid)
        except asyncio.TimeoutError:
            raise OSError(errno.EBUSY, f"a client did not give back its token on "
                                       f"{brief(self._namespace.path_of(file_id))} in time; "
                                       "try again") from None

    async def _change(self, file_id: int, replicas: int, avoid: set[int]
                      ) -> tuple[list[int], list[int]]:
        async with self._repair.whole_file(file_id), self._lock:
            node = self._namespace.get(file_id)
            if self._open_files.is_open(file_id):
                raise OSError(errno.EBUSY, f"{brief(self._namespace.path_of(file_id))} is open "
                                           "(a client holds its recipe): try again once it is "
                                           "closed")
            members = sorted(self._cluster.addresses())
            taken = self._deletions.pending_on(file_id)  # their old object may still go
            if replicas > node.replicas:  # (no new copy on a member being drained)
                avoid = avoid | self._cluster.draining
            servers, added, dropped = placed(node, replicas, self._copies.stale(file_id),
                                             [i for i in members if i not in taken],
                                             self._cluster.online(), avoid)
            await self._db(self._namespace.change_copies, file_id, servers, replicas, added,
                           dropped)
        if dropped:
            self._deletions.add(file_id, tuple(dropped))
        if added:
            self._repair.wake()
        log.info("file %d now has %d copies (new on %s, dropped on %s)", file_id, replicas,
                 [self._cluster.name(i) for i in added], [self._cluster.name(i) for i in dropped])
        return added, dropped
