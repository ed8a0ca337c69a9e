"""Temporaries of writers that are gone: a `.NAME.pfs-tmp-<hex>` file (pfs/paths.py: what `pfs
put`, `pfs get` and fsspec's "wb" files write before renaming into place) whose writer's session
ended is removed by the cluster, as an interrupted copy must leave nothing behind.

Invariant: a temporary is removed only once its writer can do nothing more to it: its session
has ended, it is fenced at every fileserver, and its lease is over (the client itself knows it is
lost); and only if it still has a temporary name (not renamed into place) and nobody has it
open. Which session made which temporary is recorded durably (table `temporaries`, committed
right after the create), so temporaries of sessions that end across a metaserver restart are
found too.
"""
from __future__ import annotations

from .namespace import Namespace

SCHEMA = """
CREATE TABLE IF NOT EXISTS temporaries (
    file_id INTEGER PRIMARY KEY,        -- a file created under a temporary name
    client_id INTEGER NOT NULL          -- by this session
);
CREATE INDEX IF NOT EXISTS temporaries_by_client ON temporaries (client_id);
"""


class Temporaries:
    def __init__(self, namespace: Namespace) -> None:
        self._namespace = namespace
        with namespace.transaction() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def created(self, file_id: int, client_id: int) -> None:
        with self._namespace.transaction() as db:
            db.execute("INSERT OR REPLACE INTO temporaries (file_id, client_id) VALUES (?, ?)",
                       (file_id, client_id))

    def of(self, client_id: int) -> list[int]:
        """The files the session created under temporary names (renamed or deleted since, some)."""
        return [row[0] for row in self._namespace.query(
            "SELECT file_id FROM temporaries WHERE client_id = ?", (client_id,))]

    def writers(self) -> set[int]:
        """The sessions with recorded temporaries."""
        return {row[0] for row in self._namespace.query(
            "SELECT DISTINCT client_id FROM temporaries")}

    def forget(self, file_ids: list[int]) -> None:
        with self._namespace.transaction() as db:
            db.executemany("DELETE FROM temporaries WHERE file_id = ?", [(f,) for f in file_ids])
