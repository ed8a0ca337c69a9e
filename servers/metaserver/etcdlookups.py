"""The etcd engine's lookups: a node by path or id, a directory's listing (etcdkeys.py has the
layout; etcdnamespace.py the changes).

Invariant: a lookup reads nothing the active metaserver knows (etcdcache.py) and else one get
per component (a directory's entries whole, if not too many) and one for the node, and a listing
one paged range scan and one read-only transaction a page for its nodes.
"""
from __future__ import annotations

import dataclasses
import errno

from .etcdcommits import TXN_OPS, GuardedStore
from .etcdkeys import decode_node, entry_key, node_key
from .namespace import ROOT, NamespaceError, Node, missing_error, not_a_directory


class EtcdLookups(GuardedStore):
    def _node(self, node_id: int) -> tuple[Node, int, str] | None:
        """The node, its parent and name."""
        value = self._get(node_key(node_id))
        if value is None:
            return None
        return self._decoded(node_id, value)

    def _decoded(self, node_id: int, value: bytes) -> tuple[Node, int | None, str]:
        """(A directory written before link counts has its subdirectories counted here, until
        its next change stores the count.)"""
        node, parent, name = decode_node(node_id, value)
        if node.subdirs is None:
            node = dataclasses.replace(node, subdirs=sum(
                entry.endswith(b",1") for _, entry in self._scan(entry_key(node_id))))
        return node, parent, name

    def _entry(self, parent: int, name: str) -> tuple[int, bool] | None:
        """(A name not known: the directory's entries are read whole, if not too many, so
        that the next names looked up there, absent ones too, are known.)"""
        key = entry_key(parent, name)
        known, value = self._known(key)
        if not known:
            entries = self._group(entry_key(parent))
            value = self._get(key) if entries is None else entries.get(self.key(key))
        if value is None:
            return None
        node_id, is_dir = value.decode().split(",")
        return int(node_id, 16), is_dir == "1"

    def _walk(self, path: tuple[str, ...]) -> tuple[Node, int, str]:
        """The node at `path`, its parent's id and its name: one get per component, and one
        for the node."""
        node_id, is_dir = ROOT, True
        for depth, name in enumerate(path):
            if not is_dir:
                raise not_a_directory(path[:depth])
            entry = self._entry(node_id, name)
            if entry is None:
                raise missing_error(path, depth)
            node_id, is_dir = entry
        found = self._node(node_id)
        if found is None:
            raise missing_error(path, len(path) - 1)
        return found

    def _directory(self, path: tuple[str, ...]) -> tuple[Node, int, str]:
        found = self._walk(path)
        if not found[0].is_dir:
            raise not_a_directory(path)
        return found

    def lookup(self, path: tuple[str, ...]) -> Node:
        return self._walk(path)[0]

    def get(self, node_id: int) -> Node:
        found = self._node(node_id)
        if found is None:
            raise NamespaceError(errno.ENOENT, f"file {node_id} no longer exists")
        return found[0]

    def path_of(self, node_id: int) -> str:
        names = []
        while node_id != ROOT:
            found = self._node(node_id)
            if found is None or found[1] is None:
                return ""  # deleted meanwhile, or an orphan
            _, node_id, name = found
            names.append(name)
        return "/".join(reversed(names))

    def listdir(self, path: tuple[str, ...], after: str = "",
                limit: int = -1) -> list[tuple[str, Node]]:
        directory = self._directory(path)[0]
        prefix = entry_key(directory.node_id)
        entries = [(key[len(prefix):], int(value.split(b",")[0], 16)) for key, value in
                   self._scan(prefix, prefix + after + "\0" if after else None, limit)]
        nodes = {}
        for i in range(0, len(entries), TXN_OPS):  # the nodes, a read-only transaction a page
            chunk = [self.key(node_key(node_id)) for _, node_id in entries[i:i + TXN_OPS]]
            for key, value in self.etcd.get_many(chunk).items():
                node_id = int(key.rsplit(b"/", 1)[1], 16)
                nodes[node_id] = self._decoded(node_id, value)[0]
        return [(name, nodes[node_id]) for name, node_id in entries if node_id in nodes]

    def count_files(self) -> int:
        return self._counter("files")

    def _empty(self, node: Node) -> bool:
        return not list(self._scan(entry_key(node.node_id), limit=1))
