"""The namespace on etcd: nodes (`n/<id>`) and the entries naming them (`e/<parent>/<name>`),
changed here and looked up by etcdlookups.py.

Invariant: every create, unlink, rename or attribute change is one guarded transaction
(etcdcommits.py) and no other round trip, so the tree is never seen half changed; the counters
and the link counts of the directories whose subdirectories change move in the same transaction.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import time

from aetcd import rpc

from pfs.protocol.paths import brief
from pfs.protocol.ranges import INFINITY

from .etcdclient import delete, put
from .etcdcommits import KeyExists
from .etcdkeys import (
    encode_node,
    entry_key,
    entry_value,
    id_after,
    layout_key,
    node_key,
    orphan_key,
    pending_key,
    ranges_key,
)
from .etcdlookups import EtcdLookups
from .namespace import ROOT, NamespaceError, NewAttributes, Node, check_replace, may_move


class EtcdNamespace(EtcdLookups):
    def _make_root(self) -> None:
        if self._get(node_key(ROOT)) is None:
            now = time.time()
            self._commit([self._put_node(Node(ROOT, True, 0, now, now, 0, 0, ()), ROOT, "")])

    # --- creating ---------------------------------------------------------------------------
    def _new_entry(self, path: tuple[str, ...], is_dir: bool, block_size: int = 0,
                   stripe_blocks: int = 0, servers=(), replicas: int = 1,
                   attributes: NewAttributes = NewAttributes(),
                   target: str | None = None, special: int | None = None,
                   rdev: int | None = None) -> Node:
        with self._write_lock:
            if not path:
                raise NamespaceError(errno.EEXIST, "the root directory exists")
            parent = self._directory(path[:-1])[0]
            name = entry_key(parent.node_id, path[-1])
            known, value = self._known(name)
            if value is not None:
                raise NamespaceError(errno.EEXIST, f"exists: {brief('/'.join(path))}")
            node_id = self._counter("node_id") + 1
            now = time.time()
            a = attributes
            node = Node(node_id, is_dir, 0, now, now, block_size, stripe_blocks, tuple(servers),
                        replicas, a.mode, a.uid, a.gid, None, target, special, rdev)
            ops = [self._put_node(node, parent.node_id, path[-1]),
                   put(self.key(entry_key(parent.node_id, path[-1])), entry_value(node))]
            ops += self._touched({parent.node_id: int(is_dir)}, now)
            counters = {"node_id": node_id}
            if not is_dir:
                counters["files"] = self._counter("files") + 1
            try:
                self._commit(ops, counters, absent=() if known else (name,),
                             fresh=(entry_key(node_id),) if is_dir else
                             (ranges_key("m", node_id), ranges_key("a", node_id)))
            except KeyExists:
                raise NamespaceError(errno.EEXIST, f"exists: {brief('/'.join(path))}") from None
            return node

    def _put_node(self, node: Node, parent: int | None, name: str) -> rpc.RequestOp:
        return put(self.key(node_key(node.node_id)), encode_node(node, parent, name))

    def _touched(self, subdirs: dict[int, int], now: float) -> list[rpc.RequestOp]:
        """The ops changing directories whose entries change, by their change of subdirectories:
        their mtime and ctime move (POSIX), but the root's, which every top-level change would
        otherwise rewrite (it is written when its link count changes)."""
        ops = []
        for dir_id, change in subdirs.items():
            if dir_id == ROOT and not change:
                continue
            node, parent, name = self._node(dir_id)
            times = {} if dir_id == ROOT else dict(mtime=now, ctime=now)
            ops.append(self._put_node(dataclasses.replace(node, subdirs=node.subdirs + change,
                                                          **times), parent, name))
        return ops

    def create(self, path, block_size, stripe_blocks, servers, replicas=1,
               attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, False, block_size, stripe_blocks, servers, replicas,
                               attributes)

    def mkdir(self, path: tuple[str, ...], attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, True, attributes=attributes)

    def symlink(self, path: tuple[str, ...], target: str,
                attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, False, attributes=attributes, target=target)

    def mknod(self, path: tuple[str, ...], special: int, rdev: int | None,
              attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, False, attributes=attributes, special=special, rdev=rdev)

    # --- changing ---------------------------------------------------------------------------
    def set_attributes(self, target: tuple[str, ...] | int, mode: int | None = None,
                       uid: int | None = None, gid: int | None = None,
                       atime: float | None = None, mtime: float | None = None) -> Node:
        with self._write_lock:
            found = self._walk(target) if isinstance(target, tuple) else self._node(target)
            if found is None:
                raise NamespaceError(errno.ENOENT, f"file {target} no longer exists")
            node, parent, name = found
            changes = {"mode": mode, "uid": uid, "gid": gid, "atime": atime, "mtime": mtime}
            node = dataclasses.replace(node, ctime=time.time(),
                                       **{k: v for k, v in changes.items() if v is not None})
            self._commit([self._put_node(node, parent, name)])
            return node

    def record_size(self, node_id: int, size: int, touch: bool, exact: bool = False) -> None:
        with self._write_lock:
            found = self._node(node_id)
            if found is None:
                return
            node, parent, name = found
            now = time.time()  # (a write moves ctime too, as POSIX says)
            node = dataclasses.replace(node, size=size if exact else max(size, node.size),
                                       mtime=now if touch else node.mtime,
                                       ctime=now if touch else node.ctime)
            self._commit([self._put_node(node, parent, name)])

    def change_copies(self, file_id: int, servers: list[int], replicas: int, added: list[int],
                      dropped: list[int]) -> None:
        with self._write_lock:
            found = self._node(file_id)
            if found is None:
                raise NamespaceError(errno.ENOENT, f"file {file_id} no longer exists")
            node, parent, name = found
            node = dataclasses.replace(node, servers=tuple(servers), replicas=replicas)
            ops = [self._put_node(node, parent, name)]
            ops += [put(self.key(ranges_key("m", file_id, i)), json.dumps([[0, INFINITY]]))
                    for i in added]
            for i in dropped:
                ops += [delete(self.key(ranges_key(kind, file_id, i))) for kind in ("m", "a")]
                ops.append(put(self.key(pending_key(file_id, i)), str(i)))
            self._commit(ops)  # (a few ops a copy: within one transaction)

    def layouts(self) -> dict[int, tuple[int, int, int]]:
        return {id_after(key, "l/"): tuple(json.loads(value)) for key, value in self._scan("l/")}

    def set_layout(self, dir_id: int, layout: tuple[int, int, int] | None) -> None:
        with self._write_lock:
            key = self.key(layout_key(dir_id))
            self._commit([delete(key) if layout is None else put(key, json.dumps(list(layout)))])

    # --- removing ---------------------------------------------------------------------------
    def _removal(self, node: Node) -> list[rpc.RequestOp]:
        """The ops removing a node (not its entry); the files counter is the caller's
        (`_fewer_files`)."""
        ops = [delete(self.key(node_key(node.node_id)))]
        if not node.is_dir:
            if node.servers:  # (a symlink has no objects)
                ops.append(put(self.key(pending_key(node.node_id)),
                               ",".join(str(s) for s in node.servers)))
            ops += [self._delete_under(ranges_key(kind, node.node_id)) for kind in ("m", "a")]
        else:
            ops.append(delete(self.key(layout_key(node.node_id))))
        return ops

    def _fewer_files(self, node: Node | None) -> dict[str, int]:
        """The counters of a commit that removes `node` (None: nothing)."""
        return {"files": self.count_files() - 1} if node is not None and not node.is_dir else {}

    def _delete_entry(self, path: tuple[str, ...], parent: int) -> rpc.RequestOp:
        return delete(self.key(entry_key(parent, path[-1])))

    def unlink(self, path: tuple[str, ...], orphan: bool = False) -> Node:
        with self._write_lock:
            node, parent, _ = self._walk(path)
            if node.is_dir:
                raise NamespaceError(errno.EISDIR, f"is a directory (use rmdir): "
                                                   f"{brief('/'.join(path))}")
            ops = self._touched({parent: 0}, time.time()) + [self._delete_entry(path, parent)]
            if orphan:
                self._commit(ops + self._orphaned(node))
            else:
                self._commit(ops + self._removal(node), self._fewer_files(node))
            return node

    def _orphaned(self, node: Node) -> list[rpc.RequestOp]:
        """The ops keeping a file whose entry goes as an orphan: no parent, recorded."""
        return [self._put_node(node, None, ""), put(self.key(orphan_key(node.node_id)), b"")]

    def orphans(self) -> list[int]:
        return [id_after(key, "o/") for key, _ in self._scan("o/")]

    def reclaim_orphan(self, node_id: int) -> Node | None:
        with self._write_lock:
            found = self._node(node_id)
            if self._get(orphan_key(node_id)) is None or found is None:
                return None
            node = found[0]
            self._commit([delete(self.key(orphan_key(node_id)))] + self._removal(node),
                         self._fewer_files(node))
            return node

    def rmdir(self, path: tuple[str, ...]) -> None:
        with self._write_lock:
            if not path:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be removed")
            node, parent, _ = self._directory(path)
            if not self._empty(node):
                raise NamespaceError(errno.ENOTEMPTY, f"directory not empty: "
                                                      f"{brief('/'.join(path))}")
            self._commit(self._touched({parent: -1}, time.time()) +
                         self._removal(node) + [self._delete_entry(path, parent)])

    def rename(self, old: tuple[str, ...], new: tuple[str, ...],
               orphan_replaced: bool = False) -> Node | None:
        with self._write_lock:
            if not old or not new:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be renamed or "
                                                  "replaced")
            try:
                return self._rename(old, new, orphan_replaced, read_target=False)
            except KeyExists:  # (the target was not known to exist: it does)
                return self._rename(old, new, orphan_replaced, read_target=True)

    def _rename(self, old: tuple[str, ...], new: tuple[str, ...], orphan_replaced: bool,
                read_target: bool) -> Node | None:
        """`read_target`: whether the target's entry is read first if the cache does not
        know it (else the commit expects it absent)."""
        moving, old_parent, _ = self._walk(old)
        parent = self._directory(new[:-1])[0]
        if not may_move(moving, old, new):
            return None
        ops, replaced, removed = [], None, None
        target = entry_key(parent.node_id, new[-1])
        known = read_target or self._known(target)[0]
        entry = self._entry(parent.node_id, new[-1]) if known else None
        if entry is not None:
            replaced = self.get(entry[0])
            if replaced.node_id == moving.node_id:
                return None
            check_replace(moving, replaced, self._empty(replaced), new)
            if orphan_replaced and not replaced.is_dir:
                ops += self._orphaned(replaced)  # (still a file: the counter stays)
            else:
                ops += self._removal(replaced)
                removed = replaced
        subdirs = collections.Counter({old_parent: -moving.is_dir})
        subdirs[parent.node_id] += moving.is_dir - bool(replaced and replaced.is_dir)
        ops += self._touched(subdirs, time.time())
        ops += [self._delete_entry(old, old_parent),
                put(self.key(entry_key(parent.node_id, new[-1])), entry_value(moving)),
                self._put_node(moving, parent.node_id, new[-1])]
        self._commit(ops, self._fewer_files(removed), absent=() if known else (target,))
        return replaced
