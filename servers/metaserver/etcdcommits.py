"""The etcd engine's guarded writes: every change is one transaction that commits only while
this metaserver's epoch still holds (the leader key has the create revision it had when it was
elected, election.py), so a deposed metaserver's writes fail (`Deposed`) and change nothing.

Invariant: one writer. Hence counters and the nodes, entries and copy ranges it wrote or read
are known without a read (etcdcache.py, emptied when a new guard is set or a commit's outcome
is unknown), and a write whose answer is lost committed iff the `txn` key holds its id.
"""
from __future__ import annotations

import itertools
import os
import threading
import time

import grpc
from aetcd import rpc

from .etcdcache import GROUP_KEYS, WrittenCache
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


class Deposed(Exception):
    """Another metaserver is active now: this one's write was refused, nothing changed."""


class KeyExists(Exception):
    """A key the commit expected absent exists (not known in the cache, so not read
    first): nothing changed."""


class GuardedStore(MetaStore):
    """The keys below a cluster prefix, read through the cache and written by guarded
    transactions; the engine's parts (etcdnamespace.py, etcdrecords.py, etcdintents.py)
    build on it."""

    reads_wait = True

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
        self._cache = WrittenCache((self.key("n/"), self.key("e/")),
                                   (self.key("e/"), self.key("m/"), self.key("a/")))
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

    def _group(self, prefix: str) -> dict[bytes, bytes] | None:
        """The keys of a group (etcdcache.py) and their values, read whole once and known from
        then on; None if it has more than GROUP_KEYS (then read key by key)."""
        key = self.key(prefix)
        known, kvs, generation = self._cache.group(key)
        if not known:
            found = self.etcd.range(key, prefix_end(key), GROUP_KEYS + 1)
            kvs = {kv.key: kv.value for kv in found} if len(found) <= GROUP_KEYS else None
            self._cache.read_group(key, kvs, generation)
        return kvs

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
                absent: tuple[str, ...] = (), fresh: tuple[str, ...] = ()) -> None:
        """One guarded transaction, tried again on another member if its answer is lost;
        `counters` are put in it too, and remembered. It commits only if the keys `absent`
        do not exist (else KeyExists): a check without a round trip of its own. The groups
        `fresh` (etcdcache.py) are known empty after it: a node's it creates."""
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
        self._cache.committed(ops, tuple(self.key(prefix) for prefix in fresh))

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

    def at_once(self, fn, *args):
        """fn(*args) if what it reads is in the cache (etcdcache.py); else WouldWait."""
        return self.etcd.at_once(fn, *args)

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
