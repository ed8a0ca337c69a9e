"""The etcd engine's guarded writes: every change is one transaction that commits only while
this metaserver's epoch still holds (the leader key has the create revision it had when it was
elected, election.py), so a deposed metaserver's writes fail (`Deposed`) and change nothing.

Invariant: one writer. Hence counters and the nodes and entries it wrote or read are known
without a read (the cache here, dropped when a new guard is set or a commit's outcome is
unknown), and a write whose answer is lost committed iff the `txn` key holds its id.
"""
from __future__ import annotations

import collections
import itertools
import os
import threading
import time

import grpc
from aetcd import rpc

from .etcdclient import (
    CALL_SECONDS,
    Etcd,
    delete,
    prefix_end,
    put,
    tls_credentials,
    unanswered,
)
from .etcdkeys import counter_key
from .namespace import WriterBusy
from .store import MetaStore

#: Operations per transaction (etcd's default --max-txn-ops is 128).
TXN_OPS = 100
#: How often old revisions are compacted away (etcd keeps every revision until then).
COMPACT_SECONDS = 60.0
#: Nodes and entries the active metaserver keeps in memory (a few hundred bytes each).
CACHED_KEYS = 200_000


class Deposed(Exception):
    """Another metaserver is active now: this one's write was refused, nothing changed."""


class KeyExists(Exception):
    """A key the commit expected absent exists (not known in the cache, so not read
    first): nothing changed."""


