"""The one interface through which the metaserver keeps everything durable: the namespace's
nodes (with their POSIX attributes, and symlinks' targets) and entries, orphans (files unlinked
while open), id counters, client sessions, the ranges copies missed (and those of them
they hold apart), objects still to delete, the cluster's members, directories' layouts, and
the files of each session (`writing`, `temporaries`).

Two engines implement it: SQLite in the metaserver's data directory (namespace.py, the
default) and etcd v3 (etcd.py, replicated: several metaservers share it, one active). Every
method that changes something is one commit: it happens whole or not at all. Tokens, leases
and open files are not here: they live in the active metaserver's memory, and a restart (or a
takeover) rebuilds them from the clients' reclaims (recovery.py).

Invariant: one writer. Only one metaserver writes a store (SQLite: the data directory's lock;
etcd: the leader key, whose revision guards every write, etcd.py), and its writes come one at
a time (the metadata thread, or the loop when that thread is idle: `now`). A read that would wait on
the network (etcd, where its cache does not hold what it reads) runs on the metadata thread
too (`at_once`).
"""
from __future__ import annotations

import abc
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager

if TYPE_CHECKING:
    from .namespace import Node

#: The session-file tables: a session's files that it may leave something behind on.
#: `writing`: replicated files it may send writes to (copies.py); `temporaries`: files it
#: created under a temporary name (temporaries.py).
SESSION_FILE_TABLES = ("writing", "temporaries")


@dataclass(frozen=True)
class NewAttributes:
    """What a new file, directory or symlink starts with (None: never set, as in Node)."""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class WouldWait(Exception):
    """A read `MetaStore.at_once` ran would have waited on the network: nothing was read."""


