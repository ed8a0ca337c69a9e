"""A blocking etcd v3 client over several members, and the operations a transaction is made of.

Invariant: a member that does not answer is left for the next one; a read may be repeated on
it, a write is the caller's to repeat (etcdcommits.py knows whether it committed). Reads see
every committed write of the one writer (Etcd.range says how). Under `at_once` nothing calls
etcd (WouldWait instead): what the metaserver's loop reads there never waits on it.
"""
from __future__ import annotations

import logging
import threading
import time

import grpc
from aetcd import rpc

from .store import WouldWait

log = logging.getLogger("pfs.metaserver")

#: Keys per page of a range scan.
PAGE = 1000
#: How long a call to etcd may take before another member is tried.
CALL_SECONDS = 5.0


class EtcdUnavailable(OSError):
    """No etcd member answers."""


def prefix_end(prefix: bytes) -> bytes:
    """The end of the range of keys starting with `prefix`."""
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
        self._local = threading.local()  # (at_once)
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

    def at_once(self, fn, *args):
        """fn(*args), in which a call to etcd raises WouldWait instead (on this thread)."""
        self._local.at_once = True
        try:
            return fn(*args)
        finally:
            self._local.at_once = False

    def call(self, fn):
        """fn(self), on the next member when one does not answer (each twice at most): for
        reads, which may be repeated."""
        if getattr(self._local, "at_once", False):
            raise WouldWait
        for attempt in range(len(self.endpoints) * 2):
            turn = self._turn
            try:
                return fn(self)
            except grpc.RpcError as e:
                if not unanswered(e):
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

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The values of those of `keys` that exist: one read-only transaction."""
        request = rpc.TxnRequest(success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))
                                          for key in keys])
        reply = self.call(lambda c: c.kv.Txn(request, timeout=CALL_SECONDS))
        return {kv.key: kv.value for response in reply.responses
                for kv in response.response_range.kvs}

    def scan(self, prefix: bytes, start: bytes | None = None, limit: int = -1):
        """The (key, value) pairs under `prefix` from `start` on, by key, in pages."""
        key, end, taken = start or prefix, prefix_end(prefix), 0
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


def unanswered(e: grpc.RpcError) -> bool:
    """Whether the member did not answer (another one may)."""
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def put(key: bytes, value: bytes | str, lease: int = 0) -> rpc.RequestOp:
    if isinstance(value, str):
        value = value.encode()
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes, end: bytes = b"") -> rpc.RequestOp:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))
