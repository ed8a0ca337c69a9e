"""Directory layouts, as Lustre's `lfs setstripe DIR`: the stripe width, stripe unit and replica
count that files created below a directory get unless their create says otherwise.

Invariant: a layout only chooses what a create leaves open; a file's recipe, once made, never
follows a later change of it. The nearest directory with a layout, from the new file's parent
up to the root, wins as a whole; what that layout leaves unset (0) is the cluster's default.
What a create asks for explicitly wins over any layout. A layout is kept in the metadata store
(store.py), keyed by the directory's id, and goes with the directory when it is removed.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass

from pfs.protocol.paths import brief

from .namespace import NamespaceError
from .store import MetaStore


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

    def __init__(self, namespace: MetaStore) -> None:
        self._namespace = namespace
        self._by_dir = {dir_id: Layout(*layout)
                        for dir_id, layout in namespace.layouts().items()}

    def set(self, path: tuple[str, ...], layout: Layout) -> None:
        """Gives the directory `path` its layout (an empty one removes it)."""
        node = self._namespace.lookup(path)
        if not node.is_dir:
            raise NamespaceError(errno.ENOTDIR, f"not a directory: {brief('/'.join(path))}")
        self._namespace.set_layout(node.node_id, (layout.stripe_width, layout.stripe_blocks,
                                                  layout.replicas) if layout else None)
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
        """The directory was removed (its stored layout with it)."""
        self._by_dir.pop(dir_id, None)
