"""Which copies of which files missed which bytes: the durable record a resync works from.

A file with r replicas keeps each stripe column on r fileservers (copy k of column c on
`servers[k * width + c]`). A write completes when every copy has it, or when the copies that
could not take it are recorded here, in the same commit as nothing else: a client reports the
local range a copy missed (its fileserver was down, refused, or returned damaged bytes) before
the write counts as stored. A fileserver that came back with its data lost missed everything
of every replicated file it holds. A copy with a missed range is *stale*: clients read from it
no more (grants tell them), until the resync (repair.py) has copied those bytes from a good
copy and the range is gone from here. Ranges are in the object's local offsets, INFINITY-ended
for "everything".

A writer that cannot finish leaves no copy that took its bytes readable: a session that may
send writes to a replicated file is recorded here (`writing`) before its first WRITE token on
it, until it closes the file (a close succeeds only once every write is on every copy or
recorded). A session that ends with the file still open (evicted, died, cut off, or never
reclaimed after a restart) may have put bytes on some copies and not others, unrecorded: before
any of its tokens goes to another client, `abandoned` records every copy of those bytes but
one good copy as having missed them, so readers go to that one and the resync makes the others
equal to it. Which copy is kept does not matter: a write whose writer never learned its
outcome may have happened or not. So those ranges are also recorded as `apart`: the copy holds
everything it was sent there. Should every copy of some bytes become stale (the kept copy's
fileserver lost its data too), a copy apart there stands in (`_stand_in`): its bytes are one
outcome of the unfinished write, and the resync makes the others equal to it, rather than every
read failing with EIO.

Thread-safety: the namespace's (its transactions and reads).
"""
from __future__ import annotations

import sqlite3

from pfs.protocol.capability import column_ranges
from pfs.protocol.ranges import INFINITY

from .namespace import Namespace, NamespaceError, Node


