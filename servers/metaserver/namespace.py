"""The durable namespace: files, their recipes and sizes, and the cluster's fileservers.

Everything here lives in one SQLite database in WAL mode with synchronous=FULL, so a commit is on
disk before the call returns and a SIGKILL at any moment loses nothing committed. File ids come
from AUTOINCREMENT and are never reused, so a stale stripe object can never alias a new file.
"""
from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    ctime REAL NOT NULL,
    mtime REAL NOT NULL,
    block_size INTEGER NOT NULL,
    stripe_blocks INTEGER NOT NULL,
    servers TEXT NOT NULL               -- fileserver indices in stripe order, comma-separated
);
CREATE TABLE IF NOT EXISTS fileservers (
    idx INTEGER PRIMARY KEY,            -- stable index, what recipes refer to
    uuid TEXT NOT NULL UNIQUE,          -- identity kept in the fileserver's data directory
    address TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_deletes (
    file_id INTEGER PRIMARY KEY,        -- objects still to remove from the fileservers
    servers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class NameExists(Exception):
    pass


class StorageFull(Exception):
    """The metadata disk is full: nothing was changed."""


class NoSuchFile(Exception):
    pass


@dataclass(frozen=True)
class FileRecord:
    file_id: int
    name: str
    size: int
    ctime: float
    mtime: float
    block_size: int
    stripe_blocks: int
    servers: tuple[int, ...]


def _servers_text(servers: tuple[int, ...] | list[int]) -> str:
    return ",".join(str(s) for s in servers)


def _record(row: tuple) -> FileRecord:
    file_id, name, size, ctime, mtime, block_size, stripe_blocks, servers = row
    return FileRecord(file_id, name, size, ctime, mtime, block_size, stripe_blocks,
                      tuple(int(s) for s in servers.split(",")))


_FILE_COLUMNS = "id, name, size, ctime, mtime, block_size, stripe_blocks, servers"


class Namespace:
    """Thread-safe access to the metadata database."""

    def __init__(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # a failed COMMIT may have rolled back already
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise StorageFull("the metaserver's disk is full; free space on it") from None
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- files ------------------------------------------------------------------------------
    def create(self, name: str, block_size: int, stripe_blocks: int,
               servers: list[int]) -> FileRecord:
        now = time.time()
        try:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT INTO files (name, size, ctime, mtime, block_size, stripe_blocks,"
                    " servers) VALUES (?, 0, ?, ?, ?, ?, ?)",
                    (name, now, now, block_size, stripe_blocks, _servers_text(servers)))
        except sqlite3.IntegrityError:
            raise NameExists(name) from None
        return FileRecord(cursor.lastrowid, name, 0, now, now, block_size, stripe_blocks,
                          tuple(servers))

    def lookup(self, name: str) -> FileRecord:
        rows = self._query(f"SELECT {_FILE_COLUMNS} FROM files WHERE name = ?", (name,))
        if not rows:
            raise NoSuchFile(name)
        return _record(rows[0])

    def get(self, file_id: int) -> FileRecord:
        rows = self._query(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        if not rows:
            raise NoSuchFile(f"file id {file_id}")
        return _record(rows[0])

    def files(self) -> list[FileRecord]:
        return [_record(r) for r in self._query(f"SELECT {_FILE_COLUMNS} FROM files ORDER BY name")]

    def count_files(self) -> int:
        return self._query("SELECT COUNT(*) FROM files")[0][0]

    def grow(self, file_id: int, size: int, touch: bool = False) -> None:
        """Raises the recorded size to `size` (sizes never shrink); `touch` also sets mtime."""
        with self._write() as db:
            db.execute("UPDATE files SET size = MAX(size, ?) WHERE id = ?", (size, file_id))
            if touch:
                db.execute("UPDATE files SET mtime = ? WHERE id = ?", (time.time(), file_id))

    def delete(self, name: str) -> FileRecord:
        """Removes the name and records its objects as still to delete, in one transaction."""
        record = self.lookup(name)
        with self._write() as db:
            db.execute("DELETE FROM files WHERE id = ?", (record.file_id,))
            db.execute("INSERT OR REPLACE INTO pending_deletes (file_id, servers) VALUES (?, ?)",
                       (record.file_id, _servers_text(record.servers)))
        return record

    def pending_deletes(self) -> list[tuple[int, tuple[int, ...]]]:
        return [(file_id, tuple(int(s) for s in servers.split(",")))
                for file_id, servers in self._query("SELECT file_id, servers FROM pending_deletes")]

    def delete_done(self, file_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM pending_deletes WHERE file_id = ?", (file_id,))

    # --- fileservers and counters -----------------------------------------------------------
    def register_fileserver(self, uuid: str, address: str) -> int:
        """The stable index of the fileserver with this uuid (new ones get the next index)."""
        with self._write() as db:
            row = db.execute("SELECT idx FROM fileservers WHERE uuid = ?", (uuid,)).fetchone()
            if row is None:
                idx = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM fileservers").fetchone()[0]
                db.execute("INSERT INTO fileservers (idx, uuid, address) VALUES (?, ?, ?)",
                           (idx, uuid, address))
            else:
                idx = row[0]
                db.execute("UPDATE fileservers SET address = ? WHERE idx = ?", (address, idx))
        return idx

    def fileservers(self) -> dict[int, str]:
        return dict(self._query("SELECT idx, address FROM fileservers ORDER BY idx"))

    def next_counter(self, name: str) -> int:
        """A durable counter: never returns the same value twice, across restarts too."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (name,))
            db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (name,))
            return db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]
