"""What a session that ended uncleanly may have left unfinished on replicated files: a write it
sent may sit on some copies and not others (it was cut off, killed, or evicted before the write
counted). The metaserver keeps one copy per stripe column and records the others as having
missed the bytes of the session's WRITE tokens (copies.py `abandoned`), so that no reader ever
sees the unfinished write on one copy and not on another.

Invariant: runs once the session is fenced and before any of its tokens moves; a commit that
fails is tried again, and the tokens wait for it.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from pfs.protocol.ranges import INFINITY

from .cluster import Cluster
from .copies import Copies
from .namespace import StorageFull
from .repair import Repair
from .sessions import Session
from .tokens import WRITE, TokenManager

log = logging.getLogger("pfs.metaserver")


class UnfinishedWrites:
    def __init__(self, copies: Copies, tokens: TokenManager, cluster: Cluster, repair: Repair,
                 db: Callable[..., Awaitable]) -> None:
        self._copies, self._tokens, self._cluster, self._repair = copies, tokens, cluster, repair
        self._db = db

    async def settle(self, session: Session) -> None:
        """Records the copies the ended session may have left apart as stale but one. Its
        tokens are unknown if it never reclaimed them after a restart."""
        writing = await self._db(self._copies.writing_files, session.client_id)  # (etcd: a read)
        held = None if session.restored else {
            file_id: [(start, end) for start, end, mode in
                      self._tokens.holdings(session.client_id, file_id) if mode == WRITE]
            for file_id in writing}
        while True:
            try:
                recorded = await self._db(self._copies.abandoned, session.client_id, held,
                                          self._cluster.online(), self._cluster.responsive())
                break
            except (StorageFull, OSError) as e:
                log.error("cannot record what client %d may have left unfinished (%s); its "
                          "tokens wait", session.client_id, e)
                await asyncio.sleep(1.0)
        for file_id, server, start, end in recorded:
            log.warning("client %d's session ended with file %d open for writing: its copy on "
                        "fileserver %s counts as having missed bytes %d-%s until resynced",
                        session.client_id, file_id, self._cluster.name(server), start,
                        "end" if end >= INFINITY else end - 1)
        if recorded:
            self._repair.wake()
