"""Temporaries of writers that are gone: a `.NAME.pfs-tmp-<hex>` file (pfs/paths.py: what `pfs
put`, `pfs get` and fsspec's "wb" files write before renaming into place) whose writer's session
ended is removed by the cluster, as an interrupted copy must leave nothing behind.

Invariant: a temporary is removed only once its writer can do nothing more to it: its session
has ended, it is fenced at every fileserver, and its lease is over (the client itself knows it is
lost); and only if it still has a temporary name (not renamed into place) and nobody has it
open. Which session made which temporary is recorded durably (the store's `temporaries`, committed
right after the create), so temporaries of sessions that end across a metaserver restart are
found too.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from pfs.protocol.paths import brief, is_temporary

from .deletions import Deletions
from .openfiles import OpenFiles
from .recovery import Recovery
from .sessions import Sessions
from .store import MetaStore

log = logging.getLogger("pfs.metaserver")

class Temporaries:
    def __init__(self, store: MetaStore) -> None:
        self._store = store

    def created(self, file_id: int, client_id: int) -> None:
        self._store.add_session_file("temporaries", client_id, file_id)

    def of(self, client_id: int) -> list[int]:
        """The files the session created under temporary names (renamed or deleted since, some)."""
        return self._store.session_files("temporaries", client_id)

    def writers(self) -> set[int]:
        """The sessions with recorded temporaries."""
        return self._store.session_file_clients("temporaries")

    def forget(self, client_id: int, file_ids: list[int]) -> None:
        self._store.drop_session_files("temporaries", client_id, file_ids)


class TemporaryRemoval:
    """Removes the temporaries of ended sessions, as the invariant above says, on the loop."""

    def __init__(self, temporaries: Temporaries, namespace: MetaStore, open_files: OpenFiles,
                 deletions: Deletions, namespace_lock: asyncio.Lock,
                 db: Callable[..., Awaitable], sessions: Sessions, recovery: Recovery) -> None:
        self._temporaries, self._namespace, self._open_files = temporaries, namespace, open_files
        self._deletions, self._lock, self._db = deletions, namespace_lock, db
        self._sessions, self._recovery = sessions, recovery
        self._tasks: set[asyncio.Task] = set()

    def session_ended(self, client_id: int, lease_end: float) -> None:
        """The session ended (fenced already): its temporaries go once its lease is over."""
        task = asyncio.get_running_loop().create_task(self._remove(client_id, lease_end))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _remove(self, client_id: int, lease_end: float) -> None:
        """Removes the temporaries the ended session left, once its lease is over (it is
        fenced already): the client itself then knows it can write nothing more."""
        await asyncio.sleep(max(0.0, lease_end - time.monotonic()))
        file_ids = await self._db(self._temporaries.of, client_id)  # (etcd: a read)
        async with self._lock:
            for file_id in file_ids:
                path = await self._db(self._namespace.path_of, file_id)  # (etcd: a read)
                if not path or not is_temporary(path.rsplit("/", 1)[-1]) \
                        or self._open_files.is_open(file_id):
                    continue  # deleted, renamed into place, or in someone's hands
                node = await self._db(self._namespace.unlink, tuple(path.split("/")))
                self._deletions.add(node.node_id, node.servers)
                log.info("removed %s, a temporary its writer (client %d) left when its session "
                         "ended", brief(path), client_id)
        if file_ids:
            await self._db(self._temporaries.forget, client_id, file_ids)

    async def orphans(self) -> None:
        """Temporaries of sessions that ended before this start (or before their removal was
        done): removed once a lease has passed after the recovery window, when every session
        that is not back is surely over."""
        await self._recovery.over.wait()
        await asyncio.sleep(self._sessions.lease_seconds)
        for client_id in await self._db(self._temporaries.writers):
            if self._sessions.find(client_id) is None:
                await self._remove(client_id, 0.0)
