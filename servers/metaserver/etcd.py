"""The etcd engine of the metadata store (store.py): the namespace and the rest in an etcd v3
cluster, so that it outlives any one machine and several metaservers can share it (one active,
election.py).

Invariant: every write is one transaction guarded by the writer's epoch, so only the active
metaserver changes anything. Its parts: the client (etcdclient.py), the key layout and node
codec (etcdkeys.py), what the active knows without reading (etcdcache.py), guarded commits
(etcdcommits.py), the namespace (etcdnamespace.py), the other records (etcdrecords.py), changes
in chunks (etcdintents.py).
"""
from __future__ import annotations

from .etcdclient import EtcdUnavailable
from .etcdcommits import Deposed
from .etcdintents import ChunkedChanges

__all__ = ["Deposed", "EtcdStore", "EtcdUnavailable"]


class EtcdStore(ChunkedChanges):
    def __init__(self, endpoints: list[str], prefix: str = "pfs/", ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        """`endpoints`: the etcd members (HOST:PORT); `prefix`: this cluster's keys; the
        files: TLS to etcd (--etcd-ca, --etcd-cert, --etcd-key)."""
        super().__init__(endpoints, prefix, ca_file, cert_file, key_file)
        self._make_root()
