"""The commands' tree operations on top of the client's namespace helpers (pfs.client.namespace:
paging, walks, makedirs): directories outside a session, mkdir -p that refuses a file in the way,
and rm -r.

Invariant: a directory is read a page at a time and a tree without recursion, so neither a
directory of millions of entries nor a tree deeper than Python's stack breaks a command.
"""
from __future__ import annotations

import errno
from typing import Callable, Iterator

from pfs._proto import metaserver_pb2 as pb
from pfs.client import Client, namespace
from pfs.protocol import errnos

from .connection import call
from .console import shown


def entries(path: str) -> Iterator[pb.FileMeta]:
    """The entries of a directory, a page at a time, outside any session."""
    return namespace.entries(lambda request: call("List", request, f"list {shown(path)}"), path)


def descend(top: str, into: Callable[[pb.FileMeta], bool]
            ) -> Iterator[tuple[str, list[pb.FileMeta]]]:
    """(directory, its entries) of the tree at `top` outside any session, depth first in name
    order, each directory before those below it (as `ls -R` and `find` list them); `into(entry)`
    says whether to go into a subdirectory."""
    pending = [top]
    while pending:
        here = pending.pop()
        listed = list(entries(here))
        yield here, listed
        pending.extend(m.path for m in reversed(listed) if m.is_dir and into(m))


def makedirs(client: Client, path: str) -> None:
    """mkdir -p: `path` and its missing parents; a file in the way is an error (ENOTDIR).
    The client's makedirs accepts a file at `path` itself, so that one is checked here."""
    namespace.makedirs(client, path)
    if path and not client.stat(path).is_dir:
        raise errnos.error(errno.ENOTDIR, f"{shown(path)} exists and is not a directory")


def remove_tree(client: Client, top: str, checkpoint: Callable[[], None]) -> None:
    """rm -r: the files of every directory of the tree, then the directories, bottom up;
    `checkpoint()` between two files (a safe point to stop at)."""
    directories = []
    for here, listed in namespace.walk(client, top):
        directories.append(here)
        for m in listed:
            checkpoint()
            if not m.is_dir:
                try:
                    client.delete(m.filename)
                except FileNotFoundError:
                    pass
    for d in reversed(directories):
        client.rmdir(d)
