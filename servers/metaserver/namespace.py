"""The SQLite engine of the metadata store (store.py): the namespace, a tree of directories and
files with their recipes and sizes, and the rest the metaserver keeps durably (members,
sessions, missed and apart ranges, objects to delete, layouts, session files).

Two tables hold the tree, as in JuiceFS: `nodes` (id, kind, size, times, recipe) and `entries`
(parent id, name -> node id). A lookup walks entries one component at a time on their primary
key; a rename moves one entry row; listing a directory reads the entries of one parent. Nothing
scans the tree. A file's id names its objects on the fileservers and never changes, renames
included; ids come from AUTOINCREMENT and are never reused, so a stale object can never alias a
new file. The root is node 0 and has no entry.

Everything lives in one SQLite database in WAL mode. A commit is in the log (handed to the
kernel) before the call returns, so a crash of any PFS process loses nothing committed; `sync()`
puts the log on the disk, which the metaserver does every second and whenever a client fsyncs,
so a crash of the machine loses at most the last second of namespace changes (as a journaling
file system's commit interval). Every change is one transaction, so a failed one changes
nothing. Reads, writes and syncs use connections of their own (WAL lets readers go on while a
writer commits, and a checkpoint while both do), and commits never checkpoint by themselves:
a commit only appends to the log, so the metaserver can read and commit on its event loop
(`now`) while the syncs (the fsyncs) run on a thread of its own.
"""
from __future__ import annotations

import contextlib
import errno
import pathlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from pfs.metadata import Recipe
from pfs.protocol.paths import brief
from pfs.protocol.ranges import INFINITY

from .store import SESSION_FILE_TABLES, MetaStore, NewAttributes

