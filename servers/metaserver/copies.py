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

Thread-safety: the store's (store.py).
"""
from __future__ import annotations

from pfs.protocol.capability import column_ranges
from pfs.protocol.ranges import INFINITY

from .namespace import NamespaceError, Node
from .store import MetaStore

Ranges = list[tuple[int, int]]


class Copies:
    def __init__(self, store: MetaStore) -> None:
        self._store = store

    def missed(self, file_id: int, server: int, start: int, end: int) -> list[tuple[int, int,
                                                                                  int]]:
        """Records that the copy of the file on `server` lacks local bytes [start, end),
        merged with what it lacked already. What every copy of the file lacks then, as
        `missed_ranges` (the reporting client reads by it: a copy may have come to stand in)."""
        with _Change(self._store) as change:
            missed, apart = change.of(file_id)
            missed[server] = _merged(missed.get(server, []), start, end)
            apart[server] = _minus(apart.get(server, []), [(start, end)])  # lacked for real now
            change.stand_in(file_id)
        return self.missed_ranges(file_id)

    def lost(self, server: int) -> int:
        """Fileserver `server` lost its data: its copy of every replicated file missed
        everything. How many files that makes stale."""
        files = self._store.mark_lost(server)
        self.settle()
        return files

    def settle(self) -> None:
        """Wherever no copy of some bytes is good, a copy holding them apart stands in (after
        a lost fileserver, and at start: a crash may have come between the two)."""
        with _Change(self._store) as change:
            for file_id in {f for f, _, _ in self._store.apart()}:
                change.stand_in(file_id)

    def stale(self, file_id: int) -> set[int]:
        """The fileservers whose copy of the file missed something."""
        return {server for _, server, _ in self._store.missed(file_id)}

    def missed_ranges(self, file_id: int) -> list[tuple[int, int, int]]:
        """What each stale copy of the file lacks: (fileserver, start, end), in local offsets."""
        return [(server, start, end) for _, server, ranges in self._store.missed(file_id)
                for start, end in ranges]

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
        with _Change(self._store) as change:
            for ranges in change.of(file_id):
                ranges[server] = _minus(ranges.get(server, []), [(start, end)])

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
                  online: set[int], responsive: set[int]) -> list[tuple[int, int, int, int]]:
        """The client's session ended with files it was writing still open: for each, every
        copy but one good one missed the local bytes of the file ranges it held WRITE tokens on
        (`held`, by file; None when they are unknown, after a restart: the whole file). One
        commit, which also forgets the client's files. What was recorded, (file id, fileserver,
        start, end)."""
        recorded = []
        with _Change(self._store, forget_writer=client_id) as change:
            for file_id in self.writing_files(client_id):
                node = change.node(file_id)
                if node is None:
                    continue  # deleted: nothing of it is read again
                ranges = [(0, INFINITY)] if held is None else held.get(file_id, [])
                recorded += _all_but_one(node, ranges, self.stale(file_id), online,
                                         responsive)
            for file_id, server, start, end in recorded:
                missed, apart = change.of(file_id)
                lacked = missed.get(server, [])  # (what it lacked, it still lacks)
                missed[server] = _merged(lacked, start, end)
                for lo, hi in _minus([(start, end)], lacked):
                    apart[server] = _merged(apart.get(server, []), lo, hi)
        return recorded


class _Change:
    """`with`: some files' missed and apart ranges, read from the store when first asked for,
    changed in memory, and what changed committed at the end in one set_missed (the store
    held exclusive meanwhile)."""

    def __init__(self, store: MetaStore, forget_writer: int | None = None) -> None:
        self._store, self._forget_writer = store, forget_writer
        self._read: dict[int, tuple[dict[int, Ranges], dict[int, Ranges]]] = {}
        self._files: dict[int, tuple[dict[int, Ranges], dict[int, Ranges]]] = {}

    def __enter__(self) -> "_Change":
        self._exclusive = self._store.exclusive()
        self._exclusive.__enter__()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            self._exclusive.__exit__(kind, error, traceback)

    def of(self, file_id: int) -> tuple[dict[int, Ranges], dict[int, Ranges]]:
        """The file's missed and apart ranges, by fileserver, to change."""
        if file_id not in self._files:
            read = tuple({server: ranges for _, server, ranges in records}
                         for records in (self._store.missed(file_id),
                                         self._store.apart(file_id)))
            self._read[file_id] = read
            self._files[file_id] = tuple(dict(ranges) for ranges in read)
        return self._files[file_id]

    def node(self, file_id: int) -> Node | None:
        try:
            return self._store.get(file_id)
        except NamespaceError:
            return None

    def stand_in(self, file_id: int) -> None:
        """Where no copy of a column holds some bytes, copies that hold them apart (and lack
        them for no other reason) count as good there again, the first one first."""
        node = self.node(file_id)
        if node is None:
            return
        missed, apart = self.of(file_id)
        for column in range(node.width):
            copies = node.copies(column)
            nowhere = missed.get(copies[0], [])
            for i in copies[1:]:
                nowhere = _intersect(nowhere, missed.get(i, []))
            for i in copies:
                for start, end in _intersect(nowhere, apart.get(i, [])):
                    for ranges in (missed, apart):
                        ranges[i] = _minus(ranges.get(i, []), [(start, end)])
                    nowhere = _minus(nowhere, [(start, end)])

    def _commit(self) -> None:
        changes: tuple[dict, dict] = ({}, {})
        for file_id, now in self._files.items():
            for before, after, changed in zip(self._read[file_id], now, changes):
                for server in before.keys() | after.keys():
                    if before.get(server, []) != after.get(server, []):
                        changed[(file_id, server)] = after.get(server, [])
        if any(changes) or self._forget_writer is not None:
            self._store.set_missed(changes[0], forget_writer=self._forget_writer,
                                   apart=changes[1])


def _all_but_one(node: Node, ranges: list[tuple[int, int]], stale: set[int],
                 online: set[int], responsive: set[int]) -> list[tuple[int, int, int, int]]:
    """For file ranges a writer may have left on some copies only: per stripe column, the
    local ranges every copy but the kept one must count as missed. The kept copy missed nothing
    (else the resync could not copy from it) and is online if one such is, so reads go on:
    responsive first (a fileserver cut off with the writer is often still online for us)."""
    missed = []
    for column in range(node.width):
        copies = node.copies(column)
        kept = min(copies, key=lambda i: (i in stale, i not in responsive, i not in online,
                                          copies.index(i)))
        for start, end in ranges:
            local = column_ranges(node.block_size, node.stripe_blocks, node.width, start,
                                  end)[column]
            if local[0] < local[1]:
                missed += [(node.node_id, i, *local) for i in copies if i != kept]
    return missed


# --- range lists: (start, end) pairs by start, none touching another ------------------------
def _merged(ranges: Ranges, start: int, end: int) -> Ranges:
    """`ranges` with [start, end) added, merged with those it touches."""
    kept = []
    for s, e in ranges:
        if s <= end and e >= start:
            start, end = min(start, s), max(end, e)
        else:
            kept.append((s, e))
    return sorted(kept + [(start, end)])


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    return [(max(s, t), min(e, f)) for s, e in a for t, f in b if max(s, t) < min(e, f)]


def _minus(a: Ranges, b: Ranges) -> Ranges:
    for t, f in b:
        a = [piece for s, e in a for piece in ((s, min(e, t)), (max(s, f), e))
             if piece[0] < piece[1]]
    return a