class WrittenCache:
    """Nodes and entries as last committed or read (absent ones too), the newest CACHED_KEYS
    of them. A read fills it only if no commit came in between (`generation`)."""

    def __init__(self, prefixes: tuple[bytes, ...]) -> None:
        self.prefixes = prefixes
        self._values: collections.OrderedDict[bytes, bytes | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    def lookup(self, key: bytes) -> tuple[bool, bytes | None, int]:
        """(whether it is known, its value, the generation to give `read` back)."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return True, self._values[key], self._generation
            return False, None, self._generation

    def read(self, key: bytes, value: bytes | None, generation: int) -> None:
        """`value` was read after `lookup` gave `generation`."""
        with self._lock:
            if self._generation == generation:
                self._remember(key, value)

    def _remember(self, key: bytes, value: bytes | None) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        if len(self._values) > CACHED_KEYS:
            self._values.popitem(last=False)

    def committed(self, ops: list[rpc.RequestOp] | None) -> None:
        """After a commit of `ops` (None: one whose outcome is unknown)."""
        with self._lock:
            self._generation += 1
            if ops is None:
                self._values.clear()
                return
            for op in ops:
                if op.HasField("request_put"):
                    key, value = op.request_put.key, op.request_put.value
                else:
                    key, value = op.request_delete_range.key, None
                    if op.request_delete_range.range_end and key.startswith(self.prefixes):
                        self._values.clear()  # (no change deletes nodes or entries by range)
                if key.startswith(self.prefixes):
                    self._remember(key, value)


class GuardedStore(MetaStore):
    """The keys below a cluster prefix, read through the cache and written by guarded
    transactions; the engine's parts (etcdnamespace.py, etcdrecords.py, etcdintents.py)
    build on it."""

    def __init__(self, endpoints: list[str], prefix: str = "pfs/", ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        self.etcd = Etcd(endpoints, tls_credentials(ca_file, cert_file, key_file))
        self.prefix = prefix.encode()
        self._write_lock = threading.RLock()
        #: The leader key and its create revision this metaserver's writes need (election.py);
        #: None: unguarded (a store nobody else writes, as in the conformance tests).
        self.guard: tuple[bytes, int] | None = None
        #: Counters as last committed (cleared when a commit's outcome is unknown).
        self._counters: dict[str, int] = {}
        self._cache = WrittenCache((self.prefix + b"n/", self.prefix + b"e/"))
        self._txn_ids = itertools.count()
        self._txn_base = os.urandom(8).hex()
        self._last_compaction = time.monotonic()
        self._revision = 0

    # --- what election.py uses --------------------------------------------------------------
    def key(self, name: bytes | str) -> bytes:
        """The etcd key of `name` below this cluster's prefix."""
        return self.prefix + (name.encode() if isinstance(name, str) else name)

    def put_leased(self, name: str, value: str, lease: int) -> None:
        """Puts `name` under an etcd lease (gone with it), guarded as every write."""
        with self._write_lock:
            self._commit([put(self.key(name), value, lease)])

    def values(self, prefix: str) -> list[bytes]:
        """The values of the keys under `prefix`, by key."""
        return [value for _, value in self._scan(prefix)]

    def guard_with(self, leader_key: bytes, epoch: int) -> None:
        """From now on every write holds only while `leader_key` has create revision
        `epoch` (election.py)."""
        self.guard = (leader_key, epoch)
        self._counters.clear()
        self._cache.committed(None)
        self.etcd.catch_up()  # (the deposed one's last writes may be new to our member)

    # --- reads ------------------------------------------------------------------------------
    def _get(self, name: bytes | str) -> bytes | None:
        key = self.key(name)
        if not key.startswith(self._cache.prefixes):
            return self.etcd.get(key)
        known, value, generation = self._cache.lookup(key)
        if not known:
            value = self.etcd.get(key)
            self._cache.read(key, value, generation)
        return value

    def _scan(self, prefix: str, start: str | None = None, limit: int = -1):
        """(key without the prefix, value) under `prefix`."""
        skip = len(self.prefix)
        for key, value in self.etcd.scan(self.key(prefix),
                                         self.key(start) if start else None, limit):
            yield key[skip:].decode(), value

    def _counter(self, name: str) -> int:
        if name not in self._counters:
            value = self._get(counter_key(name))
            self._counters[name] = int(value) if value else 0
        return self._counters[name]

    # --- writes -----------------------------------------------------------------------------
    def _known(self, name: str) -> tuple[bool, bytes | None]:
        """(whether the cache knows `name`, its value): what a commit may expect absent
        instead of reading it first (`_commit`'s `absent`)."""
        known, value, _ = self._cache.lookup(self.key(name))
        return known, value

    def _commit(self, ops: list[rpc.RequestOp], counters: dict[str, int] | None = None,
                absent: tuple[str, ...] = ()) -> None:
        """One guarded transaction, tried again on another member if its answer is lost;
        `counters` are put in it too, and remembered. It commits only if the keys `absent`
        do not exist (else KeyExists): a check without a round trip of its own."""
        ops = ops + [put(self.key(counter_key(name)), str(value))
                     for name, value in (counters or {}).items()]
        try:
            self._commit_ops(ops, [self.key(name) for name in absent])
        except (Deposed, KeyExists):
            raise  # (nothing changed)
        except BaseException:
            self._counters.clear()  # (committed or not: read them again)
            self._cache.committed(None)
            raise
        self._counters.update(counters or {})
        self._cache.committed(ops)

    def _commit_ops(self, ops: list[rpc.RequestOp], absent: list[bytes]) -> None:
        txn_id = f"{self._txn_base}-{next(self._txn_ids)}"
        compare = [rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL,
                               create_revision=0) for key in absent]
        if self.guard is not None:
            key, revision = self.guard
            compare.append(rpc.Compare(key=key, target=rpc.Compare.CREATE,
                                       result=rpc.Compare.EQUAL, create_revision=revision))
        request = rpc.TxnRequest(compare=compare,
                                 success=ops + [put(self.key(b"txn"), txn_id)])
        while True:
            turn = self.etcd.turn
            try:
                reply = self.etcd.kv.Txn(request, timeout=CALL_SECONDS)
                break
            except grpc.RpcError as e:
                if not unanswered(e):
                    raise OSError(f"etcd refused a change: {e.details()}") from None
                self.etcd.next_member(turn, e.code().name)
                if self._get(b"txn") == txn_id.encode():
                    return  # it did commit
        if not reply.succeeded:
            if any(self.etcd.get(key) is not None for key in absent):
                raise KeyExists()
            raise Deposed("another metaserver is active now; this one's change was refused")
        self._revision = reply.header.revision

    def _commit_chunks(self, ops: list[rpc.RequestOp]) -> None:
        """Commits in transactions of at most TXN_OPS (each idempotent on its own)."""
        for i in range(0, len(ops), TXN_OPS):
            self._commit(ops[i:i + TXN_OPS])

    def _delete_under(self, prefix: str) -> rpc.RequestOp:
        """The op deleting every key under `prefix`."""
        key = self.key(prefix)
        return delete(key, prefix_end(key))

    # --- running ----------------------------------------------------------------------------
    def now(self, fn, *args):
        """Never: a commit waits for a quorum of etcd members to put it on their disks, which
        the metaserver's loop must not wait for; every change goes to the metadata thread."""
        raise WriterBusy

    def exclusive(self) -> threading.RLock:
        return self._write_lock

    def sync(self) -> None:
        """Commits are on a quorum of etcd members already: this only compacts old revisions
        now and then, so that etcd's database holds the present, not every past."""
        if self._revision and time.monotonic() - self._last_compaction > COMPACT_SECONDS:
            self._last_compaction = time.monotonic()
            revision = self._revision
            try:
                self.etcd.call(lambda c: c.kv.Compact(rpc.CompactionRequest(revision=revision),
                                                      timeout=CALL_SECONDS))
            except grpc.RpcError as e:
                if "compacted" not in (e.details() or ""):
                    raise

    def close(self) -> None:
        self.etcd.close()
