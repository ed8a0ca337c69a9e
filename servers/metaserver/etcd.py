"""The etcd engine of the metadata store (store.py): the namespace and the rest in an etcd v3
cluster, so that it outlives any one machine and several metaservers can share it (one active,
election.py).

Keys, as JuiceFS's tkv layout (every key under a cluster prefix, ids in fixed-width hex so that
keys sort as numbers):

    n/<id>                      a node: [is_dir, size, ctime, mtime, block_size, stripe_blocks,
                                servers, replicas, parent, name, mode, uid, gid, atime, target]
                                (parent null: an orphan; the last five may be missing: unset)
    e/<parent>/<name>           an entry: "<id>,<is_dir>" (a lookup reads one per component)
    o/<id>                      an orphan: a file unlinked while open (orphans.py)
    c/<name>                    a counter (node ids, client ids, files, next fileserver index)
    d/<file>[/<server>]         objects still to delete: their fileservers (a removed file's;
                                a dropped copy's, one key each, so that nothing is read first)
    f/<index>                   a member: {name, uuid, address, lost_at}
    s/<client>                  a session: its key's hash
    m/<file>/<server>           a copy's missed ranges
    a/<file>/<server>           those of them it holds apart (copies.py)
    l/<dir>                     a directory's layout: [stripe_width, stripe_blocks, replicas]
    w/<table>/<client>/<file>   a session file (writing, temporaries)
    i/lost/<server>             a durable intent: marking a lost fileserver's copies, cursor
    txn                         the id of the last write (see _commit)

A lookup is one get per component (and one for the node), a listing one paged range scan of
`e/<parent>/` (and one read-only transaction for its nodes), a create, unlink or rename one
transaction. Values stay small (a node is a few hundred bytes). A change too big for one
transaction (etcd's --max-txn-ops, 128 by default) is split into idempotent chunks; marking a
lost fileserver's copies works behind a durable intent that the next active finishes.

Every write is a transaction guarded by the writer's epoch (election.py): it commits only while
the leader key is still the one this metaserver created, so a deposed metaserver's writes fail
(`Deposed`). A write whose answer is lost (the etcd member died) is tried again on another
member, unless the `txn` key shows it committed: one writer, so the last id is ours or not.
Reads see every committed write (Etcd.range says how, at the cost of one member's answer).
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import itertools
import json
import logging
import os
import threading
import time

import grpc
from aetcd import rpc

from pfs.protocol.paths import brief
from pfs.protocol.ranges import INFINITY

from .namespace import (
    ROOT,
    NamespaceError,
    NewAttributes,
    Node,
    WriterBusy,
    check_replace,
    may_move,
    missing_error,
    not_a_directory,
)
from .store import SESSION_FILE_TABLES, MetaStore

log = logging.getLogger("pfs.metaserver")

#: Operations per transaction (etcd's default --max-txn-ops is 128).
TXN_OPS = 100
#: Keys per page of a range scan.
PAGE = 1000
#: How often old revisions are compacted away (etcd keeps every revision until then).
COMPACT_SECONDS = 60.0
#: Nodes and entries the active metaserver keeps in memory (a few hundred bytes each).
CACHED_KEYS = 200_000
#: How long a call to etcd may take before another member is tried.
CALL_SECONDS = 5.0


class Deposed(Exception):
    """Another metaserver is active now: this one's write was refused, nothing changed."""


class EtcdUnavailable(OSError):
    """No etcd member answers."""


def _hex(n: int, width: int = 16) -> str:
    return format(n, f"0{width}x")


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


