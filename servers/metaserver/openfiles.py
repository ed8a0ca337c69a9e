"""The files some session has open: who has each open, and the newest size known of it.

A file's durable size (in the namespace) is its size as of the last close or fsync. While it is
open, clients may grow it in their caches and tell the metaserver when they give tokens up or
are asked (a glimpse), so the size here may be newer. It is forgotten with the last close: what
the durable size then says is what is stored. A truncate sets it outright, and counts as a new
"size epoch": a client that learned the size before a truncate must take the new one, smaller
or not.

Sizes told are of two kinds. `stored` is a size whose every byte is on the fileservers: the
durable size, or one told by a client giving up the file's tail (which stores all its writes
first). Any other size a client tells is *provisional*, kept per client: its bytes may still
be only in that client's cache. If that client's session ends with the file still open (it
crashed, was evicted, or could not store its writes), its provisional size is withdrawn, so no
reader is ever shown bytes that no fileserver holds; the withdrawal is a new size epoch too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .namespace import Node


@dataclass(eq=False)
class OpenFile:
    node: Node
    size: int
    size_epoch: int = 0
    openers: set[int] = field(default_factory=set)
    stored: int = 0  # every byte below it is on the fileservers
    provisional: dict[int, int] = field(default_factory=dict)  # client -> size beyond `stored`
    mtime_set: bool = False  # set by SetAttr: a close after writing leaves it


class OpenFiles:
    def __init__(self) -> None:
        self._files: dict[int, OpenFile] = {}
        self._by_client: dict[int, set[int]] = {}
        #: Called with a file's id when its last opener closes it (orphans.py).
        self.on_last_close: Callable[[int], None] = lambda file_id: None

    def open(self, client_id: int, node: Node) -> OpenFile:
        f = self._files.get(node.node_id)
        if f is None:
            f = self._files[node.node_id] = OpenFile(node, node.size, stored=node.size)
        f.openers.add(client_id)
        self._by_client.setdefault(client_id, set()).add(node.node_id)
        return f

    def get(self, file_id: int) -> OpenFile | None:
        return self._files.get(file_id)

    def of(self, client_id: int, file_id: int) -> OpenFile:
        """The file, which the client must have open."""
        f = self._files.get(file_id)
        if f is None or client_id not in f.openers:
            raise ValueError(f"client {client_id} does not have file {file_id} open")
        return f

    def is_open(self, file_id: int) -> bool:
        return file_id in self._files

    def openers(self, file_id: int) -> list[int]:
        f = self._files.get(file_id)
        return sorted(f.openers) if f else []

    def has_open(self, client_id: int, file_id: int) -> bool:
        return file_id in self._by_client.get(client_id, ())

    @staticmethod
    def told(f: OpenFile, client_id: int, size: int, stored: bool) -> None:
        """A client told a size it could have written; `stored`: all of it is stored."""
        f.size = max(f.size, size)
        if stored:
            f.stored = max(f.stored, size)
        if size > f.stored:
            f.provisional[client_id] = max(f.provisional.get(client_id, 0), size)
        for client, told in list(f.provisional.items()):
            if told <= f.stored:
                del f.provisional[client]

    def close(self, client_id: int, file_id: int, cleanly: bool = True) -> None:
        """The client closed the file; not `cleanly` when its session ended with the file still
        open: whatever it told of the size that is not stored is withdrawn."""
        f = self._files.get(file_id)
        if f is not None:
            f.openers.discard(client_id)
            if f.provisional.pop(client_id, 0) > f.stored and not cleanly:
                newest = max([f.stored, *f.provisional.values()])
                if newest < f.size:
                    self.truncated(f, newest)
            if not f.openers:
                del self._files[file_id]
                self.on_last_close(file_id)
        mine = self._by_client.get(client_id)
        if mine is not None:
            mine.discard(file_id)
            if not mine:
                del self._by_client[client_id]

    def close_all(self, client_id: int) -> None:
        """The client's session ended: the files it still has open are closed, not cleanly."""
        for file_id in list(self._by_client.get(client_id, ())):
            self.close(client_id, file_id, cleanly=False)

    @staticmethod
    def truncated(f: OpenFile, size: int) -> int:
        """Sets the size after a truncate; the new size epoch. (Epochs matter only to clients
        that have the file open, so they start over when it is opened again.)"""
        f.size = f.stored = size
        f.provisional.clear()
        f.size_epoch += 1
        return f.size_epoch
