"""The lock cache: tokens a client keeps, unused, after closing a file, so that reopening it needs
no token call (SPEC §4; Lustre keeps its locks in an LRU likewise). While a file is closed no byte
is cached or written under its kept tokens, so a revocation of them is answered at once; a reopen
uses no more of them than the metaserver still counts (OpenReply.held); they count only in the
era (metaserver) they were kept in; at most `capacity` files, least recently closed out.

The metaserver counts the tokens as this client's, but the file as not open here: delete and
rename are not EBUSY for them, and another client's open takes them without a revocation
(TokenManager.take_kept), which the OpenReply.held of this client's reopen then shows. Evicted
entries are given up with the next Close (CloseRequest.release) rather than by a call of their
own. A lost or finished session, and a metaserver restart (its successor never knew them: the
reclaim does not claim them), drop them all.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from pfs.protocol.capability import Held
from pfs.protocol.ranges import RangeMap


@dataclass(eq=False)
class Kept:
    file_id: int
    name: str  # as it was opened (a delete or rename of that name here gives them up)
    tokens: RangeMap
    held: Held  # their capabilities, for the fileservers
    era: int  # the session's era they were kept in (MetaSession.era)


class LockCache:
    """Used under the Client's lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[int, Kept] = OrderedDict()
        self._by_name: dict[str, int] = {}
        self._released: list[int] = []  # evicted, not yet given up at the metaserver

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, kept: Kept) -> None:
        """Keeps a closed file's tokens; evicts the least recently kept beyond the capacity."""
        self._drop(kept.file_id)
        if not kept.tokens:
            return
        self._kept[kept.file_id] = kept
        self._by_name[kept.name] = kept.file_id
        while len(self._kept) > self.capacity:
            self.release(next(iter(self._kept)))

    def take(self, file_id: int, era: int) -> Kept | None:
        """The file's kept tokens, for its reopen in `era` (None if none or of another era)."""
        kept = self._drop(file_id)
        return kept if kept is not None and kept.era == era else None

    def revoke(self, file_id: int, start: int, end: int, to_mode: int) -> None:
        """A revocation of kept tokens: given up at once (nothing is cached under them)."""
        kept = self._kept.get(file_id)
        if kept is not None:
            kept.tokens.cap(start, end, to_mode)
            if not kept.tokens:
                self._drop(file_id)

    def release(self, file_id: int) -> None:
        """Gives the file's kept tokens up (with the next Close)."""
        if self._drop(file_id) is not None:
            self._released.append(file_id)

    def deleted(self, name: str) -> None:
        """This client deleted `name`: the tokens kept for the file it named are given up."""
        file_id = self._by_name.get(name)
        if file_id is not None:
            self.release(file_id)

    def renamed(self, old: str, new: str) -> None:
        """This client renamed `old` to `new` (replacing the file that was there)."""
        self.deleted(new)
        file_id = self._by_name.pop(old, None)
        if file_id is not None:
            self._kept[file_id].name = new
            self._by_name[new] = file_id

    def releases(self) -> list[int]:
        """The files whose tokens the next Close gives up (`unsent` if it fails)."""
        released, self._released = self._released, []
        return released

    def unsent(self, file_ids) -> None:
        self._released.extend(file_ids)

    def clear(self) -> None:
        """Forgets every kept token (the metaserver no longer counts them)."""
        self._kept.clear()
        self._by_name.clear()
        self._released.clear()

    def _drop(self, file_id: int) -> Kept | None:
        kept = self._kept.pop(file_id, None)
        if kept is not None and self._by_name.get(kept.name) == file_id:
            del self._by_name[kept.name]
        return kept