class Etcd:
    """A blocking etcd v3 client over several members: a member that does not answer is
    left for the next one."""

    def __init__(self, endpoints: list[str],
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        """`credentials`: TLS (tls_credentials), or None for plain gRPC."""
        if not endpoints or not all(endpoints):
            raise SystemExit("--store etcd://HOST:PORT[,HOST:PORT...]: give at least one member")
        self.endpoints = endpoints
        self._credentials = credentials
        self._lock = threading.Lock()
        self._connect(0)

    def another(self) -> "Etcd":
        """A client of its own to the same members (calls that must not wait for others)."""
        return Etcd(self.endpoints, self._credentials)

    def catch_up(self) -> None:
        """The next read is linearizable again (see range): others may have written."""
        self._caught_up = False

    def _connect(self, turn: int) -> None:
        self._turn = turn
        self._caught_up = False  # (see range)
        target = self.endpoints[turn % len(self.endpoints)]
        self._channel = (grpc.secure_channel(target, self._credentials) if self._credentials
                         else grpc.insecure_channel(target))
        self.kv = rpc.KVStub(self._channel)
        self.lease = rpc.LeaseStub(self._channel)
        self.maintenance = rpc.MaintenanceStub(self._channel)

    @property
    def turn(self) -> int:
        return self._turn

    def next_member(self, turn: int, why: str) -> None:
        """The member of `turn` did not answer: the next one is asked from now on."""
        with self._lock:
            if self._turn == turn:
                log.warning("etcd member %s does not answer (%s); trying the next",
                            self.endpoints[turn % len(self.endpoints)], why)
                self._channel.close()
                self._connect(turn + 1)

    def call(self, fn):
        """fn(self), on the next member when one does not answer (each twice at most): for
        reads, which may be repeated."""
        for attempt in range(len(self.endpoints) * 2):
            turn = self._turn
            try:
                return fn(self)
            except grpc.RpcError as e:
                if not _unanswered(e):
                    raise
                self.next_member(turn, e.code().name)
                if attempt >= len(self.endpoints):
                    time.sleep(0.2)
        raise EtcdUnavailable(f"no etcd member answers ({', '.join(self.endpoints)}): start "
                              "them, or check --store")

    def range(self, key: bytes, end: bytes = b"", limit: int = 0) -> list:
        """The keys in [key, end). The first read from a member is linearizable (it waits
        until the member has applied everything committed), the next ones serializable (the
        member answers alone): with one writer, whose writes are applied on the member it
        talks to before they are answered, they see every write all the same."""
        def read(c: Etcd):
            reply = c.kv.Range(rpc.RangeRequest(key=key, range_end=end, limit=limit,
                                                serializable=c._caught_up),
                               timeout=CALL_SECONDS)
            c._caught_up = True
            return reply
        return list(self.call(read).kvs)

    def get(self, key: bytes) -> bytes | None:
        kvs = self.range(key)
        return kvs[0].value if kvs else None

    def scan(self, prefix: bytes, start: bytes | None = None, limit: int = -1):
        """The (key, value) pairs under `prefix` from `start` on, by key, in pages."""
        key, end, taken = start or prefix, _prefix_end(prefix), 0
        while limit < 0 or taken < limit:
            page = min(PAGE, limit - taken) if limit >= 0 else PAGE
            kvs = self.range(key, end, page)
            for kv in kvs:
                yield kv.key, kv.value
            taken += len(kvs)
            if len(kvs) < page:
                return
            key = kvs[-1].key + b"\0"

    def close(self) -> None:
        self._channel.close()


def tls_credentials(ca_file: str | None, cert_file: str | None,
                    key_file: str | None) -> grpc.ChannelCredentials | None:
    """TLS to etcd when any of its files is given (--etcd-ca, --etcd-cert, --etcd-key)."""
    if not (ca_file or cert_file):
        return None

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()
    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


def _unanswered(e: grpc.RpcError) -> bool:
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def put(key: bytes, value: bytes | str, lease: int = 0) -> rpc.RequestOp:
    if isinstance(value, str):
        value = value.encode()
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))


