"""What the active metaserver knows of etcd without reading it: the keys it last committed or
read (absent ones too), and whole groups of keys (a directory's entries, a file's copy ranges)
it read in full, kept whole as its commits change them.

Invariant: one writer, so what this metaserver committed is what etcd holds; a read fills the
cache only if no commit came in between (`generation`), and a commit whose outcome is unknown
(or a new guard) empties it. A group is the keys up to their last "/" (`group_of`): `e/<dir>/`,
`m/<file>/`; a key of a group held whole is known, present or absent.
"""
from __future__ import annotations

import collections
import threading

from aetcd import rpc

from .etcdclient import prefix_end

#: Keys held (one by one, or in groups held whole, a group counting one more): a few hundred
#: bytes each.
CACHED_KEYS = 200_000
#: The most keys a group may have to be held whole (a bigger directory is read key by key).
GROUP_KEYS = 1000


def group_of(key: bytes) -> bytes:
    """The group of `key`: its prefix up to its last "/"."""
    return key[:key.rfind(b"/") + 1]


class WrittenCache:
    def __init__(self, prefixes: tuple[bytes, ...], grouped: tuple[bytes, ...]) -> None:
        """`prefixes`: the keys held one by one; `grouped`: those whose groups may be held
        whole."""
        self.prefixes, self.grouped = prefixes, grouped
        self._values: collections.OrderedDict[bytes, bytes | None] = collections.OrderedDict()
        #: Group -> its keys and values (None: too big to hold whole, read key by key).
        self._groups: collections.OrderedDict[bytes, dict[bytes, bytes] | None] = \
            collections.OrderedDict()
        self._grouped_keys = 0
        self._lock = threading.Lock()
        self._generation = 0

    def lookup(self, key: bytes) -> tuple[bool, bytes | None, int]:
        """(whether it is known, its value, the generation to give `read` back)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return True, self._values[key], self._generation
            group = self._groups.get(group_of(key))
            if group is not None:
                self._groups.move_to_end(group_of(key))
                return True, group.get(key), self._generation
            return False, None, self._generation

    def group(self, prefix: bytes) -> tuple[bool, dict[bytes, bytes] | None, int]:
        """(whether the group `prefix` is known, its keys and values (None: too big), the
        generation to give `read_group` back)."""
        with self._lock:
            if prefix in self._groups:
                self._groups.move_to_end(prefix)
                group = self._groups[prefix]
                return True, None if group is None else dict(group), self._generation
            return False, None, self._generation

    def read(self, key: bytes, value: bytes | None, generation: int) -> None:
        """`value` was read after `lookup` gave `generation`."""
        with self._lock:
            if self._generation == generation:
                self._remember(key, value)

    def read_group(self, prefix: bytes, kvs: dict[bytes, bytes] | None,
                   generation: int) -> None:
        """The group was read whole (None: it has more than GROUP_KEYS) after `group` gave
        `generation`."""
        with self._lock:
            if self._generation == generation:
                self._set_group(prefix, kvs)

    def _remember(self, key: bytes, value: bytes | None) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        if len(self._values) > CACHED_KEYS:
            self._values.popitem(last=False)

    def _set_group(self, prefix: bytes, kvs: dict[bytes, bytes] | None) -> None:
        self._drop_group(prefix)
        self._groups[prefix] = kvs
        self._grouped_keys += 1 + len(kvs or ())
        while self._grouped_keys > CACHED_KEYS:
            self._drop_group(next(iter(self._groups)))

    def _drop_group(self, prefix: bytes) -> None:
        if prefix in self._groups:
            self._grouped_keys -= 1 + len(self._groups.pop(prefix) or ())

    def committed(self, ops: list[rpc.RequestOp] | None, fresh: tuple[bytes, ...] = ()) -> None:
        """After a commit of `ops` (None: one whose outcome is unknown); the groups `fresh` are
        empty after it (a node's it created)."""
        with self._lock:
            for prefix in fresh:
                self._set_group(prefix, {})
            self._generation += 1
            if ops is None:
                self._values.clear()
                self._groups.clear()
                self._grouped_keys = 0
                return
            for op in ops:
                if op.HasField("request_put"):
                    self._put(op.request_put.key, op.request_put.value)
                else:
                    self._delete(op.request_delete_range.key, op.request_delete_range.range_end)

    def _put(self, key: bytes, value: bytes | None) -> None:
        if key.startswith(self.prefixes):
            self._remember(key, value)
        prefix = group_of(key)
        group = self._groups.get(prefix)
        if group is None:
            return
        if value is None:
            self._grouped_keys -= group.pop(key, None) is not None
            return
        self._grouped_keys += key not in group
        group[key] = value
        if len(group) > GROUP_KEYS:
            self._set_group(prefix, None)

    def _delete(self, key: bytes, end: bytes) -> None:
        if not end:
            self._put(key, None)
        elif key.startswith(self.grouped) and key.endswith(b"/") and end == prefix_end(key):
            if key.startswith(self.prefixes):  # (its keys held one by one: no longer known)
                self._values.clear()
            self._set_group(key, {})  # (a group deleted whole: known empty)
        elif any(key < prefix_end(p) and (end == b"\0" or p < end)
                 for p in self.prefixes + self.grouped):  # (no change does so: kept simple)
            self._values.clear()
            self._groups.clear()
            self._grouped_keys = 0
