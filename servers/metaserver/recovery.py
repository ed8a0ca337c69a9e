"""The recovery window of a restarted metaserver (Lustre's replay, for sessions, opens and tokens).

Sessions are recorded in the namespace (client id and the SHA-256 of the key) before Register
answers, and forgotten when they end, before their tokens can move. A metaserver that starts
with sessions recorded was stopped or crashed while they lived: their clients still hold files
open, tokens, cached writes and writes the fileservers have not stored. It restores them and
opens a window of `seconds` in which:

- the restored sessions are in the fileservers' session tables again, so that a reclaiming
  client can store what it holds;
- a client rejoins a stream with its session key and reclaims (Reclaim): it tells its open files
  and its tokens, and gets back, file by file, what does not conflict with what was reclaimed
  before it (a file deleted meanwhile, or tokens overlapping another's WRITE, are refused);
- no token is granted but by reclaim, and the calls that need the open files and tokens of
  before (Acquire, Open, Close, Delete, Rename, Truncate, ReportSize, Stat) wait for the window
  to end, as do the repair's resync and Scrub, which take tokens of their own; Register,
  Create, Mkdir, Rmdir, List, Status and Finish do not.

The window ends when every restored session has reclaimed or ended, or when its time is up.
Then the sessions that did not reclaim are ended as evicted ones are: fenced at every
fileserver, and only once their clients surely know their leases are over, before any token is
granted (`over` is set only then). Revocations that were in flight when the metaserver stopped
are forgotten: the token table is what the clients claimed, and tokens the metaserver had
granted but whose grant never reached its client were never claimed, so they are no one's.

Invariant: no token is granted while a session that may hold one unclaimed (restored and not
reclaimed) could still act at a fileserver.
"""
from __future__ import annotations

import asyncio
from typing import Iterable


class Recovery:
    """Which restored sessions have yet to reclaim, and whether the window is over."""

    def __init__(self, restored: Iterable[int]) -> None:
        self.awaiting = set(restored)
        self.all_back = asyncio.Event()  # every restored session reclaimed or ended
        self.over = asyncio.Event()  # the others are fenced: normal service resumes
        if not self.awaiting:
            self.all_back.set()
            self.over.set()

    @property
    def active(self) -> bool:
        return not self.over.is_set()

    def back(self, client_id: int) -> None:
        """The session reclaimed, or ended: the window need not wait for it."""
        self.awaiting.discard(client_id)
        if not self.awaiting:
            self.all_back.set()
