"""Objects of deleted files, removed from the fileservers in the background.

A delete commits the file's removal and the intent to remove its objects (pending_deletes, in
the namespace) in one transaction, and returns: the fileservers remove the objects afterwards,
in batches (one message per fileserver for all the files deleted meanwhile), and each file is
forgotten once every fileserver that held part of it has confirmed, in one commit for all the
files confirmed within FORGET_SECONDS (a commit on etcd takes a quorum's fsync, and the one
writer's other changes wait behind it; a file forgotten late is only asked for again).
A fileserver that is away gets its share when it attaches again; the intent outlives a crash of
the metaserver, so objects are removed in the end whatever happens.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from .cluster import Cluster

#: Seconds deletes gather before a batch goes out (many deletes, few messages).
BATCH_SECONDS = 0.02
#: Seconds after which objects not yet confirmed are asked for again.
RETRY_SECONDS = 10.0
#: Seconds confirmed files gather before they are forgotten in one commit.
FORGET_SECONDS = 1.0


class Deletions:
    def __init__(self, pending: list[tuple[int, tuple[int, ...]]], cluster: Cluster,
                 forget: Callable[[list[int]], Awaitable[None]]) -> None:
        self._cluster = cluster
        self._forget = forget  # removes files from the durable intent
        self._remaining = {file_id: set(servers) for file_id, servers in pending}
        self._unsent: dict[int, list[int]] = {}  # fileserver -> files to ask it for
        self._confirmed: list[int] = []  # files whose every object is gone, to forget
        self._forgetting: asyncio.Future | None = None
        self._wakeup = asyncio.Event()
        for file_id, servers in pending:
            self._ask(file_id, servers)

    def add(self, file_id: int, servers: tuple[int, ...]) -> None:
        """The file's removal (or that of some of its copies: replication.py) is committed:
        its objects on `servers` are to go."""
        if not servers:
            return  # a symlink or special file: no objects
        if file_id in self._confirmed:  # (forgetting it would forget these records too)
            self._confirmed.remove(file_id)
        self._remaining.setdefault(file_id, set()).update(servers)
        self._ask(file_id, servers)

    def pending_on(self, file_id: int) -> set[int]:
        """The fileservers whose object of the file is still to be deleted."""
        return set(self._remaining.get(file_id, ()))

    def attached(self, index: int) -> None:
        """A fileserver (re)attached: it gets every file it may still hold."""
        for file_id, servers in self._remaining.items():
            if index in servers:
                self._ask(file_id, (index,))

    def forget(self, index: int) -> None:
        """Fileserver `index` was removed: nothing is awaited from it (its objects went with
        it; members.py dropped it from the durable intent)."""
        self._unsent.pop(index, None)
        for file_id in [f for f, servers in self._remaining.items() if servers <= {index}]:
            del self._remaining[file_id]
        for servers in self._remaining.values():
            servers.discard(index)

    async def confirmed(self, index: int, file_ids: list[int]) -> None:
        """Fileserver `index` removed these files' objects."""
        done = []
        for file_id in file_ids:
            remaining = self._remaining.get(file_id)
            if remaining is not None:
                remaining.discard(index)
                if not remaining:
                    del self._remaining[file_id]
                    done.append(file_id)
        if done:
            self._confirmed += done
            if self._forgetting is None:
                self._forgetting = asyncio.ensure_future(self._forget_soon())

    async def _forget_soon(self) -> None:
        await asyncio.sleep(FORGET_SECONDS)
        done, self._confirmed, self._forgetting = self._confirmed, [], None
        await self._forget(done)

    async def run(self) -> None:
        """Runs until cancelled: sends each fileserver its batch, and asks again for what is
        not confirmed after a while."""
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), RETRY_SECONDS)
                await asyncio.sleep(BATCH_SECONDS)
            except asyncio.TimeoutError:
                for file_id, servers in self._remaining.items():
                    self._ask(file_id, servers)
            self._wakeup.clear()
            unsent, self._unsent = self._unsent, {}
            for index, file_ids in unsent.items():
                self._cluster.delete_objects(index, file_ids)  # else: sent when it attaches

    def _ask(self, file_id: int, servers) -> None:
        for index in servers:
            self._unsent.setdefault(index, []).append(file_id)
        self._wakeup.set()
