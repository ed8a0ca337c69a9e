"""Removing a member for good: a fileserver that will not come back (a mistyped --name, a dead
machine) stops being one of the cluster's fileservers, as `lfs`/`beegfs-ctl` operators remove a
target.

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

#: Paths a refusal names (the rest are counted).
NAMED = 5


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
                 namespace_lock: asyncio.Lock, on_db_thread: Callable[..., Awaitable]) -> None:
        self._namespace, self._cluster, self._copies = namespace, cluster, copies
        self._open_files, self._deletions, self._repair = open_files, deletions, repair
        self._lock, self._on_db_thread = namespace_lock, on_db_thread

    async def remove(self, name: str) -> int:
        """Removes the member `name` for good; how many files' copies on it are re-made
        elsewhere."""
        members = self._namespace.members()
        index = next((i for i, (n, _) in members.items() if n == name), None)
        if index is None:
            raise OSError(errno.ENOENT, f"no fileserver {brief(name)} is a member; the members "
                                        f"are {', '.join(n for n, _ in members.values())}")
        async with self._lock:  # (no file opens meanwhile)
            if index in self._cluster.online():
                raise OSError(errno.EBUSY, f"fileserver {name} is online: stop it first (`pfs "
                                           "up` restarts its own: remove only a fileserver "
                                           "that is gone for good)")
            moved = removal(self._namespace, index, self._copies.stale_by_file(),
                            [i for i in members if i != index], self._cluster.online())
            busy = [f for f in moved if self._open_files.is_open(f)]
            if busy:
                raise OSError(errno.EBUSY, f"{len(busy)} file(s) with a copy on fileserver "
                                           f"{name} are open (such as "
                                           f"{brief(self._namespace.path_of(busy[0]))}); try "
                                           "again once they are closed")
            await self._on_db_thread(self._namespace.remove_member, index, moved)
        self._cluster.forget(index)
        self._deletions.forget(index)
        self._repair.wake()
        log.warning("fileserver %s removed from the cluster: its copies of %d file(s) are "
                    "re-made on other fileservers", name, len(moved))
        return len(moved)
