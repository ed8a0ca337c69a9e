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
outcome may have happened or not.

Thread-safety: the store's (store.py).
"""
from __future__ import annotations

from pfs.protocol.capability import column_ranges
from pfs.protocol.ranges import INFINITY

from .namespace import NamespaceError, Node
from .store import MetaStore


class Copies:
    def __init__(self, store: MetaStore) -> None:
        self._store = store

    def missed(self, file_id: int, server: int, start: int, end: int) -> None:
        """Records that the copy of the file on `server` lacks local bytes [start, end),
        merged with what it lacked already."""
        with self._store.exclusive():
            self._store.set_missed({(file_id, server): _merged(self._ranges(file_id, server),
                                                               start, end)})

    def _ranges(self, file_id: int, server: int) -> list[tuple[int, int]]:
        return next((ranges for _, s, ranges in self._store.missed(file_id) if s == server), [])

    def lost(self, server: int) -> int:
        """Fileserver `server` lost its data: its copy of every replicated file missed
        everything. How many files that makes stale."""
        return self._store.mark_lost(server)

    def stale(self, file_id: int) -> set[int]:
        """The fileservers whose copy of the file missed something."""
        return {server for _, server, _ in self._store.missed(file_id)}

    def stale_by_file(self) -> dict[int, set[int]]:
        """Every file with a stale copy -> the fileservers of its stale copies."""
        found: dict[int, set[int]] = {}
        for file_id, server, _ in self._store.missed():
            found.setdefault(file_id, set()).add(server)
        return found

    def pending(self, limit: int = 100) -> list[tuple[int, int, int, int]]:
        """Some missed ranges, (file id, server, start, end), oldest files first."""
        return [(f, server, start, end) for f, server, ranges in self._store.missed(limit=limit)
                for start, end in ranges][:limit]

    def repaired(self, file_id: int, server: int, start: int, end: int) -> None:
        """The copy on `server` has bytes [start, end) again (a resync copied them)."""
        with self._store.exclusive():
            left = []
            for s, e in self._ranges(file_id, server):
                left += [(lo, hi) for lo, hi in ((s, min(e, start)), (max(s, end), e))
                         if lo < hi]
            self._store.set_missed({(file_id, server): left})

    def summary(self) -> tuple[int, int, int]:
        """(files with a stale copy, ranges still to resync, bytes of those that are not
        whole copies lost)."""
        copies = self._store.missed()
        return (len({f for f, _, _ in copies}), sum(len(r) for _, _, r in copies),
                sum(e - s for _, _, ranges in copies for s, e in ranges if e < INFINITY))

    def first_stale(self, limit: int) -> list[tuple[int, int, int]]:
        """Up to `limit` stale copies, (file id, server, bytes missed: 0 for everything)."""
        return [(f, server, 0 if ranges[-1][1] >= INFINITY else sum(e - s for s, e in ranges))
                for f, server, ranges in self._store.missed(limit=limit)]

    # --- writers that may leave copies apart (the module's second paragraph) ---------------
    def writing(self, client_id: int, file_id: int) -> None:
        """The client may send writes to the (replicated) file from now on."""
        self._store.add_session_file("writing", client_id, file_id)

    def closed(self, client_id: int, file_id: int) -> None:
        """The client closed the file: every write it sent is on every copy, or recorded."""
        self._store.drop_session_files("writing", client_id, [file_id])

    def writing_files(self, client_id: int) -> list[int]:
        return self._store.session_files("writing", client_id)

    def writers(self) -> set[int]:
        """The clients recorded as writing some file."""
        return self._store.session_file_clients("writing")

    def abandoned(self, client_id: int, held: dict[int, list[tuple[int, int]]] | None,
                  online: set[int]) -> list[tuple[int, int, int, int]]:
        """The client's session ended with files it was writing still open: for each, every
        copy but one good one missed the local bytes of the file ranges it held WRITE tokens on
        (`held`, by file; None when they are unknown, after a restart: the whole file). One
        commit, which also forgets the client's files. What was recorded, (file id, fileserver,
        start, end)."""
        recorded = []
        changes: dict[tuple[int, int], list[tuple[int, int]]] = {}
        with self._store.exclusive():
            for file_id in self.writing_files(client_id):
                try:
                    node = self._store.get(file_id)
                except NamespaceError:
                    continue  # deleted: nothing of it is read again
                ranges = [(0, INFINITY)] if held is None else held.get(file_id, [])
                recorded += _all_but_one(node, ranges, self.stale(file_id), online)
            for file_id, server, start, end in recorded:
                copy = (file_id, server)
                changes[copy] = _merged(changes.get(copy) or self._ranges(*copy), start, end)
            self._store.set_missed(changes, forget_writer=client_id)
        return recorded


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



def _merged(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """`ranges` (by start, apart) with [start, end) added, merged with those it touches."""
    kept = []
    for s, e in ranges:
        if s <= end and e >= start:
            start, end = min(start, s), max(end, e)
        else:
            kept.append((s, e))
    return sorted(kept + [(start, end)])
