"""Directory paging, tree walks and mkdir -p for the commands. (The client package's namespace
helpers do the same for fsspec; at the merge these give way to them.)

Invariant: a directory is read a page at a time and a tree without recursion, so neither a
directory of millions of entries nor a tree deeper than Python's stack breaks a command.
"""
from __future__ import annotations

import collections
import errno
from typing import Callable, Iterator

from pfs import errors, fileio
from pfs._proto import metaserver_pb2 as pb
from pfs.client import Client
from pfs.metadata import Metadata
from pfs.paths import base

from .connection import call
from .console import shown


def entries(path: str) -> Iterator[pb.FileMeta]:
    """The entries of a directory, a page at a time, outside any session."""
    after = ""
    while True:
        page = call("List", pb.ListRequest(path=path, after=after), f"list {shown(path)}")
        yield from page.entries
        if not page.more:
            return
        after = base(page.entries[-1].path)


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


def tree(client: Client, top: str) -> Iterator[tuple[str, list[Metadata]]]:
    """(directory, its entries) of a PFS tree, top first (breadth first)."""
    pending = collections.deque([top])
    while pending:
        here = pending.popleft()
        listed = client.listdir(here)
        yield here, listed
        pending.extend(m.filename for m in listed if m.is_dir)


def makedirs(client: Client, path: str) -> None:
    """mkdir -p: `path` and its missing parents; a file in the way is an error (ENOTDIR).
    fileio.makedirs accepts a file at `path` itself, so that one is checked here."""
    fileio.makedirs(client, path)
    if path and not client.stat(path).is_dir:
        raise errors.error(errno.ENOTDIR, f"{shown(path)} exists and is not a directory")


def remove_tree(client: Client, top: str, checkpoint: Callable[[], None]) -> None:
    """rm -r: the files of every directory of the tree, then the directories, bottom up;
    `checkpoint()` between two files (a safe point to stop at)."""
    directories = []
    for here, listed in tree(client, top):
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