class Copies:
    def __init__(self, namespace: Namespace) -> None:
        self._namespace = namespace

    def missed(self, file_id: int, server: int, start: int, end: int) -> None:
        """Records that the copy of the file on `server` lacks local bytes [start, end),
        merged with what it lacked already."""
        node = self._node(file_id)
        with self._namespace.transaction() as db:
            _merge(db, "missed", file_id, server, start, end)
            _cut(db, "apart", file_id, server, start, end)  # it lacks them for real now
            if node is not None:
                _stand_in(db, node)

    def lost(self, server: int) -> int:
        """Fileserver `server` lost its data: its copy of every replicated file missed
        everything. How many files that makes stale."""
        with self._namespace.transaction() as db:
            files = [node_id for node_id, servers, replicas in db.execute(
                "SELECT id, servers, replicas FROM nodes WHERE is_dir = 0 AND replicas > 1")
                if str(server) in servers.split(",")]
            db.executemany("INSERT OR REPLACE INTO missed (file_id, server, start, end_) "
                           "VALUES (?, ?, 0, ?)", [(f, server, INFINITY) for f in files])
            db.executemany("DELETE FROM missed WHERE file_id = ? AND server = ? AND start > 0",
                           [(f, server) for f in files])
            db.execute("DELETE FROM apart WHERE server = ?", (server,))
            for file_id, in db.execute("SELECT DISTINCT file_id FROM apart").fetchall():
                _stand_in(db, self._namespace.get(file_id))
        return len(files)

    def stale(self, file_id: int) -> set[int]:
        """The fileservers whose copy of the file missed something."""
        return {row[0] for row in self._namespace.query(
            "SELECT DISTINCT server FROM missed WHERE file_id = ?", (file_id,))}

    def missed_ranges(self, file_id: int) -> list[tuple[int, int, int]]:
        """What each stale copy of the file lacks: (fileserver, start, end), in local offsets."""
        return self._namespace.query("SELECT server, start, end_ FROM missed WHERE file_id = ? "
                                     "ORDER BY server, start", (file_id,))

    def stale_by_file(self) -> dict[int, set[int]]:
        """Every file with a stale copy -> the fileservers of its stale copies."""
        found: dict[int, set[int]] = {}
        for file_id, server in self._namespace.query("SELECT DISTINCT file_id, server FROM "
                                                     "missed"):
            found.setdefault(file_id, set()).add(server)
        return found

    def pending(self, limit: int = 100) -> list[tuple[int, int, int, int]]:
        """Some missed ranges, (file id, server, start, end), oldest files first."""
        return self._namespace.query("SELECT file_id, server, start, end_ FROM missed "
                                     "ORDER BY file_id, server, start LIMIT ?", (limit,))

    def repaired(self, file_id: int, server: int, start: int, end: int) -> None:
        """The copy on `server` has bytes [start, end) again (a resync copied them)."""
        with self._namespace.transaction() as db:
            for table in ("missed", "apart"):
                _cut(db, table, file_id, server, start, end)

    def summary(self) -> tuple[int, int, int]:
        """(files with a stale copy, ranges still to resync, bytes of those that are not
        whole copies lost)."""
        files, ranges, size = self._namespace.query(
            "SELECT COUNT(DISTINCT file_id), COUNT(*), "
            "TOTAL(CASE WHEN end_ < ? THEN end_ - start ELSE 0 END) FROM missed", (INFINITY,))[0]
        return files, ranges, int(size)

    def first_stale(self, limit: int) -> list[tuple[int, int, int]]:
        """Up to `limit` stale copies, (file id, server, bytes missed: 0 for everything)."""
        return [(f, server, int(size)) for f, server, size in self._namespace.query(
            "SELECT file_id, server, CASE WHEN MAX(end_) >= ? THEN 0 ELSE TOTAL(end_ - start) "
            "END FROM missed GROUP BY file_id, server ORDER BY file_id LIMIT ?",
            (INFINITY, limit))]

    # --- writers that may leave copies apart (the module's second paragraph) ---------------
    def writing(self, client_id: int, file_id: int) -> None:
        """The client may send writes to the (replicated) file from now on."""
        with self._namespace.transaction() as db:
            db.execute("INSERT OR IGNORE INTO writing (client_id, file_id) VALUES (?, ?)",
                       (client_id, file_id))

    def closed(self, client_id: int, file_id: int) -> None:
        """The client closed the file: every write it sent is on every copy, or recorded."""
        with self._namespace.transaction() as db:
            db.execute("DELETE FROM writing WHERE client_id = ? AND file_id = ?",
                       (client_id, file_id))

    def writing_files(self, client_id: int) -> list[int]:
        return [row[0] for row in self._namespace.query(
            "SELECT file_id FROM writing WHERE client_id = ?", (client_id,))]

    def writers(self) -> set[int]:
        """The clients recorded as writing some file."""
        return {row[0] for row in self._namespace.query("SELECT DISTINCT client_id FROM writing")}

    def abandoned(self, client_id: int, held: dict[int, list[tuple[int, int]]] | None,
                  online: set[int]) -> list[tuple[int, int, int, int]]:
        """The client's session ended with files it was writing still open: for each, every
        copy but one good one missed the local bytes of the file ranges it held WRITE tokens on
        (`held`, by file; None when they are unknown, after a restart: the whole file). One
        commit, which also forgets the client's files. What was recorded, (file id, fileserver,
        start, end)."""
        recorded = []
        for file_id in self.writing_files(client_id):
            node = self._node(file_id)
            if node is None:
                continue  # deleted: nothing of it is read again
            ranges = [(0, INFINITY)] if held is None else held.get(file_id, [])
            recorded += _all_but_one(node, ranges, self.stale(file_id), online)
        with self._namespace.transaction() as db:
            for file_id, server, start, end in recorded:
                lacked = _ranges(db, "missed", file_id, server)
                _merge(db, "missed", file_id, server, start, end)
                for lo, hi in _minus([(start, end)], lacked):  # (what it lacked, it still lacks)
                    _merge(db, "apart", file_id, server, lo, hi)
            db.execute("DELETE FROM writing WHERE client_id = ?", (client_id,))
        return recorded

    def _node(self, file_id: int) -> Node | None:
        try:
            return self._namespace.get(file_id)
        except NamespaceError:
            return None