ROOT = 0

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    is_dir INTEGER NOT NULL,
    size INTEGER NOT NULL,
    ctime REAL NOT NULL,
    mtime REAL NOT NULL,
    block_size INTEGER NOT NULL,        -- 0 for a directory
    stripe_blocks INTEGER NOT NULL,     -- 0 for a directory
    servers TEXT NOT NULL,              -- fileserver indices: copy k of column c at k * width + c
    replicas INTEGER NOT NULL DEFAULT 1 -- copies of each stripe unit
    -- mode, uid, gid, atime, target: POSIX attributes and a symlink's target; special, rdev:
    -- a special file's type and a device's number (added by _migrate_attributes); subdirs: a
    -- directory's subdirectories, its link count less 2 (added by _migrate_subdirs)
);
CREATE TABLE IF NOT EXISTS entries (
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    node INTEGER NOT NULL UNIQUE,       -- no hard links: a node has one name
    PRIMARY KEY (parent, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fileservers (
    idx INTEGER PRIMARY KEY,            -- stable index, what recipes refer to
    uuid TEXT NOT NULL UNIQUE,          -- identity kept in the fileserver's data directory
    address TEXT NOT NULL
    -- name TEXT UNIQUE: the member's stable name; lost_at REAL: when it last came back with a
    -- new data directory (both added by _migrate_members)
);
CREATE TABLE IF NOT EXISTS pending_deletes (
    file_id INTEGER PRIMARY KEY,        -- objects still to remove from the fileservers
    servers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS missed (      -- bytes a copy of a file missed (copies.py)
    file_id INTEGER NOT NULL,
    server INTEGER NOT NULL,
    start INTEGER NOT NULL,              -- local offsets of the copy's object
    end_ INTEGER NOT NULL,
    PRIMARY KEY (file_id, server, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS apart (       -- missed ranges a copy holds all it was sent of, marked
    file_id INTEGER NOT NULL,            -- only to keep it from differing from the kept copy
    server INTEGER NOT NULL,             -- after an unfinished write (copies.py)
    start INTEGER NOT NULL,
    end_ INTEGER NOT NULL,
    PRIMARY KEY (file_id, server, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS layouts (     -- directories' default layouts (layouts.py)
    dir INTEGER PRIMARY KEY,             -- a directory's node id
    stripe_width INTEGER NOT NULL,       -- 0: not set
    stripe_blocks INTEGER NOT NULL,
    replicas INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS writing (      -- sessions that may have writes on some copies only
    client_id INTEGER NOT NULL,          -- (copies.py)
    file_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, file_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS temporaries (
    file_id INTEGER PRIMARY KEY,        -- a file created under a temporary name
    client_id INTEGER NOT NULL          -- by this session (temporaries.py)
);
CREATE INDEX IF NOT EXISTS temporaries_by_client ON temporaries (client_id);
CREATE TABLE IF NOT EXISTS orphans (     -- files unlinked (or replaced) while open: no entry,
    file_id INTEGER PRIMARY KEY          -- removed at the last close (Namespace.reclaim_orphan)
);
CREATE TABLE IF NOT EXISTS sessions (
    client_id INTEGER PRIMARY KEY,      -- a live client session (recovery after a restart)
    key_hash BLOB NOT NULL              -- SHA-256 of its key: the key itself is never stored
);
"""


class NamespaceError(OSError):
    """A namespace operation that cannot be done: errno says why (ENOENT, EEXIST, ENOTDIR,
    EISDIR, ENOTEMPTY, EINVAL, EBUSY); nothing was changed."""


class StorageFull(Exception):
    """The metadata disk is full: nothing was changed."""


class WriterBusy(Exception):
    """Another thread is writing a change (see Namespace.now): nothing was changed."""


@dataclass(frozen=True)
class Node:
    node_id: int
    is_dir: bool
    size: int
    ctime: float
    mtime: float
    block_size: int
    stripe_blocks: int
    servers: tuple[int, ...]  # copy k of stripe column c is servers[k * width + c]
    replicas: int = 1
    mode: int | None = None  # permission bits; None: never set (the mount shows 0644, 0755)
    uid: int | None = None  # None: never set (shown as whoever looks)
    gid: int | None = None
    atime: float | None = None  # None: never set (shown as mtime)
    target: str | None = None  # a symlink's target; None for a file or directory
    special: int | None = None  # a special file's type: stat.S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK
    rdev: int | None = None  # a device's number
    subdirs: int = 0  # a directory's subdirectories (its link count is 2 more, as POSIX's)

    @property
    def is_symlink(self) -> bool:
        return self.target is not None

    @property
    def has_data(self) -> bool:
        """A regular file: not a directory, symlink or special file (which have no objects)."""
        return not self.is_dir and self.target is None and self.special is None

    @property
    def recipe(self) -> Recipe:
        """Its striping as clients see it (pfs/metadata.py)."""
        return Recipe(self.width, self.block_size, self.stripe_blocks, list(self.servers),
                      self.replicas)

    @property
    def width(self) -> int:
        return len(self.servers) // self.replicas

    def copies(self, column: int) -> list[int]:
        """The fileservers holding stripe column `column`, first copy first."""
        return self.recipe.copies(column)


_COLUMNS = ("id, is_dir, size, ctime, mtime, block_size, stripe_blocks, servers, replicas, mode,"
            " uid, gid, atime, target, special, rdev, subdirs")
_NODE_COLUMNS = ", ".join("n." + c for c in _COLUMNS.split(", "))  # of nodes joined as n


def _node(row: tuple) -> Node:
    (node_id, is_dir, size, ctime, mtime, block_size, stripe_blocks, servers, replicas,
     mode, uid, gid, atime, target, special, rdev, subdirs) = row
    return Node(node_id, bool(is_dir), size, ctime, mtime, block_size, stripe_blocks,
                _servers(servers), replicas, mode, uid, gid, atime, target, special, rdev,
                subdirs)


def _servers_text(servers) -> str:
    return ",".join(str(s) for s in servers)


def _servers(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",")) if text else ()


def not_a_directory(path: tuple[str, ...]) -> NamespaceError:
    return NamespaceError(errno.ENOTDIR, f"not a directory: {brief('/'.join(path))}")


def missing_error(path: tuple[str, ...], upto: int) -> NamespaceError:
    return NamespaceError(errno.ENOENT, f"no such file or directory: "
                                        f"{brief('/'.join(path[:upto + 1]))}")


def may_move(moving: Node, old: tuple[str, ...], new: tuple[str, ...]) -> bool:
    """Whether a rename of `moving` from `old` to `new` does something: False for a directory
    onto itself, NamespaceError EINVAL into its own subtree (both engines)."""
    if moving.is_dir and new[:len(old)] == old:
        if new == old:
            return False
        raise NamespaceError(errno.EINVAL, f"cannot move a directory into itself: "
                                           f"{brief('/'.join(old))} -> {brief('/'.join(new))}")
    return True


def check_replace(moving: Node, replaced: Node, replaced_empty: bool,
                  new: tuple[str, ...]) -> None:
    """Whether a rename of `moving` may replace `replaced`, as POSIX says (both engines)."""
    if moving.is_dir and not replaced.is_dir:
        raise NamespaceError(errno.ENOTDIR, f"not a directory: {brief('/'.join(new))}")
    if not moving.is_dir and replaced.is_dir:
        raise NamespaceError(errno.EISDIR, f"is a directory: {brief('/'.join(new))}")
    if replaced.is_dir and not replaced_empty:
        raise NamespaceError(errno.ENOTEMPTY, f"directory not empty: {brief('/'.join(new))}")


class Namespace(MetaStore):
    """Thread-safe access to the metadata database."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect(path)
        self._migrate_replicas()
        self._writer.executescript(SCHEMA)
        self._migrate_flat_namespace()
        self._migrate_members()
        self._migrate_attributes()
        self._migrate_subdirs()
        self._writer.execute(
            "INSERT OR IGNORE INTO nodes (id, is_dir, size, ctime, mtime, block_size,"
            " stripe_blocks, servers) VALUES (?, 1, 0, ?, ?, 0, 0, '')",
            (ROOT, time.time(), time.time()))
        self._writer.execute("INSERT OR IGNORE INTO counters (name, value) SELECT 'files',"
                             " COUNT(*) FROM nodes WHERE is_dir = 0")  # once, for old data
        self._writer.execute("PRAGMA wal_autocheckpoint=0")  # sync() does them, off the loop
        self._reader = self._connect(path)
        self._syncer = self._connect(path)
        self._write_lock = threading.RLock()  # (reentrant for `now`)
        self._read_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._unsynced = False

    @staticmethod
    def _connect(path: pathlib.Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # the log is synced by sync()
        return db

    def sync(self) -> None:
        """Puts every committed change on the disk (it survives a crash of the machine).
        Writers go on meanwhile: a change committed during the checkpoint is synced by the
        next one."""
        with self._sync_lock:
            if self._unsynced:
                self._unsynced = False
                try:
                    self._syncer.execute("PRAGMA wal_checkpoint(PASSIVE)")  # syncs the log first
                except BaseException:
                    self._unsynced = True
                    raise

    def now(self, fn, *args):
        """fn(*args), a change, at once if no other thread is writing one; else WriterBusy
        (an event loop must not wait for the writer)."""
        if not self._write_lock.acquire(blocking=False):
            raise WriterBusy
        try:
            return fn(*args)
        finally:
            self._write_lock.release()

    def exclusive(self) -> threading.RLock:
        return self._write_lock

    def _migrate_flat_namespace(self) -> None:
        """Moves the files of a data directory from before directories (one flat `files`
        table) into the root directory, keeping their ids."""
        db = self._writer
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone():
            return
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO nodes (id, is_dir, size, ctime, mtime, block_size, stripe_blocks,"
                   " servers, replicas) SELECT id, 0, size, ctime, mtime, block_size,"
                   " stripe_blocks, servers, 1 FROM files")
        db.execute("INSERT INTO entries (parent, name, node) SELECT ?, name, id FROM files",
                   (ROOT,))
        db.execute("DROP TABLE files")
        db.execute("COMMIT")

    def _migrate_replicas(self) -> None:
        """Gives the files of a data directory from before replicas one copy each."""
        db = self._writer
        columns = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
        if columns and "replicas" not in columns:
            db.execute("ALTER TABLE nodes ADD COLUMN replicas INTEGER NOT NULL DEFAULT 1")

    def _migrate_members(self) -> None:
        """Gives fileservers of a data directory from before member names their uuid as name."""
        db = self._writer
        columns = {row[1] for row in db.execute("PRAGMA table_info(fileservers)")}
        if "name" not in columns:
            db.execute("ALTER TABLE fileservers ADD COLUMN name TEXT")
            db.execute("ALTER TABLE fileservers ADD COLUMN lost_at REAL")
            db.execute("UPDATE fileservers SET name = uuid")
            db.execute("CREATE UNIQUE INDEX fileserver_names ON fileservers (name)")

    def _migrate_attributes(self) -> None:
        """Gives the nodes of a data directory from before POSIX attributes, symlinks and
        special files their columns (never set: the defaults of Node)."""
        db = self._writer
        columns = {row[1] for row in db.execute("PRAGMA table_info(nodes)")}
        for column in ("mode INTEGER", "uid INTEGER", "gid INTEGER", "atime REAL",
                       "target TEXT", "special INTEGER", "rdev INTEGER"):
            if column.split()[0] not in columns:
                db.execute(f"ALTER TABLE nodes ADD COLUMN {column}")

    def _migrate_subdirs(self) -> None:
        """Gives the directories of a data directory from before link counts their number of
        subdirectories, counted once."""
        db = self._writer
        if "subdirs" in {row[1] for row in db.execute("PRAGMA table_info(nodes)")}:
            return
        db.execute("BEGIN IMMEDIATE")
        db.execute("ALTER TABLE nodes ADD COLUMN subdirs INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE nodes SET subdirs = (SELECT COUNT(*) FROM entries e JOIN nodes c ON"
                   " c.id = e.node WHERE e.parent = nodes.id AND c.is_dir = 1) WHERE is_dir = 1")
        db.execute("COMMIT")

    def close(self) -> None:
        with self._write_lock, self._read_lock, self._sync_lock:
            self._syncer.close()
            self._reader.close()
            self._writer.close()  # the last: it checkpoints the log into the database

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                    self._unsynced = True
                except BaseException:
                    if db.in_transaction:  # a failed COMMIT may have rolled back already
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StorageFull("the metaserver's disk is full; free space on it") from None
                raise

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    # --- lookups ----------------------------------------------------------------------------
    @staticmethod
    def _walk(db: sqlite3.Connection, path: tuple[str, ...]) -> Node:
        """The node at `path`, one indexed lookup per component."""
        if not path:
            return _node(db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE id = ?",
                                    (ROOT,)).fetchone())
        node_id, is_dir = ROOT, True
        for depth, name in enumerate(path):
            if not is_dir:
                raise not_a_directory(path[:depth])
            row = db.execute(f"SELECT {_NODE_COLUMNS} FROM entries e JOIN nodes n ON n.id = "
                             "e.node WHERE e.parent = ? AND e.name = ?",
                             (node_id, name)).fetchone()
            if row is None:
                raise missing_error(path, depth)
            node_id, is_dir = row[0], row[1]
        return _node(row)

    @classmethod
    def _directory(cls, db: sqlite3.Connection, path: tuple[str, ...]) -> Node:
        """The directory at `path` (ENOTDIR if it is a file)."""
        node = cls._walk(db, path)
        if not node.is_dir:
            raise not_a_directory(path)
        return node

    def lookup(self, path: tuple[str, ...]) -> Node:
        with self._read_lock:
            return self._walk(self._reader, path)

    def get(self, node_id: int) -> Node:
        with self._read_lock:
            return self._by_id(self._reader, node_id)

    @staticmethod
    def _by_id(db: sqlite3.Connection, node_id: int) -> Node:
        """The node, named or not (an orphan)."""
        row = db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE id = ?", (node_id,)).fetchone()
        if row is None:
            raise NamespaceError(errno.ENOENT, f"file {node_id} no longer exists")
        return _node(row)

    def path_of(self, node_id: int) -> str:
        """The node's canonical path now (renames move it), walking up its entries."""
        names = []
        with self._read_lock:
            while node_id != ROOT:
                row = self._reader.execute("SELECT parent, name FROM entries WHERE node = ?",
                                           (node_id,)).fetchone()
                if row is None:
                    return ""  # deleted meanwhile
                node_id, name = row
                names.append(name)
        return "/".join(reversed(names))

    def listdir(self, path: tuple[str, ...], after: str = "",
                limit: int = -1) -> list[tuple[str, Node]]:
        """The entries of the directory at `path` whose names sort after `after`, by name, at
        most `limit` of them (-1: all), with their nodes."""
        with self._read_lock:
            directory = self._directory(self._reader, path)
            rows = self._reader.execute(
                f"SELECT e.name, {_NODE_COLUMNS}"
                " FROM entries e JOIN nodes n ON n.id = e.node WHERE e.parent = ? AND e.name > ?"
                " ORDER BY e.name LIMIT ?", (directory.node_id, after, limit)).fetchall()
        return [(row[0], _node(row[1:])) for row in rows]

    def count_files(self) -> int:
        """The number of files (kept in a counter: counting would read the whole tree)."""
        return self.query("SELECT value FROM counters WHERE name = 'files'")[0][0]

    # --- changes ----------------------------------------------------------------------------
    def _new_entry(self, db: sqlite3.Connection, path: tuple[str, ...], is_dir: bool,
                   block_size: int = 0, stripe_blocks: int = 0, servers=(),
                   replicas: int = 1, attributes: NewAttributes = NewAttributes(),
                   target: str | None = None, special: int | None = None,
                   rdev: int | None = None) -> Node:
        if not path:
            raise NamespaceError(errno.EEXIST, "the root directory exists")
        parent = self._directory(db, path[:-1])
        if db.execute("SELECT 1 FROM entries WHERE parent = ? AND name = ?",
                      (parent.node_id, path[-1])).fetchone():
            raise NamespaceError(errno.EEXIST, f"exists: {brief('/'.join(path))}")
        now = time.time()
        a = attributes
        cursor = db.execute(
            "INSERT INTO nodes (is_dir, size, ctime, mtime, block_size, stripe_blocks, servers,"
            " replicas, mode, uid, gid, target, special, rdev)"
            " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (int(is_dir), now, now, block_size, stripe_blocks, _servers_text(servers), replicas,
             a.mode, a.uid, a.gid, target, special, rdev))
        db.execute("INSERT INTO entries (parent, name, node) VALUES (?, ?, ?)",
                   (parent.node_id, path[-1], cursor.lastrowid))
        self._touch_parent(db, cursor.lastrowid, now)
        if is_dir:
            self._count_subdir(db, cursor.lastrowid, +1)
        else:
            db.execute("UPDATE counters SET value = value + 1 WHERE name = 'files'")
        return Node(cursor.lastrowid, is_dir, 0, now, now, block_size, stripe_blocks,
                    tuple(servers), replicas, a.mode, a.uid, a.gid, None, target, special, rdev)

    def create(self, path: tuple[str, ...], block_size: int, stripe_blocks: int,
               servers: list[int], replicas: int = 1,
               attributes: NewAttributes = NewAttributes()) -> Node:
        """A new file; `servers` holds its copies: copy k of column c at k * width + c."""
        with self.transaction() as db:
            return self._new_entry(db, path, False, block_size, stripe_blocks, servers,
                                   replicas, attributes)

    def mkdir(self, path: tuple[str, ...], attributes: NewAttributes = NewAttributes()) -> Node:
        with self.transaction() as db:
            return self._new_entry(db, path, True, attributes=attributes)

    def symlink(self, path: tuple[str, ...], target: str,
                attributes: NewAttributes = NewAttributes()) -> Node:
        """A symbolic link: a node without data whose target is kept here."""
        with self.transaction() as db:
            return self._new_entry(db, path, False, attributes=attributes, target=target)

    def mknod(self, path: tuple[str, ...], special: int, rdev: int | None,
              attributes: NewAttributes = NewAttributes()) -> Node:
        """A special file (FIFO, socket, device): a node without data, of type `special`."""
        with self.transaction() as db:
            return self._new_entry(db, path, False, attributes=attributes, special=special,
                                   rdev=rdev)

    def set_attributes(self, target: tuple[str, ...] | int, mode: int | None = None,
                       uid: int | None = None, gid: int | None = None,
                       atime: float | None = None, mtime: float | None = None) -> Node:
        """Sets those of a node's POSIX attributes that are given; ctime moves, as POSIX says."""
        with self.transaction() as db:
            node = self._walk(db, target) if isinstance(target, tuple) else self._by_id(db, target)
            changes = {"mode": mode, "uid": uid, "gid": gid, "atime": atime, "mtime": mtime}
            changes = {k: v for k, v in changes.items() if v is not None}
            changes["ctime"] = time.time()
            db.execute(f"UPDATE nodes SET {', '.join(k + ' = ?' for k in changes)} WHERE id = ?",
                       (*changes.values(), node.node_id))
            return self._by_id(db, node.node_id)

    @staticmethod
    def _touch_parent(db: sqlite3.Connection, node_id: int, now: float) -> None:
        """An entry of the node's parent changed: its mtime and ctime move (POSIX), but the
        root's, which every top-level change would otherwise rewrite."""
        db.execute("UPDATE nodes SET mtime = ?, ctime = ? WHERE id = (SELECT parent FROM entries"
                   " WHERE node = ?) AND id != ?", (now, now, node_id, ROOT))

    @staticmethod
    def _count_subdir(db: sqlite3.Connection, node_id: int, change: int) -> None:
        """A directory's entry was made (+1) or goes (-1): its parent's link count follows."""
        db.execute("UPDATE nodes SET subdirs = subdirs + ? WHERE id = (SELECT parent FROM"
                   " entries WHERE node = ?)", (change, node_id))

    def _remove(self, db: sqlite3.Connection, node: Node) -> None:
        """Removes a node and its entry; a file's objects are recorded as still to delete."""
        self._touch_parent(db, node.node_id, time.time())
        if node.is_dir:
            self._count_subdir(db, node.node_id, -1)
        db.execute("DELETE FROM entries WHERE node = ?", (node.node_id,))
        db.execute("DELETE FROM nodes WHERE id = ?", (node.node_id,))
        if not node.is_dir:
            if node.servers:  # (a symlink has no objects; dropped copies' may be there)
                self._to_delete(db, node.node_id, node.servers)
            db.execute("DELETE FROM missed WHERE file_id = ?", (node.node_id,))
            db.execute("DELETE FROM apart WHERE file_id = ?", (node.node_id,))
            db.execute("UPDATE counters SET value = value - 1 WHERE name = 'files'")
        else:
            db.execute("DELETE FROM layouts WHERE dir = ?", (node.node_id,))

    def _empty(self, db: sqlite3.Connection, directory: Node) -> bool:
        return db.execute("SELECT 1 FROM entries WHERE parent = ? LIMIT 1",
                          (directory.node_id,)).fetchone() is None

    def unlink(self, path: tuple[str, ...], orphan: bool = False) -> Node:
        """Removes a file; its objects are recorded as still to delete, in the same commit.
        `orphan` (it is open somewhere): only its name goes; the file is recorded an orphan,
        removed by reclaim_orphan at its last close."""
        with self.transaction() as db:
            node = self._walk(db, path)
            if node.is_dir:
                raise NamespaceError(errno.EISDIR, f"is a directory (use rmdir): "
                                                   f"{brief('/'.join(path))}")
            (self._orphan if orphan else self._remove)(db, node)
            return node

    def rmdir(self, path: tuple[str, ...]) -> None:
        with self.transaction() as db:
            if not path:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be removed")
            node = self._directory(db, path)
            if not self._empty(db, node):
                raise NamespaceError(errno.ENOTEMPTY, f"directory not empty: "
                                                      f"{brief('/'.join(path))}")
            self._remove(db, node)

    def rename(self, old: tuple[str, ...], new: tuple[str, ...],
               orphan_replaced: bool = False) -> Node | None:
        """Moves `old` to `new` in one commit, replacing a file (or an empty directory, for a
        directory) at `new` as POSIX rename does; returns the node it replaced, if any (made
        an orphan if `orphan_replaced`: it is open somewhere)."""
        with self.transaction() as db:
            if not old or not new:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be renamed or "
                                                  "replaced")
            moving = self._walk(db, old)
            parent = self._directory(db, new[:-1])
            if not may_move(moving, old, new):
                return None
            row = db.execute(f"SELECT {_NODE_COLUMNS} FROM entries e JOIN nodes n ON n.id = "
                             "e.node WHERE e.parent = ? AND e.name = ?",
                             (parent.node_id, new[-1])).fetchone()
            replaced = None
            if row is not None:
                replaced = _node(row)
                if replaced.node_id == moving.node_id:
                    return None  # the same file under both names: nothing to do
                check_replace(moving, replaced, self._empty(db, replaced), new)
                if orphan_replaced and not replaced.is_dir:
                    self._orphan(db, replaced)
                else:
                    self._remove(db, replaced)
            now = time.time()
            self._touch_parent(db, moving.node_id, now)
            if moving.is_dir:
                self._count_subdir(db, moving.node_id, -1)
            db.execute("UPDATE entries SET parent = ?, name = ? WHERE node = ?",
                       (parent.node_id, new[-1], moving.node_id))
            self._touch_parent(db, moving.node_id, now)
            if moving.is_dir:
                self._count_subdir(db, moving.node_id, +1)
            return replaced

    def record_size(self, node_id: int, size: int, touch: bool, exact: bool = False) -> None:
        """Records the file's size: raised to `size`, or set to it (`exact`: a truncate);
        `touch` also sets mtime."""
        with self.transaction() as db:
            if exact:
                db.execute("UPDATE nodes SET size = ? WHERE id = ?", (size, node_id))
            else:
                db.execute("UPDATE nodes SET size = MAX(size, ?) WHERE id = ?", (size, node_id))
            if touch:  # (a write moves ctime too, as POSIX says)
                now = time.time()
                db.execute("UPDATE nodes SET mtime = ?, ctime = ? WHERE id = ?",
                           (now, now, node_id))

    # --- orphans: files unlinked while open (servers/metaserver/orphans.py) -------------------
    @classmethod
    def _orphan(cls, db: sqlite3.Connection, node: Node) -> None:
        cls._touch_parent(db, node.node_id, time.time())
        db.execute("DELETE FROM entries WHERE node = ?", (node.node_id,))
        db.execute("INSERT OR IGNORE INTO orphans (file_id) VALUES (?)", (node.node_id,))

    def orphans(self) -> list[int]:
        return [row[0] for row in self.query("SELECT file_id FROM orphans")]

    def reclaim_orphan(self, node_id: int) -> Node | None:
        """Removes an orphan (nobody has it open any more), as unlink does; the node, or None
        if it is no orphan."""
        with self.transaction() as db:
            if not db.execute("DELETE FROM orphans WHERE file_id = ?", (node_id,)).rowcount:
                return None
            node = _node(db.execute(f"SELECT {_COLUMNS} FROM nodes WHERE id = ?",
                                    (node_id,)).fetchone())
            self._remove(db, node)
            return node

    def change_copies(self, file_id: int, servers: list[int], replicas: int, added: list[int],
                      dropped: list[int]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE nodes SET servers = ?, replicas = ? WHERE id = ?",
                       (_servers_text(servers), replicas, file_id))
            db.executemany("INSERT OR REPLACE INTO missed (file_id, server, start, end_) "
                           "VALUES (?, ?, 0, ?)", [(file_id, i, INFINITY) for i in added])
            for table in ("missed", "apart"):
                db.executemany(f"DELETE FROM {table} WHERE file_id = ? AND server = ?",
                               [(file_id, i) for i in dropped])
            if dropped:
                self._to_delete(db, file_id, dropped)

    @staticmethod
    def _to_delete(db: sqlite3.Connection, file_id: int, servers) -> None:
        """Records the file's objects on `servers` as still to delete, with any recorded
        before (a dropped copy's, when the file goes too)."""
        db.execute("INSERT INTO pending_deletes (file_id, servers) VALUES (?, ?) ON CONFLICT "
                   "(file_id) DO UPDATE SET servers = servers || ',' || excluded.servers",
                   (file_id, _servers_text(servers)))

    # --- directories' layouts (layouts.py) --------------------------------------------------
    def layouts(self) -> dict[int, tuple[int, int, int]]:
        return {row[0]: tuple(row[1:]) for row in self.query(
            "SELECT dir, stripe_width, stripe_blocks, replicas FROM layouts")}

    def set_layout(self, dir_id: int, layout: tuple[int, int, int] | None) -> None:
        with self.transaction() as db:
            if layout is None:
                db.execute("DELETE FROM layouts WHERE dir = ?", (dir_id,))
            else:
                db.execute("INSERT OR REPLACE INTO layouts (dir, stripe_width, stripe_blocks, "
                           "replicas) VALUES (?, ?, ?, ?)", (dir_id, *layout))

    # --- deletes, fileservers and counters --------------------------------------------------
    def pending_deletes(self) -> list[tuple[int, tuple[int, ...]]]:
        return [(file_id, _servers(servers))
                for file_id, servers in self.query("SELECT file_id, servers FROM pending_deletes")]

    def delete_done(self, file_ids: list[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM pending_deletes WHERE file_id = ?",
                           [(i,) for i in file_ids])

    def register_fileserver(self, name: str, uuid: str, address: str) -> tuple[int, bool]:
        """The stable index of the member `name` (a new name gets the next index), and whether
        it came back with another data directory (uuid): then it lost what it stored, which is
        recorded (`lost_data`)."""
        with self.transaction() as db:
            other = db.execute("SELECT name FROM fileservers WHERE uuid = ? AND name != ?",
                               (uuid, name)).fetchone()
            if other is not None:
                raise NamespaceError(errno.EEXIST, f"this data directory belongs to fileserver "
                                                   f"{brief(other[0])}, not {brief(name)}")
            row = db.execute("SELECT idx, uuid FROM fileservers WHERE name = ?",
                             (name,)).fetchone()
            if row is None:  # (never the index of a removed member: members.py)
                idx = db.execute("SELECT MAX(COALESCE((SELECT MAX(idx) + 1 FROM fileservers), 0),"
                                 " COALESCE((SELECT value FROM counters WHERE name = "
                                 "'next_fileserver'), 0))").fetchone()[0]
                db.execute("INSERT INTO fileservers (idx, uuid, address, name) VALUES (?, ?, ?, ?)",
                           (idx, uuid, address, name))
                return idx, False
            idx, lost = row[0], row[1] != uuid
            db.execute("UPDATE fileservers SET uuid = ?, address = ?, lost_at = CASE WHEN ? THEN "
                       "? ELSE lost_at END WHERE idx = ?", (uuid, address, lost, time.time(), idx))
        return idx, lost

    def files_on(self, index: int) -> list[Node]:
        """The files that fileserver `index` holds a copy of (a scan: for removing a member)."""
        return [_node(row) for row in self.query(
            f"SELECT {_COLUMNS} FROM nodes WHERE is_dir = 0 AND ',' || servers || ',' LIKE ?",
            (f"%,{index},%",))]

    def members(self) -> dict[int, tuple[str, float]]:
        """Each member's name, and when it last came back with a new data directory (0:
        never), by index."""
        return {idx: (name, lost_at or 0.0) for idx, name, lost_at in
                self.query("SELECT idx, name, lost_at FROM fileservers ORDER BY idx")}

    def fileservers(self) -> dict[int, str]:
        return dict(self.query("SELECT idx, address FROM fileservers ORDER BY idx"))

    # --- client sessions (servers/metaserver/recovery.py) -----------------------------------
    def new_session(self, key_hash: bytes) -> int:
        """Records a new session under the next client id (never used before), in one commit."""
        with self.transaction() as db:
            client_id = self._next(db, "client_id")
            db.execute("INSERT INTO sessions (client_id, key_hash) VALUES (?, ?)",
                       (client_id, key_hash))
            return client_id

    def next_client_id(self) -> int:
        """The client id the next new session will get (every one before it is taken)."""
        taken = self.query("SELECT value FROM counters WHERE name = 'client_id'")
        return (taken[0][0] if taken else 0) + 1

    def forget_session(self, client_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM sessions WHERE client_id = ?", (client_id,))

    def recorded_sessions(self) -> dict[int, bytes]:
        """The sessions live when the metaserver last stopped: client id -> key hash."""
        return dict(self.query("SELECT client_id, key_hash FROM sessions"))

    @staticmethod
    def _next(db: sqlite3.Connection, name: str) -> int:
        """A durable counter: never returns the same value twice, across restarts too."""
        db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (name,))
        db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (name,))
        return db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    # --- members leaving (members.py) -------------------------------------------------------
    def remove_member(self, index: int, moved: dict[int, int]) -> None:
        with self.transaction() as db:
            for file_id, to in moved.items():
                servers, replicas = db.execute("SELECT servers, replicas FROM nodes WHERE id = ?",
                                               (file_id,)).fetchone()
                servers = [to if s == index else s for s in _servers(servers)]
                db.execute("UPDATE nodes SET servers = ? WHERE id = ?",
                           (_servers_text(servers), file_id))
                if replicas > 1:  # (a single copy moves only when empty: nothing to re-make)
                    db.execute("INSERT OR REPLACE INTO missed (file_id, server, start, end_) "
                               "VALUES (?, ?, 0, ?)", (file_id, to, INFINITY))
            for table in ("missed", "apart"):
                db.execute(f"DELETE FROM {table} WHERE server = ?", (index,))
            for file_id, servers in db.execute("SELECT file_id, servers FROM pending_deletes"
                                               ).fetchall():
                kept = [s for s in _servers(servers) if s != index]
                if kept:
                    db.execute("UPDATE pending_deletes SET servers = ? WHERE file_id = ?",
                               (_servers_text(kept), file_id))
                else:
                    db.execute("DELETE FROM pending_deletes WHERE file_id = ?", (file_id,))
            db.execute("DELETE FROM fileservers WHERE idx = ?", (index,))
            db.execute("INSERT INTO counters (name, value) VALUES ('next_fileserver', ?) ON "
                       "CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                       (index + 1,))

    # --- session files (store.py) -----------------------------------------------------------
    def add_session_file(self, table: str, client_id: int, file_id: int) -> None:
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO {_session_table(table)} (client_id, file_id) "
                       "VALUES (?, ?)", (client_id, file_id))

    def session_files(self, table: str, client_id: int) -> list[int]:
        return [row[0] for row in self.query(
            f"SELECT file_id FROM {_session_table(table)} WHERE client_id = ?", (client_id,))]

    def session_file_clients(self, table: str) -> set[int]:
        return {row[0] for row in self.query(
            f"SELECT DISTINCT client_id FROM {_session_table(table)}")}

    def drop_session_files(self, table: str, client_id: int,
                           file_ids: list[int] | None = None) -> None:
        with self.transaction() as db:
            self._drop_session_files(db, table, client_id, file_ids)

    @staticmethod
    def _drop_session_files(db: sqlite3.Connection, table: str, client_id: int,
                            file_ids: list[int] | None) -> None:
        if file_ids is None:
            db.execute(f"DELETE FROM {_session_table(table)} WHERE client_id = ?", (client_id,))
        else:
            db.executemany(f"DELETE FROM {_session_table(table)} WHERE client_id = ? AND "
                           "file_id = ?", [(client_id, f) for f in file_ids])

    # --- missed ranges (copies.py) ----------------------------------------------------------
    def missed(self, file_id: int | None = None,
               limit: int = -1) -> list[tuple[int, int, list[tuple[int, int]]]]:
        return self._copy_ranges("missed", file_id, limit)

    def apart(self, file_id: int | None = None) -> list[tuple[int, int, list[tuple[int, int]]]]:
        return self._copy_ranges("apart", file_id)

    def _copy_ranges(self, table: str, file_id: int | None,
                     limit: int = -1) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """(file id, fileserver, its ranges) in table `missed` or `apart`."""
        where, args = ("WHERE file_id = ?", (file_id,)) if file_id is not None else ("", ())
        found: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for f, server, start, end in self.query(
                f"SELECT file_id, server, start, end_ FROM {table} {where} "
                "ORDER BY file_id, server, start", args):
            ranges = found.get((f, server))
            if ranges is None:
                if len(found) == limit:
                    break
                ranges = found[(f, server)] = []
            ranges.append((start, end))
        return [(f, server, ranges) for (f, server), ranges in found.items()]

    def set_missed(self, changes: dict[tuple[int, int], list[tuple[int, int]]],
                   forget_writer: int | None = None,
                   apart: dict[tuple[int, int], list[tuple[int, int]]] | None = None) -> None:
        with self.transaction() as db:
            for table, ranges_of in (("missed", changes), ("apart", apart or {})):
                for (file_id, server), ranges in ranges_of.items():
                    db.execute(f"DELETE FROM {table} WHERE file_id = ? AND server = ?",
                               (file_id, server))
                    db.executemany(f"INSERT INTO {table} (file_id, server, start, end_) VALUES "
                                   "(?, ?, ?, ?)", [(file_id, server, s, e) for s, e in ranges])
            if forget_writer is not None:
                self._drop_session_files(db, "writing", forget_writer, None)

    def mark_lost(self, server: int) -> int:
        with self.transaction() as db:  # (one commit: SQLite has no size limit on one)
            files = [node_id for node_id, servers, replicas in db.execute(
                "SELECT id, servers, replicas FROM nodes WHERE is_dir = 0 AND replicas > 1")
                if server in _servers(servers)]
            db.executemany("DELETE FROM missed WHERE file_id = ? AND server = ?",
                           [(f, server) for f in files])
            db.executemany("INSERT INTO missed (file_id, server, start, end_) VALUES "
                           "(?, ?, 0, ?)", [(f, server, INFINITY) for f in files])
            db.execute("DELETE FROM apart WHERE server = ?", (server,))
        return len(files)


def _session_table(table: str) -> str:
    if table not in SESSION_FILE_TABLES:  # (a name put into SQL: only these two)
        raise ValueError(f"no session-file table {table!r}")
    return table
