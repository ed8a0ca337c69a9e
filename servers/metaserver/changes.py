"""Changes to the namespace that involve more than the store: new files placed on fileservers,
layouts, renames and deletes that must see the open files, attributes, and
directories read a page at a time.

Invariant: a file open anywhere loses its name (deleted, or replaced by a rename) only if the
caller allows it, and becomes an orphan (orphans.py); else EBUSY. The namespace lock keeps opens
(filecalls.py) from interleaving with these checks and the commits that follow them.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Awaitable, Callable

from pfs.protocol.paths import brief, is_temporary
from pfs.protocol.ranges import INFINITY

from .cluster import Cluster
from .copies import Copies
from .deletions import Deletions
from .layouts import Layout, Layouts
from .namespace import NewAttributes, Node
from .openfiles import OpenFiles
from .orphans import Orphans
from .replication import Replication
from .store import MetaStore
from .temporaries import Temporaries

log = logging.getLogger("pfs.metaserver")

#: The largest stripe unit a directory's layout may ask for, in bytes.
MAX_STRIPE_UNIT = 1 << 30
#: Directory entries per List reply (a reply must stay well below gRPC's message limit).
LIST_PAGE = 10_000


class NamespaceChanges:
    def __init__(self, namespace: MetaStore, db: Callable[..., Awaitable],
                 read: Callable[..., Awaitable], namespace_lock: asyncio.Lock, open_files: OpenFiles, cluster: Cluster, copies: Copies, layouts: Layouts, replication: Replication,
                 temporaries: Temporaries, orphans: Orphans, deletions: Deletions,
                 defaults: Layout, block_size: int) -> None:
        """`defaults`: the cluster's stripe blocks and replica count, for what no layout says."""
        self._namespace, self._db, self._lock = namespace, db, namespace_lock
        self._read = read  # (MetaServer.read: the loop never waits on etcd)
        self._open_files, self._cluster = open_files, cluster
        self._copies, self._layouts, self._replication = copies, layouts, replication
        self._temporaries, self._orphans, self._deletions = temporaries, orphans, deletions
        self._defaults, self._block_size = defaults, block_size

    async def create(self, client_id: int, path: tuple[str, ...], width: int,
                     replicas: int, attributes: NewAttributes = NewAttributes()) -> Node:
        """A new file; what `width` and `replicas` leave open (0) comes from its directory's
        layout (see new_file_layout)."""
        chosen, _ = await self.new_file_layout(path[:-1], width, replicas)
        servers = self._cluster.place(chosen.stripe_width, chosen.replicas)
        node = await self._db(self._namespace.create, path, self._block_size,
                              chosen.stripe_blocks, servers, chosen.replicas, attributes)
        if is_temporary(path[-1]):  # removed if its writer's session ends first
            await self._db(self._temporaries.created, node.node_id, client_id)
        online = self._cluster.online()
        for index in servers:
            if index not in online:  # born stale (cluster.place)
                await self._db(self._copies.missed, node.node_id, index, 0, INFINITY)
                log.info("file %d's copy on fileserver %s is stale from the start: it is "
                         "offline", node.node_id, self._cluster.name(index))
        log.debug("created %s (file %d) striped over fileservers %s", brief("/".join(path)),
                 node.node_id, servers)
        return node

    async def new_file_layout(self, directory: tuple[str, ...], width: int = 0,
                              replicas: int = 0) -> tuple[Layout, tuple[str, ...] | None]:
        """What a file created in `directory` gets, in full: what the create asks (`width`,
        `replicas`; 0: nothing), else what the nearest layout says (layouts.py), else the
        cluster's defaults, a layout's width no wider than the cluster allows now (as Lustre
        caps a stripe count); and the directory whose layout applies (None: none)."""
        layout, source = await self._read(self._layouts.inherited, directory)
        replicas = replicas or layout.replicas or self._defaults.replicas
        widest = self._cluster.widest(replicas)
        return Layout(width or min(layout.stripe_width or widest, widest),
                      layout.stripe_blocks or self._defaults.stripe_blocks, replicas), source

    async def layout_of(self, path: tuple[str, ...], named: str
                        ) -> tuple[Layout, Layout, tuple[str, ...] | None]:
        """A directory's own layout, what a file created in it gets, and the directory whose
        layout applies (None: none)."""
        node = await self._read(self._namespace.lookup, path)
        if not node.is_dir:
            raise OSError(errno.ENOTDIR, f"not a directory: {brief(named)} (`pfs stat` "
                                         "shows a file's recipe)")
        effective, source = await self.new_file_layout(path)
        return self._layouts.own(node.node_id), effective, source

    async def rmdir(self, path: tuple[str, ...]) -> None:
        node = await self._read(self._namespace.lookup, path)
        await self._db(self._namespace.rmdir, path)
        self._layouts.forget(node.node_id)

    async def set_layout(self, path: tuple[str, ...], layout: Layout) -> tuple[int, int]:
        """A directory's layout, or a file's replica count (its striping is fixed at create):
        (copies made, copies dropped)."""
        node = await self._read(self._namespace.lookup, path)
        members = len(self._cluster.addresses())
        if max(layout.stripe_width, 1) * max(layout.replicas, 1) > members:
            asked = " × ".join(f"{what} {n}" for what, n in (("stripe width", layout.stripe_width),
                                                              ("replicas", layout.replicas)) if n)
            raise OSError(errno.EINVAL, f"{asked} is more than the {members} fileservers (each "
                                        "copy of a stripe column is on one of its own)")
        if layout.stripe_blocks * self._block_size > MAX_STRIPE_UNIT:
            raise OSError(errno.EINVAL, f"a stripe unit of {layout.stripe_blocks} blocks of "
                                        f"{self._block_size} bytes is more than 1 GiB")
        if node.is_dir:
            await self._db(self._layouts.set, path, layout)
            log.info("layout of %s: %s", brief("/".join(path)) or "/", layout)
            return 0, 0
        if layout.stripe_width or layout.stripe_blocks or not layout.replicas:
            raise OSError(errno.EINVAL, f"{brief('/'.join(path))} is a file: its striping is "
                                        "fixed at create (copy it with `pfs cp --stripe-width N` "
                                        "to restripe); only its replica count can change")
        if layout.replicas == node.replicas:
            return 0, 0
        added, dropped = await self._replication.change(node.node_id, layout.replicas)
        return len(added), len(dropped)

    async def rename(self, old: tuple[str, ...], new: tuple[str, ...],
                     open_ok: bool = False) -> None:
        """Moves `old` to `new`; a file open anywhere is moved or replaced only if `open_ok`
        (POSIX: a replaced one becomes an orphan, orphans.py), else EBUSY."""
        async with self._lock:
            replaced_open = False
            for path in (old, new):
                try:
                    node = await self._read(self._namespace.lookup, path)
                except OSError:
                    continue  # a missing name: the rename itself says what is wrong
                if not node.is_dir and self._open_files.is_open(node.node_id):
                    if not open_ok:
                        raise _busy("rename" if path == old else "replace", "/".join(path),
                                    self._open_files.openers(node.node_id))
                    replaced_open = path == new
            replaced = await self._db(self._namespace.rename, old, new, replaced_open)
        if replaced is not None and not replaced.is_dir:
            if replaced_open:
                self._orphans.made(replaced.node_id)
            else:
                self._deletions.add(replaced.node_id, replaced.servers)
        log.debug("renamed %s to %s", brief("/".join(old)), brief("/".join(new)))

    async def delete(self, path: tuple[str, ...], named: str, open_ok: bool = False) -> None:
        """Deletes the file at `path` (as the caller `named` it). One open anywhere is EBUSY,
        or if `open_ok` (POSIX) loses its name now and is removed at its last close."""
        async with self._lock:
            node = await self._read(self._namespace.lookup, path)
            is_open = self._open_files.is_open(node.node_id)
            if is_open and not open_ok:
                raise _busy("delete", named, self._open_files.openers(node.node_id))
            await self._db(self._namespace.unlink, path, is_open)
        if is_open:
            self._orphans.made(node.node_id)
            log.debug("unlinked %s (file %d) while open", brief("/".join(path)), node.node_id)
            return
        log.debug("deleted %s (file %d)", brief("/".join(path)), node.node_id)
        self._deletions.add(node.node_id, node.servers)

    async def set_attributes(self, target: tuple[str, ...] | int, **changes) -> Node:
        """Sets POSIX attributes of the node at a path or with an id (namespace.set_attributes).
        An mtime set on an open file stays past its close (`cp -p` sets it before closing)."""
        node = await self._db(self._namespace.set_attributes, target, *(
            changes.get(k) for k in ("mode", "uid", "gid", "atime", "mtime")))
        f = self._open_files.get(node.node_id)
        if f is not None:
            f.node = node
            f.mtime_set = f.mtime_set or changes.get("mtime") is not None
        return node

    async def listing(self, path: tuple[str, ...], after: str
                      ) -> tuple[list[tuple[str, Node]], bool]:
        """A page of a directory's entries after the name `after`, and whether more follow."""
        page = await self._read(self._namespace.listdir, path, after, LIST_PAGE + 1)
        return page[:LIST_PAGE], len(page) > LIST_PAGE

    def files_under(self, path: tuple[str, ...]) -> list[Node]:
        """The files at or below `path`, a page of a directory at a time."""
        node = self._namespace.lookup(path)
        if not node.is_dir:
            return [node]
        files, pending = [], [path]
        while pending:
            here, after = pending.pop(), ""
            while page := self._namespace.listdir(here, after, LIST_PAGE):
                for name, child in page:
                    if child.is_dir:
                        pending.append(here + (name,))
                    elif child.has_data:
                        files.append(child)
                after = page[-1][0]
        return files


def _busy(what: str, path: str, openers: list[int]) -> OSError:
    return OSError(errno.EBUSY, f"cannot {what} {brief(path)}: it is open by client(s) "
                                f"{openers[:10]}; they must close it first")