def _all_but_one(node: Node, ranges: list[tuple[int, int]], stale: set[int],
                 online: set[int]) -> list[tuple[int, int, int, int]]:
    """For file ranges a writer may have left on some copies only: per stripe column, the
    local ranges every copy but the kept one must count as missed. The kept copy missed nothing
    (else the resync could not copy from it) and is online if one such is, so reads go on."""
    missed = []
    for column in range(node.width):
        copies = node.copies(column)
        kept = min(copies, key=lambda i: (i in stale, i not in online, copies.index(i)))
        for start, end in ranges:
            local = column_ranges(node.block_size, node.stripe_blocks, node.width, start,
                                  end)[column]
            if local[0] < local[1]:
                missed += [(node.node_id, i, *local) for i in copies if i != kept]
    return missed


def _stand_in(db: sqlite3.Connection, node: Node) -> None:
    """Where no copy of a column holds some bytes, copies that hold them apart (and lack them
    for no other reason) count as good there again, the first one first."""
    for column in range(node.width):
        copies = node.copies(column)
        nowhere = _ranges(db, "missed", node.node_id, copies[0])
        for i in copies[1:]:
            nowhere = _intersect(nowhere, _ranges(db, "missed", node.node_id, i))
        for i in copies:
            for start, end in _intersect(nowhere, _ranges(db, "apart", node.node_id, i)):
                for table in ("missed", "apart"):
                    _cut(db, table, node.node_id, i, start, end)
                nowhere = _minus(nowhere, [(start, end)])


def _ranges(db: sqlite3.Connection, table: str, file_id: int,
            server: int) -> list[tuple[int, int]]:
    return db.execute(f"SELECT start, end_ FROM {table} WHERE file_id = ? AND server = ? "
                      "ORDER BY start", (file_id, server)).fetchall()


def _merge(db: sqlite3.Connection, table: str, file_id: int, server: int, start: int,
           end: int) -> None:
    """Records local bytes [start, end) of a copy in `table`, merged with what is there."""
    rows = db.execute(f"SELECT start, end_ FROM {table} WHERE file_id = ? AND server = ? "
                      "AND start <= ? AND end_ >= ?", (file_id, server, end, start))
    for s, e in rows.fetchall():
        start, end = min(start, s), max(end, e)
    db.execute(f"DELETE FROM {table} WHERE file_id = ? AND server = ? AND start <= ? "
               "AND end_ >= ?", (file_id, server, end, start))
    db.execute(f"INSERT INTO {table} (file_id, server, start, end_) VALUES (?, ?, ?, ?)",
               (file_id, server, start, end))


def _cut(db: sqlite3.Connection, table: str, file_id: int, server: int, start: int,
         end: int) -> None:
    """Removes local bytes [start, end) of a copy from `table`."""
    rows = db.execute(f"SELECT start, end_ FROM {table} WHERE file_id = ? AND server = ? "
                      "AND start < ? AND end_ > ?", (file_id, server, end, start))
    for s, e in rows.fetchall():
        db.execute(f"DELETE FROM {table} WHERE file_id = ? AND server = ? AND start = ?",
                   (file_id, server, s))
        for lo, hi in ((s, start), (end, e)):
            if lo < hi:
                db.execute(f"INSERT INTO {table} (file_id, server, start, end_) "
                           "VALUES (?, ?, ?, ?)", (file_id, server, lo, hi))


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(max(s, t), min(e, f)) for s, e in a for t, f in b if max(s, t) < min(e, f)]


def _minus(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    for t, f in b:
        a = [piece for s, e in a for piece in ((s, min(e, t)), (max(s, f), e))
             if piece[0] < piece[1]]
    return a
