"""Directory layouts, as Lustre's `lfs setstripe DIR`: the stripe width, stripe unit and replica
count that files created below a directory get unless their create says otherwise.

Invariant: a layout only chooses what a create leaves open; a file's recipe, once made, never
follows a later change of it. The nearest directory with a layout, from the new file's parent
up to the root, wins as a whole; what that layout leaves unset (0) is the cluster's default.
What a create asks for explicitly wins over any layout. A layout lives in table `layouts`,
keyed by the directory's id (ids are never reused, so a removed directory's row is never
consulted again, and `forget` drops it).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from pfs.protocol.paths import brief

from .namespace import Namespace, NamespaceError

SCHEMA = """
CREATE TABLE IF NOT EXISTS layouts (
    dir INTEGER PRIMARY KEY,             -- a directory's node id
    stripe_width INTEGER NOT NULL,       -- 0: not set
    stripe_blocks INTEGER NOT NULL,
    replicas INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class Layout:
    stripe_width: int = 0
    stripe_blocks: int = 0
    replicas: int = 0

    def __bool__(self) -> bool:
        return any((self.stripe_width, self.stripe_blocks, self.replicas))


class Layouts:
    """The layouts, also kept in memory (few directories have one, and the metaserver is
    their only writer), so that a create in a tree without any costs no lookup."""

    def __init__(self, namespace: Namespace) -> None:
        self._namespace = namespace
        with namespace.transaction() as db:
            db.execute(SCHEMA)
        self._by_dir = {row[0]: Layout(*row[1:]) for row in namespace.query(
            "SELECT dir, stripe_width, stripe_blocks, replicas FROM layouts")}

    def set(self, path: tuple[str, ...], layout: Layout) -> None:
        """Gives the directory `path` its layout (an empty one removes it)."""
        node = self._namespace.lookup(path)
        if not node.is_dir:
            raise NamespaceError(errno.ENOTDIR, f"not a directory: {brief('/'.join(path))}")
        with self._namespace.transaction() as db:
            if layout:
                db.execute("INSERT OR REPLACE INTO layouts (dir, stripe_width, stripe_blocks, "
                           "replicas) VALUES (?, ?, ?, ?)", (node.node_id, layout.stripe_width,
                                                             layout.stripe_blocks,
                                                             layout.replicas))
            else:
                db.execute("DELETE FROM layouts WHERE dir = ?", (node.node_id,))
        if layout:
            self._by_dir[node.node_id] = layout
        else:
            self._by_dir.pop(node.node_id, None)

    def own(self, dir_id: int) -> Layout:
        return self._by_dir.get(dir_id, Layout())

    def inherited(self, directory: tuple[str, ...]) -> tuple[Layout, tuple[str, ...] | None]:
        """The layout files created in `directory` get, and the directory it is on (None:
        no directory on the way up has one)."""
        if self._by_dir:
            for depth in range(len(directory), -1, -1):
                layout = self.own(self._namespace.lookup(directory[:depth]).node_id)
                if layout:
                    return layout, directory[:depth]
        return Layout(), None

    def forget(self, dir_id: int) -> None:
        """The directory was removed."""
        if self._by_dir.pop(dir_id, None) is not None:
            with self._namespace.transaction() as db:
                db.execute("DELETE FROM layouts WHERE dir = ?", (dir_id,))
