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

Thread-safety: the namespace's (its transactions and reads).
"""
from __future__ import annotations

from pfs.ranges import INFINITY

from .namespace import Namespace


class Copies:
    def __init__(self, namespace: Namespace) -> None:
        self._namespace = namespace

    def missed(self, file_id: int, server: int, start: int, end: int) -> None:
        """Records that the copy of the file on `server` lacks local bytes [start, end),
        merged with what it lacked already."""
        with self._namespace.transaction() as db:
            rows = db.execute("SELECT start, end_ FROM missed WHERE file_id = ? AND server = ? "
                              "AND start <= ? AND end_ >= ?", (file_id, server, end, start))
            for s, e in rows.fetchall():
                start, end = min(start, s), max(end, e)
            db.execute("DELETE FROM missed WHERE file_id = ? AND server = ? AND start <= ? "
                       "AND end_ >= ?", (file_id, server, end, start))
            db.execute("INSERT INTO missed (file_id, server, start, end_) VALUES (?, ?, ?, ?)",
                       (file_id, server, start, end))

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
        return len(files)

    def stale(self, file_id: int) -> set[int]:
        """The fileservers whose copy of the file missed something."""
        return {row[0] for row in self._namespace.query(
            "SELECT DISTINCT server FROM missed WHERE file_id = ?", (file_id,))}

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
            rows = db.execute("SELECT start, end_ FROM missed WHERE file_id = ? AND server = ? "
                              "AND start < ? AND end_ > ?", (file_id, server, end, start))
            for s, e in rows.fetchall():
                db.execute("DELETE FROM missed WHERE file_id = ? AND server = ? AND start = ?",
                           (file_id, server, s))
                for lo, hi in ((s, start), (end, e)):
                    if lo < hi:
                        db.execute("INSERT INTO missed (file_id, server, start, end_) "
                                   "VALUES (?, ?, ?, ?)", (file_id, server, lo, hi))

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