class EtcdStore(MetaStore):
    def __init__(self, endpoints: list[str], prefix: str = "pfs/", ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        self.etcd = Etcd(endpoints, tls_credentials(ca_file, cert_file, key_file))
        self.prefix = prefix.encode()
        self._write_lock = threading.RLock()
        #: The leader key and its create revision this metaserver's writes need (election.py);
        #: None: unguarded (a store nobody else writes, as in the conformance tests).
        self.guard: tuple[bytes, int] | None = None
        #: Counters as last committed: one writer, so they need no read (cleared when a
        #: commit's outcome is unknown, and by a new guard).
        self._counters: dict[str, int] = {}
        #: Nodes and entries as last committed or read (absent ones too), the newest
        #: CACHED_KEYS of them: one writer, so a lookup of a cached path reads nothing. Filled
        #: by reads only if no commit came in between (`_generation`), under `_cache_lock`.
        self._cache: collections.OrderedDict[bytes, bytes | None] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._generation = 0
        self._txn_ids = itertools.count()
        self._txn_base = os.urandom(8).hex()
        self._last_compaction = time.monotonic()
        self._revision = 0
        if self._get(b"n/" + _hex(ROOT).encode()) is None:
            now = time.time()
            self._commit([put(self._key(b"n/" + _hex(ROOT).encode()),
                              json.dumps([1, 0, now, now, 0, 0, [], 1, ROOT, ""]))])

    # --- keys and commits -------------------------------------------------------------------
    def _key(self, key: bytes | str) -> bytes:
        return self.prefix + (key.encode() if isinstance(key, str) else key)

    def _get(self, key: bytes | str) -> bytes | None:
        key = self._key(key)
        if not key.startswith(self._cached_prefixes):
            return self.etcd.get(key)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            generation = self._generation
        value = self.etcd.get(key)
        with self._cache_lock:
            if self._generation == generation:
                self._remember(key, value)
        return value

    @property
    def _cached_prefixes(self) -> tuple[bytes, bytes]:
        return self.prefix + b"n/", self.prefix + b"e/"

    def _remember(self, key: bytes, value: bytes | None) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        if len(self._cache) > CACHED_KEYS:
            self._cache.popitem(last=False)

    def _committed(self, ops: list[rpc.RequestOp] | None) -> None:
        """The cache after a commit of `ops` (None: one whose outcome is unknown)."""
        with self._cache_lock:
            self._generation += 1
            if ops is None:
                self._cache.clear()
                return
            for op in ops:
                if op.HasField("request_put"):
                    key, value = op.request_put.key, op.request_put.value
                else:
                    key, value = op.request_delete_range.key, None
                    if op.request_delete_range.range_end and key.startswith(self.prefix + b"e/"):
                        self._cache.clear()  # (no change deletes entries by range)
                if key.startswith(self._cached_prefixes):
                    self._remember(key, value)

    def _scan(self, prefix: str, start: str | None = None, limit: int = -1):
        """(key without the prefix, value) under `prefix`."""
        skip = len(self.prefix)
        for key, value in self.etcd.scan(self._key(prefix),
                                         self._key(start) if start else None, limit):
            yield key[skip:].decode(), value

    def guard_with(self, leader_key: bytes, epoch: int) -> None:
        """From now on every write holds only while `leader_key` has create revision
        `epoch` (election.py)."""
        self.guard = (leader_key, epoch)
        self._counters.clear()
        self._committed(None)
        self.etcd.catch_up()  # (the deposed one's last writes may be new to our member)

    def _commit(self, ops: list[rpc.RequestOp], counters: dict[str, int] | None = None) -> None:
        """One guarded transaction, tried again on another member if its answer is lost;
        `counters` are put in it too, and remembered."""
        ops = ops + [put(self._key(f"c/{name}"), str(value))
                     for name, value in (counters or {}).items()]
        try:
            self._commit_ops(ops)
        except Deposed:
            raise  # (nothing changed)
        except BaseException:
            self._counters.clear()  # (committed or not: read them again)
            self._committed(None)
            raise
        self._counters.update(counters or {})
        self._committed(ops)

    def _commit_ops(self, ops: list[rpc.RequestOp]) -> None:
        txn_id = f"{self._txn_base}-{next(self._txn_ids)}"
        compare = []
        if self.guard is not None:
            key, revision = self.guard
            compare.append(rpc.Compare(key=key, target=rpc.Compare.CREATE,
                                       result=rpc.Compare.EQUAL, create_revision=revision))
        request = rpc.TxnRequest(compare=compare,
                                 success=ops + [put(self._key(b"txn"), txn_id)])
        while True:
            turn = self.etcd.turn
            try:
                reply = self.etcd.kv.Txn(request, timeout=CALL_SECONDS)
                break
            except grpc.RpcError as e:
                if not _unanswered(e):
                    raise OSError(f"etcd refused a change: {e.details()}") from None
                self.etcd.next_member(turn, e.code().name)
                if self._get(b"txn") == txn_id.encode():
                    return  # it did commit
        if not reply.succeeded:
            raise Deposed("another metaserver is active now; this one's change was refused")
        self._revision = reply.header.revision

    def _commit_chunks(self, ops: list[rpc.RequestOp]) -> None:
        """Commits in transactions of at most TXN_OPS (each idempotent on its own)."""
        for i in range(0, len(ops), TXN_OPS):
            self._commit(ops[i:i + TXN_OPS])

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

    # --- the namespace ----------------------------------------------------------------------
    def _node(self, node_id: int) -> tuple[Node, int, str] | None:
        """The node, its parent and name."""
        value = self._get(f"n/{_hex(node_id)}")
        if value is None:
            return None
        return _decode(node_id, value)

    def _entry(self, parent: int, name: str) -> tuple[int, bool] | None:
        value = self._get(f"e/{_hex(parent)}/{name}")
        if value is None:
            return None
        node_id, is_dir = value.decode().split(",")
        return int(node_id, 16), is_dir == "1"

    def _walk(self, path: tuple[str, ...]) -> tuple[Node, int, str]:
        """The node at `path`, its parent's id and its name: one get per component, and one
        for the node."""
        node_id, is_dir = ROOT, True
        for depth, name in enumerate(path):
            if not is_dir:
                raise not_a_directory(path[:depth])
            entry = self._entry(node_id, name)
            if entry is None:
                raise missing_error(path, depth)
            node_id, is_dir = entry
        found = self._node(node_id)
        if found is None:
            raise missing_error(path, len(path) - 1)
        return found

    def _directory(self, path: tuple[str, ...]) -> tuple[Node, int, str]:
        found = self._walk(path)
        if not found[0].is_dir:
            raise not_a_directory(path)
        return found

    def lookup(self, path: tuple[str, ...]) -> Node:
        return self._walk(path)[0]

    def get(self, node_id: int) -> Node:
        found = self._node(node_id)
        if found is None:
            raise NamespaceError(errno.ENOENT, f"file {node_id} no longer exists")
        return found[0]

    def path_of(self, node_id: int) -> str:
        names = []
        while node_id != ROOT:
            found = self._node(node_id)
            if found is None or found[1] is None:
                return ""  # deleted meanwhile, or an orphan
            _, node_id, name = found
            names.append(name)
        return "/".join(reversed(names))

    def listdir(self, path: tuple[str, ...], after: str = "",
                limit: int = -1) -> list[tuple[str, Node]]:
        directory = self._directory(path)[0]
        prefix = f"e/{_hex(directory.node_id)}/"
        entries = [(key[len(prefix):], int(value.split(b",")[0], 16)) for key, value in
                   self._scan(prefix, prefix + after + "\0" if after else None, limit)]
        nodes = {}
        for i in range(0, len(entries), TXN_OPS):  # the nodes, a read-only transaction a page
            chunk = [self._key(f"n/{_hex(node_id)}") for _, node_id in entries[i:i + TXN_OPS]]
            request = rpc.TxnRequest(success=[rpc.RequestOp(request_range=rpc.RangeRequest(
                key=key)) for key in chunk])
            reply = self.etcd.call(lambda c: c.kv.Txn(request, timeout=CALL_SECONDS))
            for response in reply.responses:
                for kv in response.response_range.kvs:
                    node_id = int(kv.key.rsplit(b"/", 1)[1], 16)
                    nodes[node_id] = _decode(node_id, kv.value)[0]
        return [(name, nodes[node_id]) for name, node_id in entries if node_id in nodes]

    def count_files(self) -> int:
        return self._counter("files")

    def _counter(self, name: str) -> int:
        if name not in self._counters:
            value = self._get(f"c/{name}")
            self._counters[name] = int(value) if value else 0
        return self._counters[name]

    def _new_entry(self, path: tuple[str, ...], is_dir: bool, block_size: int = 0,
                   stripe_blocks: int = 0, servers=(), replicas: int = 1,
                   attributes: NewAttributes = NewAttributes(),
                   target: str | None = None) -> Node:
        with self._write_lock:
            if not path:
                raise NamespaceError(errno.EEXIST, "the root directory exists")
            parent = self._directory(path[:-1])[0]
            if self._entry(parent.node_id, path[-1]) is not None:
                raise NamespaceError(errno.EEXIST, f"exists: {brief('/'.join(path))}")
            node_id = self._counter("node_id") + 1
            now = time.time()
            a = attributes
            node = Node(node_id, is_dir, 0, now, now, block_size, stripe_blocks, tuple(servers),
                        replicas, a.mode, a.uid, a.gid, None, target)
            ops = [put(self._key(f"n/{_hex(node_id)}"), _encode(node, parent.node_id, path[-1])),
                   put(self._key(f"e/{_hex(parent.node_id)}/{path[-1]}"),
                       f"{_hex(node_id)},{int(is_dir)}")]
            ops += self._touched({parent.node_id}, now)
            counters = {"node_id": node_id}
            if not is_dir:
                counters["files"] = self._counter("files") + 1
            self._commit(ops, counters)
            return node

    def _touched(self, directories: set[int], now: float) -> list[rpc.RequestOp]:
        """The ops moving the mtime and ctime of directories whose entries change (POSIX), but
        the root's, which every top-level change would otherwise rewrite."""
        ops = []
        for dir_id in directories - {ROOT}:
            node, parent, name = self._node(dir_id)
            ops.append(put(self._key(f"n/{_hex(dir_id)}"),
                           _encode(_replace(node, mtime=now, ctime=now), parent, name)))
        return ops

    def create(self, path, block_size, stripe_blocks, servers, replicas=1,
               attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, False, block_size, stripe_blocks, servers, replicas,
                               attributes)

    def mkdir(self, path: tuple[str, ...], attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, True, attributes=attributes)

    def symlink(self, path: tuple[str, ...], target: str,
                attributes: NewAttributes = NewAttributes()) -> Node:
        return self._new_entry(path, False, attributes=attributes, target=target)

    def set_attributes(self, path: tuple[str, ...], mode: int | None = None,
                       uid: int | None = None, gid: int | None = None,
                       atime: float | None = None, mtime: float | None = None) -> Node:
        with self._write_lock:
            node, parent, name = self._walk(path)
            changes = {"mode": mode, "uid": uid, "gid": gid, "atime": atime, "mtime": mtime}
            node = _replace(node, ctime=time.time(),
                            **{k: v for k, v in changes.items() if v is not None})
            self._commit([put(self._key(f"n/{_hex(node.node_id)}"), _encode(node, parent, name))])
            return node

    def _removal(self, node: Node, entry_key: bytes | None) -> list[rpc.RequestOp]:
        """The ops removing a node (and its entry, unless `entry_key` is None: overwritten);
        the files counter is the caller's (`_fewer_files`)."""
        ops = [delete(self._key(f"n/{_hex(node.node_id)}"))]
        if entry_key is not None:
            ops.append(delete(entry_key))
        if not node.is_dir:
            if node.servers:  # (a symlink has no objects)
                ops.append(put(self._key(f"d/{_hex(node.node_id)}"),
                               ",".join(str(s) for s in node.servers)))
            for kind in ("m", "a"):
                ranges = self._key(f"{kind}/{_hex(node.node_id)}/")
                ops.append(delete(ranges, _prefix_end(ranges)))
        else:
            ops.append(delete(self._key(f"l/{_hex(node.node_id)}")))
        return ops

    def _fewer_files(self, node: Node | None) -> dict[str, int]:
        """The counters of a commit that removes `node` (None: nothing)."""
        return {"files": self.count_files() - 1} if node is not None and not node.is_dir else {}

    def _entry_key(self, path: tuple[str, ...], parent: int) -> bytes:
        return self._key(f"e/{_hex(parent)}/{path[-1]}")

    def unlink(self, path: tuple[str, ...], orphan: bool = False) -> Node:
        with self._write_lock:
            node, parent, _ = self._walk(path)
            if node.is_dir:
                raise NamespaceError(errno.EISDIR, f"is a directory (use rmdir): "
                                                   f"{brief('/'.join(path))}")
            ops = self._touched({parent}, time.time()) + [delete(self._entry_key(path, parent))]
            if orphan:
                self._commit(ops + self._orphaned(node))
            else:
                self._commit(ops + self._removal(node, None), self._fewer_files(node))
            return node

    def _orphaned(self, node: Node) -> list[rpc.RequestOp]:
        """The ops keeping a file whose entry goes as an orphan: no parent, recorded."""
        return [put(self._key(f"n/{_hex(node.node_id)}"), _encode(node, None, "")),
                put(self._key(f"o/{_hex(node.node_id)}"), b"")]

    def orphans(self) -> list[int]:
        return [int(key[2:], 16) for key, _ in self._scan("o/")]

    def reclaim_orphan(self, node_id: int) -> Node | None:
        with self._write_lock:
            found = self._node(node_id)
            if self._get(f"o/{_hex(node_id)}") is None or found is None:
                return None
            node = found[0]
            self._commit([delete(self._key(f"o/{_hex(node_id)}"))] + self._removal(node, None),
                         self._fewer_files(node))
            return node

    def _empty(self, node: Node) -> bool:
        return not list(self._scan(f"e/{_hex(node.node_id)}/", limit=1))

    def rmdir(self, path: tuple[str, ...]) -> None:
        with self._write_lock:
            if not path:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be removed")
            node, parent, _ = self._directory(path)
            if not self._empty(node):
                raise NamespaceError(errno.ENOTEMPTY, f"directory not empty: "
                                                      f"{brief('/'.join(path))}")
            self._commit(self._touched({parent}, time.time()) +
                         self._removal(node, self._entry_key(path, parent)))

    def rename(self, old: tuple[str, ...], new: tuple[str, ...],
               orphan_replaced: bool = False) -> Node | None:
        with self._write_lock:
            if not old or not new:
                raise NamespaceError(errno.EBUSY, "the root directory cannot be renamed or "
                                                  "replaced")
            moving, old_parent, _ = self._walk(old)
            parent = self._directory(new[:-1])[0]
            if not may_move(moving, old, new):
                return None
            ops, replaced, removed = [], None, None
            entry = self._entry(parent.node_id, new[-1])
            if entry is not None:
                replaced = self.get(entry[0])
                if replaced.node_id == moving.node_id:
                    return None
                check_replace(moving, replaced, self._empty(replaced), new)
                if orphan_replaced and not replaced.is_dir:
                    ops += self._orphaned(replaced)  # (still a file: the counter stays)
                else:
                    ops += self._removal(replaced, None)
                    removed = replaced
            ops += self._touched({old_parent, parent.node_id}, time.time())
            ops += [delete(self._entry_key(old, old_parent)),
                    put(self._entry_key(new, parent.node_id),
                        f"{_hex(moving.node_id)},{int(moving.is_dir)}"),
                    put(self._key(f"n/{_hex(moving.node_id)}"),
                        _encode(moving, parent.node_id, new[-1]))]
            self._commit(ops, self._fewer_files(removed))
            return replaced

    def record_size(self, node_id: int, size: int, touch: bool, exact: bool = False) -> None:
        with self._write_lock:
            found = self._node(node_id)
            if found is None:
                return
            node, parent, name = found
            now = time.time()  # (a write moves ctime too, as POSIX says)
            node = _replace(node, size=size if exact else max(size, node.size),
                            mtime=now if touch else node.mtime,
                            ctime=now if touch else node.ctime)
            self._commit([put(self._key(f"n/{_hex(node_id)}"), _encode(node, parent, name))])

    def change_copies(self, file_id: int, servers: list[int], replicas: int, added: list[int],
                      dropped: list[int]) -> None:
        with self._write_lock:
            found = self._node(file_id)
            if found is None:
                raise NamespaceError(errno.ENOENT, f"file {file_id} no longer exists")
            node, parent, name = found
            node = _replace(node, servers=tuple(servers), replicas=replicas)
            ops = [put(self._key(f"n/{_hex(file_id)}"), _encode(node, parent, name))]
            ops += [put(self._key(f"m/{_hex(file_id)}/{_hex(i, 8)}"), json.dumps([[0, INFINITY]]))
                    for i in added]
            for i in dropped:
                ops += [delete(self._key(f"{kind}/{_hex(file_id)}/{_hex(i, 8)}"))
                        for kind in ("m", "a")]
                ops.append(put(self._key(f"d/{_hex(file_id)}/{_hex(i, 8)}"), str(i)))
            self._commit(ops)  # (a few ops a copy: within one transaction)

    # --- directories' layouts ---------------------------------------------------------------
    def layouts(self) -> dict[int, tuple[int, int, int]]:
        return {int(key[2:], 16): tuple(json.loads(value)) for key, value in self._scan("l/")}

    def set_layout(self, dir_id: int, layout: tuple[int, int, int] | None) -> None:
        with self._write_lock:
            key = self._key(f"l/{_hex(dir_id)}")
            self._commit([delete(key) if layout is None else put(key, json.dumps(list(layout)))])

    # --- objects still to delete ------------------------------------------------------------
    def _pending(self):
        """(key, file id, fileservers) of each record of objects still to delete."""
        for key, value in self._scan("d/"):
            yield key, int(key[2:18], 16), _servers(value)

    def pending_deletes(self) -> list[tuple[int, tuple[int, ...]]]:
        merged: dict[int, tuple[int, ...]] = {}
        for _, file_id, servers in self._pending():
            merged[file_id] = merged.get(file_id, ()) + servers
        return list(merged.items())

    def delete_done(self, file_ids: list[int]) -> None:
        with self._write_lock:
            keys = [self._key(f"d/{_hex(f)}") for f in file_ids]
            self._commit_chunks([delete(key, _prefix_end(key)) for key in keys])

    # --- members ----------------------------------------------------------------------------
    def _members(self) -> dict[int, dict]:
        return {int(key[2:], 16): json.loads(value) for key, value in self._scan("f/")}

    def register_fileserver(self, name: str, uuid: str, address: str) -> tuple[int, bool]:
        with self._write_lock:
            members = self._members()
            other = next((m["name"] for m in members.values()
                          if m["uuid"] == uuid and m["name"] != name), None)
            if other is not None:
                raise NamespaceError(errno.EEXIST, f"this data directory belongs to fileserver "
                                                   f"{brief(other)}, not {brief(name)}")
            idx = next((i for i, m in members.items() if m["name"] == name), None)
            lost = False
            if idx is None:
                idx = max(max(members, default=-1) + 1, self._counter("next_fileserver"))
                member = dict(name=name, uuid=uuid, address=address, lost_at=0.0)
            else:
                member = members[idx]
                lost = member["uuid"] != uuid
                member.update(uuid=uuid, address=address,
                              lost_at=time.time() if lost else member["lost_at"])
            self._commit([put(self._key(f"f/{_hex(idx, 8)}"), json.dumps(member))])
            return idx, lost

    def members(self) -> dict[int, tuple[str, float]]:
        return {i: (m["name"], m["lost_at"] or 0.0) for i, m in self._members().items()}

    def fileservers(self) -> dict[int, str]:
        return {i: m["address"] for i, m in self._members().items()}

    def files_on(self, index: int) -> list[Node]:
        return [node for node in self._files_after("") if index in node.servers]

    def remove_member(self, index: int, moved: dict[int, int]) -> None:
        """(In chunks, each idempotent: a crash midway leaves some copies moved, and the
        removal given again moves the rest.)"""
        with self._write_lock:
            ops = []
            for file_id, to in moved.items():
                node, parent, name = self._node(file_id)
                servers = tuple(to if s == index else s for s in node.servers)
                ops.append(put(self._key(f"n/{_hex(file_id)}"),
                               _encode(_replace(node, servers=servers), parent, name)))
                if node.replicas > 1:
                    ops.append(put(self._key(f"m/{_hex(file_id)}/{_hex(to, 8)}"),
                                   json.dumps([[0, INFINITY]])))
            for kind, records in (("m", self.missed()), ("a", self.apart())):
                ops += [delete(self._key(f"{kind}/{_hex(file_id)}/{_hex(server, 8)}"))
                        for file_id, server, _ in records if server == index]
            for key, _, servers in self._pending():
                kept = [s for s in servers if s != index]
                if kept != list(servers):
                    ops.append(put(self._key(key), ",".join(map(str, kept))) if kept
                               else delete(self._key(key)))
            self._commit_chunks(ops)
            self._commit([delete(self._key(f"f/{_hex(index, 8)}"))],
                         {"next_fileserver": max(index + 1, self._counter("next_fileserver"))})

    # --- sessions ---------------------------------------------------------------------------
    def new_session(self, key_hash: bytes) -> int:
        with self._write_lock:
            client_id = self._counter("client_id") + 1
            self._commit([put(self._key(f"s/{_hex(client_id)}"), key_hash)],
                         {"client_id": client_id})
            return client_id

    def next_client_id(self) -> int:
        return self._counter("client_id") + 1

    def forget_session(self, client_id: int) -> None:
        with self._write_lock:
            self._commit([delete(self._key(f"s/{_hex(client_id)}"))])

    def recorded_sessions(self) -> dict[int, bytes]:
        return {int(key[2:], 16): value for key, value in self._scan("s/")}

    @staticmethod
    def _session_file(table: str, client_id: int | None = None,
                      file_id: int | None = None) -> str:
        """The key of a session file, or the prefix of a session's, or of a table's."""
        if table not in SESSION_FILE_TABLES:
            raise ValueError(f"no session-file table {table!r}")
        key = f"w/{table}/"
        if client_id is not None:
            key += f"{_hex(client_id)}/" + ("" if file_id is None else _hex(file_id))
        return key

    def add_session_file(self, table: str, client_id: int, file_id: int) -> None:
        with self._write_lock:
            self._commit([put(self._key(self._session_file(table, client_id, file_id)), b"")])

    def session_files(self, table: str, client_id: int) -> list[int]:
        prefix = self._session_file(table, client_id)
        return [int(key[len(prefix):], 16) for key, _ in self._scan(prefix)]

    def session_file_clients(self, table: str) -> set[int]:
        prefix = self._session_file(table)
        return {int(key[len(prefix):].split("/")[0], 16) for key, _ in self._scan(prefix)}

    def _drop_session_files(self, table: str, client_id: int,
                            file_ids: list[int] | None) -> list[rpc.RequestOp]:
        if file_ids is None:
            prefix = self._key(self._session_file(table, client_id))
            return [delete(prefix, _prefix_end(prefix))]
        return [delete(self._key(self._session_file(table, client_id, f))) for f in file_ids]

    def drop_session_files(self, table: str, client_id: int,
                           file_ids: list[int] | None = None) -> None:
        with self._write_lock:
            self._commit_chunks(self._drop_session_files(table, client_id, file_ids))

    # --- missed ranges ----------------------------------------------------------------------
    def missed(self, file_id: int | None = None,
               limit: int = -1) -> list[tuple[int, int, list[tuple[int, int]]]]:
        return self._copy_ranges("m", file_id, limit)

    def apart(self, file_id: int | None = None) -> list[tuple[int, int, list[tuple[int, int]]]]:
        return self._copy_ranges("a", file_id)

    def _copy_ranges(self, kind: str, file_id: int | None,
                     limit: int = -1) -> list[tuple[int, int, list[tuple[int, int]]]]:
        """(file id, fileserver, its ranges) under `m/` (missed) or `a/` (apart)."""
        prefix = f"{kind}/" if file_id is None else f"{kind}/{_hex(file_id)}/"
        found = []
        for key, value in self._scan(prefix, limit=limit):
            f, server = key[2:].split("/")
            found.append((int(f, 16), int(server, 16), [tuple(r) for r in json.loads(value)]))
        return found

    def set_missed(self, changes: dict[tuple[int, int], list[tuple[int, int]]],
                   forget_writer: int | None = None,
                   apart: dict[tuple[int, int], list[tuple[int, int]]] | None = None) -> None:
        with self._write_lock:
            ops = [put(self._key(f"{kind}/{_hex(f)}/{_hex(s, 8)}"), json.dumps(ranges)) if ranges
                   else delete(self._key(f"{kind}/{_hex(f)}/{_hex(s, 8)}"))
                   for kind, ranges_of in (("m", changes), ("a", apart or {}))
                   for (f, s), ranges in ranges_of.items()]
            if forget_writer is not None:
                ops += self._drop_session_files("writing", forget_writer, None)
            self._commit_chunks(ops)  # (the writer forgotten last: a crash before is redone)

    def mark_lost(self, server: int) -> int:
        with self._write_lock:
            intent = f"i/lost/{_hex(server, 8)}"
            self._commit([put(self._key(intent), "")])
            return self._finish_lost(server, "")

    def _finish_lost(self, server: int, after: str) -> int:
        """Marks the lost fileserver's copies from node key `after` on, a chunk a commit, the
        intent's cursor moving with each; then drops the intent."""
        intent, marked, ops = self._key(f"i/lost/{_hex(server, 8)}"), 0, []
        for node in self._files_after(after):
            if node.replicas > 1 and server in node.servers:
                ops += [put(self._key(f"m/{_hex(node.node_id)}/{_hex(server, 8)}"),
                            json.dumps([[0, INFINITY]])),
                        delete(self._key(f"a/{_hex(node.node_id)}/{_hex(server, 8)}"))]
                marked += 1
            if len(ops) >= TXN_OPS - 2:
                self._commit(ops + [put(intent, f"n/{_hex(node.node_id)}")])
                ops = []
        self._commit(ops + [delete(intent)])
        return marked

    def _files_after(self, after: str):
        """The files whose node keys sort after `after` (all: ""), by id."""
        for key, value in self._scan("n/", after + "\0" if after else None):
            node, _, _ = _decode(int(key[2:], 16), value)
            if not node.is_dir:
                yield node

    def resume(self) -> None:
        with self._write_lock:
            for key, cursor in self._scan("i/lost/"):
                server = int(key.rsplit("/", 1)[1], 16)
                log.warning("finishing what a metaserver left half done: marking fileserver "
                            "%d's copies as lost", server)
                self._finish_lost(server, cursor.decode())


def _encode(node: Node, parent: int | None, name: str) -> str:
    """(parent None: an orphan.)"""
    fields = [int(node.is_dir), node.size, node.ctime, node.mtime, node.block_size,
              node.stripe_blocks, list(node.servers), node.replicas, parent, name]
    attributes = [node.mode, node.uid, node.gid, node.atime, node.target]
    while attributes and attributes[-1] is None:  # (most nodes have none set: kept short)
        attributes.pop()
    return json.dumps(fields + attributes, separators=(",", ":"))


def _decode(node_id: int, value: bytes) -> tuple[Node, int | None, str]:
    (is_dir, size, ctime, mtime, block_size, stripe_blocks, servers, replicas, parent, name,
     *attributes) = json.loads(value)
    return (Node(node_id, bool(is_dir), size, ctime, mtime, block_size, stripe_blocks,
                 tuple(servers), replicas, *attributes), parent, name)


def _replace(node: Node, **changes) -> Node:
    return dataclasses.replace(node, **changes)


def _servers(value: bytes) -> tuple[int, ...]:
    return tuple(int(s) for s in value.decode().split(",")) if value else ()