class MetaStore(abc.ABC):
    #: Whether a read may wait on the network (etcd): then a call reads ahead, off the loop,
    #: what it reads later where it must not wait (a grant's stale copies).
    reads_wait = False

    # --- running ----------------------------------------------------------------------------
    def at_once(self, fn, *args):
        """fn(*args), a read, if it needs no round trip (SQLite: always); else WouldWait (then
        it goes to the metadata thread: the loop never waits on etcd)."""
        return fn(*args)

    @abc.abstractmethod
    def now(self, fn, *args):
        """fn(*args), a change, at once if no other thread is writing one; else WriterBusy
        (then it goes to the metadata thread; an engine whose commits wait on the network
        always says so)."""

    @abc.abstractmethod
    def exclusive(self) -> ContextManager:
        """Held across a read and the change made from it: no other change commits meanwhile
        (reentrant; `now` and every change hold it too)."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Puts every committed change where a crash of this machine cannot take it."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def resume(self) -> None:
        """Finishes a change of many commits that a crash interrupted (etcd: a durable
        intent); called before anything else by the metaserver that becomes active."""

    # --- the namespace ----------------------------------------------------------------------
    @abc.abstractmethod
    def lookup(self, path: tuple[str, ...]) -> Node: ...

    @abc.abstractmethod
    def get(self, node_id: int) -> Node: ...

    @abc.abstractmethod
    def path_of(self, node_id: int) -> str:
        """The node's path now ("" if it is gone)."""

    @abc.abstractmethod
    def listdir(self, path: tuple[str, ...], after: str = "",
                limit: int = -1) -> list[tuple[str, Node]]:
        """The directory's entries whose names sort after `after`, by name, at most `limit`."""

    @abc.abstractmethod
    def count_files(self) -> int: ...

    # (A change of a directory's entries moves its mtime and ctime, but the root's.)
    @abc.abstractmethod
    def create(self, path: tuple[str, ...], block_size: int, stripe_blocks: int,
               servers: list[int], replicas: int = 1,
               attributes: NewAttributes = NewAttributes()) -> Node: ...

    @abc.abstractmethod
    def mkdir(self, path: tuple[str, ...], attributes: NewAttributes = NewAttributes()) -> Node: ...

    @abc.abstractmethod
    def symlink(self, path: tuple[str, ...], target: str,
                attributes: NewAttributes = NewAttributes()) -> Node:
        """A symbolic link: a node without data (no servers) whose target is kept here."""

    @abc.abstractmethod
    def mknod(self, path: tuple[str, ...], special: int, rdev: int | None,
              attributes: NewAttributes = NewAttributes()) -> Node:
        """A special file (FIFO, socket, device): a node without data, of type `special`."""

    @abc.abstractmethod
    def set_attributes(self, target: tuple[str, ...] | int, mode: int | None = None,
                       uid: int | None = None, gid: int | None = None,
                       atime: float | None = None, mtime: float | None = None) -> Node:
        """Sets those of the POSIX attributes that are given of the node at a path, or of the
        node with an id (an open file, which may have no name left); ctime moves too."""

    @abc.abstractmethod
    def unlink(self, path: tuple[str, ...], orphan: bool = False) -> Node:
        """Removes a file; its objects are recorded as still to delete, in the same commit.
        `orphan` (it is open somewhere): only its name goes, and it is recorded an orphan."""

    @abc.abstractmethod
    def rmdir(self, path: tuple[str, ...]) -> None: ...

    @abc.abstractmethod
    def rename(self, old: tuple[str, ...], new: tuple[str, ...],
               orphan_replaced: bool = False) -> Node | None:
        """Moves `old` to `new` as POSIX does; the node it replaced, if any (a file replaced
        becomes an orphan if `orphan_replaced`)."""

    @abc.abstractmethod
    def record_size(self, node_id: int, size: int, touch: bool, exact: bool = False) -> None:
        """`touch`: mtime and ctime move too."""

    # --- orphans (orphans.py) ---------------------------------------------------------------
    @abc.abstractmethod
    def orphans(self) -> list[int]:
        """The files unlinked (or replaced) while open, not removed yet."""

    @abc.abstractmethod
    def reclaim_orphan(self, node_id: int) -> Node | None:
        """Removes an orphan as unlink does; the node, or None if it is no orphan."""

    @abc.abstractmethod
    def change_copies(self, file_id: int, servers: list[int], replicas: int, added: list[int],
                      dropped: list[int]) -> None:
        """In one commit (replication.py): the file's copies are `servers`, `replicas` of each
        column; the `added` members' copies missed everything; the `dropped` ones' records go,
        and their objects are recorded as still to delete (with any recorded before)."""

    # --- directories' layouts (layouts.py) --------------------------------------------------
    @abc.abstractmethod
    def layouts(self) -> dict[int, tuple[int, int, int]]:
        """Directory id -> its layout, (stripe width, stripe blocks, replicas), 0 unset. A
        removed directory's layout goes with it, in the same commit."""

    @abc.abstractmethod
    def set_layout(self, dir_id: int, layout: tuple[int, int, int] | None) -> None:
        """Gives the directory its layout (None: none)."""

    # --- objects still to delete ------------------------------------------------------------
    @abc.abstractmethod
    def pending_deletes(self) -> list[tuple[int, tuple[int, ...]]]: ...

    @abc.abstractmethod
    def delete_done(self, file_ids: list[int]) -> None: ...

    # --- members ----------------------------------------------------------------------------
    @abc.abstractmethod
    def register_fileserver(self, name: str, uuid: str, address: str) -> tuple[int, bool]:
        """The member's stable index, and whether it came back with another data directory."""

    @abc.abstractmethod
    def members(self) -> dict[int, tuple[str, float]]: ...

    @abc.abstractmethod
    def fileservers(self) -> dict[int, str]: ...

    @abc.abstractmethod
    def files_on(self, index: int) -> list[Node]:
        """The files fileserver `index` holds a copy of (a scan)."""

    @abc.abstractmethod
    def remove_member(self, index: int, moved: dict[int, int]) -> None:
        """Member `index` goes for good: each of its copies to the member `moved` names,
        missing everything there (replicated files); its records go with it; its index is
        never given again."""

    # --- sessions ---------------------------------------------------------------------------
    @abc.abstractmethod
    def new_session(self, key_hash: bytes) -> int: ...

    @abc.abstractmethod
    def next_client_id(self) -> int: ...

    @abc.abstractmethod
    def forget_session(self, client_id: int) -> None: ...

    @abc.abstractmethod
    def recorded_sessions(self) -> dict[int, bytes]: ...

    @abc.abstractmethod
    def add_session_file(self, table: str, client_id: int, file_id: int) -> None: ...

    @abc.abstractmethod
    def session_files(self, table: str, client_id: int) -> list[int]: ...

    @abc.abstractmethod
    def session_file_clients(self, table: str) -> set[int]: ...

    @abc.abstractmethod
    def drop_session_files(self, table: str, client_id: int,
                           file_ids: list[int] | None = None) -> None:
        """Forgets the session's files (`file_ids`, or all of them)."""

    # --- missed ranges (copies.py) ----------------------------------------------------------
    @abc.abstractmethod
    def missed(self, file_id: int | None = None,
               limit: int = -1) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """(file id, fileserver, its copy's missed local ranges, by start) of one file or of
        all, by file id and fileserver, at most `limit` copies."""

    @abc.abstractmethod
    def apart(self, file_id: int | None = None) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """As `missed`, the missed ranges each copy holds everything it was sent of (copies.py:
        recorded only to keep it equal to the kept copy after an unfinished write)."""

    @abc.abstractmethod
    def set_missed(self, changes: dict[tuple[int, int], list[tuple[int, int]]],
                   forget_writer: int | None = None,
                   apart: dict[tuple[int, int], list[tuple[int, int]]] | None = None) -> None:
        """In one commit: each copy (file id, fileserver) of `changes` missed exactly these
        ranges (none: it is whole), each of `apart` holds these apart, and the session
        `forget_writer` writes no file any more."""

    @abc.abstractmethod
    def mark_lost(self, server: int) -> int:
        """Fileserver `server` lost its data: its copy of every replicated file missed
        everything, and holds nothing apart. How many files. (May be many commits, each
        idempotent, behind a durable intent: a crash midway is finished by the next start.)"""


def open_store(spec: str | None, data_dir: pathlib.Path, **etcd_options) -> MetaStore:
    """The store `--store` names: None or "sqlite" for SQLite in the data directory,
    "etcd://HOST:PORT[,HOST:PORT...]" for etcd."""
    if spec is None or spec == "sqlite":
        from .namespace import Namespace
        return Namespace(data_dir / "metadata.sqlite3")
    if spec.startswith("etcd://"):
        from .etcd import EtcdStore
        return EtcdStore(spec[len("etcd://"):].split(","), **etcd_options)
    raise SystemExit(f"--store {spec!r}: give sqlite (the default) or "
                     "etcd://HOST:PORT[,HOST:PORT...]")
