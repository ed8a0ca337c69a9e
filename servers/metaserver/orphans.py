"""Orphans: files unlinked, or replaced by a rename, while open somewhere (POSIX, as the mount,
the Pythonic layer and fsspec ask; the C-like API gets EBUSY instead). The name goes at once;
the file stays, readable and writable through the fds already open, and is removed at its last
close anywhere, as Lustre's orphans are.

Invariant: an orphan is removed only when no session has it open and none can claim it back.
It is recorded durably in the commit that removes its name (the store's orphans), so a
metaserver restart keeps it: the sessions that had it open reclaim it by file id within the
recovery window, and it is removed at their last close; one that nobody reclaimed is removed a
lease after the window (every session not back by then is surely over).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from .deletions import Deletions
from .openfiles import OpenFiles
from .recovery import Recovery
from .sessions import Sessions
from .store import MetaStore

log = logging.getLogger("pfs.metaserver")


class Orphans:
    def __init__(self, namespace: MetaStore, open_files: OpenFiles, deletions: Deletions,
                 namespace_lock: asyncio.Lock, db: Callable[..., Awaitable],
                 sessions: Sessions, recovery: Recovery) -> None:
        self._namespace, self._open_files, self._deletions = namespace, open_files, deletions
        self._lock, self._db = namespace_lock, db
        self._sessions, self._recovery = sessions, recovery
        self._ids = set(namespace.orphans())
        self._tasks: set[asyncio.Task] = set()

    def made(self, file_id: int) -> None:
        """The file's name is gone (committed) while it is open."""
        self._ids.add(file_id)

    def last_closed(self, file_id: int) -> None:
        """Nobody has the file open any more (OpenFiles' callback, on the loop). During the
        recovery window another session may still claim it back: left_over removes it then."""
        if file_id in self._ids and not self._recovery.active:
            task = asyncio.get_running_loop().create_task(self._remove(file_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def left_over(self) -> None:
        """Removes the orphans nobody claimed back after a restart, a lease after the window."""
        await self._recovery.over.wait()
        await asyncio.sleep(self._sessions.lease_seconds)
        for file_id in list(self._ids):
            await self._remove(file_id)

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _remove(self, file_id: int) -> None:
        async with self._lock:  # (an orphan has no name: only a reclaim could open it again)
            if self._open_files.is_open(file_id) or file_id not in self._ids:
                return
            node = await self._db(self._namespace.reclaim_orphan, file_id)
            self._ids.discard(file_id)
        if node is not None:
            self._deletions.add(node.node_id, node.servers)
            log.info("removed file %d, unlinked while open, at its last close", file_id)
