"""Removing a member for good: a fileserver that will not come back (a mistyped --name, a dead
machine) stops being one of the cluster's fileservers, as `lfs`/`beegfs-ctl` operators remove a
target; and draining one that is still online (`drain`): its copies are made on other members
first, file by file, through replication.py, before it is stopped and removed.

Invariant: a removal never loses a byte. It is refused, changing nothing, while the member is
online, while it holds the only good copy of any file's bytes (a copy of a file with one
replica, unless the file is empty; or a column whose other copies are all stale), or when a file
it holds has no other member to take its copy. Otherwise, in one transaction, every copy it held
is given to another member (one the file does not use yet), recorded as missing everything
there, so the resync (repair.py) re-makes it from a good copy; its own records (stale ranges,
objects to delete) go with it, and its index is never given to another member.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import AsyncIterator, Awaitable, Callable

from pfs.protocol.paths import brief

from .cluster import Cluster
from .copies import Copies
from .deletions import Deletions
from .namespace import NamespaceError, Node
from .openfiles import OpenFiles
from .repair import Repair
from .replication import Replication
from .store import MetaStore

log = logging.getLogger("pfs.metaserver")

#: Paths a refusal names (the rest are counted).
NAMED = 5
#: Seconds between looks whether a drained file's new copies are in sync.
DRAIN_POLL_SECONDS = 0.2


def removal(namespace: MetaStore, index: int, stale: dict[int, set[int]],
            members: list[int], online: set[int]) -> dict[int, int]:
    """For each file the member `index` holds a copy of: the member that takes that copy
    (file id -> new index); OSError saying why not when the removal must be refused. `stale`:
    file id -> fileservers whose copy is stale; `members`: every member but `index`."""
    moved, only, homeless = {}, [], []
    for node in namespace.files_on(index):
        column = node.servers.index(index) % node.width
        good = [i for i in node.copies(column)
                if i != index and i not in stale.get(node.node_id, ())]
        if not good and node.size > 0:
            only.append(node)
            continue
        spare = [i for i in members if i not in node.servers]
        if not spare:
            homeless.append(node)
            continue
        preferred = [i for i in spare if i in online] or spare  # spread: by the file's id
        moved[node.node_id] = preferred[node.node_id % len(preferred)]
    if only:
        raise OSError(errno.EBUSY, f"it holds the only good copy of {_named(namespace, only)}; "
                                   "bring it back online (its data is needed), or delete those "
                                   "files first")
    if homeless:
        raise OSError(errno.ENOSPC, f"no other fileserver can take its copies of "
                                    f"{_named(namespace, homeless)} (each copy of a file is on "
                                    "a fileserver of its own): add a fileserver first")
    return moved


def _named(namespace: MetaStore, nodes: list[Node]) -> str:
    paths = ", ".join(repr("/" + namespace.path_of(n.node_id)) for n in nodes[:NAMED])
    more = f" and {len(nodes) - NAMED} more files" if len(nodes) > NAMED else ""
    return f"{len(nodes)} file(s): {paths}{more}"


class Membership:
    """Removes members on the metaserver's loop, refusing as the invariant above says."""

    def __init__(self, namespace: MetaStore, cluster: Cluster, copies: Copies,
                 open_files: OpenFiles, deletions: Deletions, repair: Repair,
                 replication: Replication, namespace_lock: asyncio.Lock,
                 on_db_thread: Callable[..., Awaitable]) -> None:
        self._namespace, self._cluster, self._copies = namespace, cluster, copies
        self._open_files, self._deletions, self._repair = open_files, deletions, repair
        self._replication = replication
        self._lock, self._on_db_thread = namespace_lock, on_db_thread

    def _index(self, name: str) -> int:
        members = self._namespace.members()
        index = next((i for i, (n, _) in members.items() if n == name), None)
        if index is None:
            raise OSError(errno.ENOENT, f"no fileserver {brief(name)} is a member; the members "
                                        f"are {', '.join(n for n, _ in members.values())}")
        return index

    async def drain(self, name: str) -> AsyncIterator[tuple[int, int, str]]:
        """Moves every copy the online member `name` holds to other members, one file at a
        time: the file gets one more copy of each column, none on it (replication.py), the
        resync fills them, then the copies on it are dropped. Yields (files moved, files,
        the file being moved) as it goes. From the start no new file is placed on it."""
        index = await self._on_db_thread(self._index, name)
        if index not in self._cluster.online():
            raise OSError(errno.EHOSTDOWN, f"fileserver {name} is offline: a drain copies from "
                                           "it, so start it first (`pfs member remove` removes "
                                           "a member gone for good, if its copies have others)")
        files = await self._on_db_thread(self._namespace.files_on, index)  # (a scan)
        others = len(self._cluster.addresses()) - 1
        crowded = [f for f in files if f.width * (f.replicas + 1) > others + 1]
        if crowded:
            named = await self._on_db_thread(_named, self._namespace, crowded)
            raise OSError(errno.ENOSPC, f"{named} cannot be moved: "
                                        "a drain first adds a copy of each of a file's stripe "
                                        "columns on fileservers it does not use yet, and there "
                                        "are too few; add a fileserver first")
        busy = [f for f in files if self._open_files.is_open(f.node_id)]
        if busy:
            named = await self._on_db_thread(_named, self._namespace, busy)
            raise OSError(errno.EBUSY, f"{named} with a copy on "
                                       f"fileserver {name} are open; try again once they are "
                                       "closed")
        self._cluster.draining.add(index)
        log.warning("draining fileserver %s: its copies of %d file(s) are made on other "
                    "fileservers; no new file goes to it", name, len(files))
        for moved, node in enumerate(files):
            try:
                yield moved, len(files), await self._on_db_thread(self._namespace.path_of,
                                                                  node.node_id)
                added, _ = await self._replication.change(node.node_id, node.replicas + 1,
                                                          {index})
                while set(added) & await self._on_db_thread(self._copies.stale, node.node_id):
                    await asyncio.sleep(DRAIN_POLL_SECONDS)
                await self._replication.change(node.node_id, node.replicas, {index})
            except NamespaceError as e:
                if e.errno != errno.ENOENT:
                    raise  # (deleted meanwhile: nothing of it to move)
        log.warning("fileserver %s is drained: it holds no copy any more; stop it, then "
                    "`pfs member remove %s`", name, name)
        yield len(files), len(files), ""

    async def remove(self, name: str) -> int:
        """Removes the member `name` for good; how many files' copies on it are re-made
        elsewhere."""
        members = await self._on_db_thread(self._namespace.members)
        index = await self._on_db_thread(self._index, name)
        async with self._lock:  # (no file opens meanwhile)
            if index in self._cluster.online():
                raise OSError(errno.EBUSY, f"fileserver {name} is online: stop it first (`pfs "
                                           "up` restarts its own: remove only a fileserver "
                                           "that is gone for good)")
            others, online = [i for i in members if i != index], self._cluster.online()
            moved = await self._on_db_thread(lambda: removal(
                self._namespace, index, self._copies.stale_by_file(), others, online))
            busy = [f for f in moved if self._open_files.is_open(f)]
            if busy:
                such = await self._on_db_thread(self._namespace.path_of, busy[0])
                raise OSError(errno.EBUSY, f"{len(busy)} file(s) with a copy on fileserver "
                                           f"{name} are open (such as {brief(such)}); try "
                                           "again once they are closed")
            await self._on_db_thread(self._namespace.remove_member, index, moved)
        self._cluster.forget(index)
        self._deletions.forget(index)
        self._repair.wake()
        log.warning("fileserver %s removed from the cluster: its copies of %d file(s) are "
                    "re-made on other fileservers", name, len(moved))
        return len(moved)
