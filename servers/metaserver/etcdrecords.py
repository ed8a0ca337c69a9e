"""The etcd engine's records beside the namespace: objects still to delete (`d/`), the
cluster's members (`f/`), client sessions (`s/`) and their files (`w/`), and the ranges copies
missed (`m/`) or hold apart (`a/`).

Invariant: each record is its own key, so a change puts or deletes keys without reading them
first, and a change of many keys goes in idempotent chunks (a crash midway is redone whole).
"""
from __future__ import annotations

import errno
import json
import time

from aetcd import rpc

from pfs.protocol.paths import brief

from .etcdclient import delete, put
from .etcdcommits import GuardedStore
from .etcdkeys import (
    decode_servers,
    id_after,
    member_key,
    pending_key,
    ranges_key,
    session_file_key,
    session_key,
)
from .namespace import NamespaceError

Ranges = list[tuple[int, int, list[tuple[int, int]]]]


class EtcdRecords(GuardedStore):
    # --- objects still to delete ------------------------------------------------------------
    def _pending(self):
        """(key, file id, fileservers) of each record of objects still to delete."""
        for key, value in self._scan("d/"):
            yield key, int(key[2:18], 16), decode_servers(value)

    def pending_deletes(self) -> list[tuple[int, tuple[int, ...]]]:
        merged: dict[int, tuple[int, ...]] = {}
        for _, file_id, servers in self._pending():
            merged[file_id] = merged.get(file_id, ()) + servers
        return list(merged.items())

    def delete_done(self, file_ids: list[int]) -> None:
        with self._write_lock:
            self._commit_chunks([self._delete_under(pending_key(f)) for f in file_ids])

    # --- members ----------------------------------------------------------------------------
    def _members(self) -> dict[int, dict]:
        return {id_after(key, "f/"): json.loads(value) for key, value in self._scan("f/")}

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
            self._commit([put(self.key(member_key(idx)), json.dumps(member))])
            return idx, lost

    def members(self) -> dict[int, tuple[str, float]]:
        return {i: (m["name"], m["lost_at"] or 0.0) for i, m in self._members().items()}

    def fileservers(self) -> dict[int, str]:
        return {i: m["address"] for i, m in self._members().items()}

    # --- sessions ---------------------------------------------------------------------------
    def new_session(self, key_hash: bytes) -> int:
        with self._write_lock:
            client_id = self._counter("client_id") + 1
            self._commit([put(self.key(session_key(client_id)), key_hash)],
                         {"client_id": client_id})
            return client_id

    def next_client_id(self) -> int:
        return self._counter("client_id") + 1

    def forget_session(self, client_id: int) -> None:
        with self._write_lock:
            self._commit([delete(self.key(session_key(client_id)))])

    def recorded_sessions(self) -> dict[int, bytes]:
        return {id_after(key, "s/"): value for key, value in self._scan("s/")}

    def add_session_file(self, table: str, client_id: int, file_id: int) -> None:
        with self._write_lock:
            self._commit([put(self.key(session_file_key(table, client_id, file_id)), b"")])

    def session_files(self, table: str, client_id: int) -> list[int]:
        prefix = session_file_key(table, client_id)
        return [id_after(key, prefix) for key, _ in self._scan(prefix)]

    def session_file_clients(self, table: str) -> set[int]:
        prefix = session_file_key(table)
        return {int(key[len(prefix):].split("/")[0], 16) for key, _ in self._scan(prefix)}

    def _drop_session_files(self, table: str, client_id: int,
                            file_ids: list[int] | None) -> list[rpc.RequestOp]:
        if file_ids is None:
            return [self._delete_under(session_file_key(table, client_id))]
        return [delete(self.key(session_file_key(table, client_id, f))) for f in file_ids]

    def drop_session_files(self, table: str, client_id: int,
                           file_ids: list[int] | None = None) -> None:
        with self._write_lock:
            self._commit_chunks(self._drop_session_files(table, client_id, file_ids))

    # --- missed ranges ----------------------------------------------------------------------
    def missed(self, file_id: int | None = None, limit: int = -1) -> Ranges:
        return self._copy_ranges("m", file_id, limit)

    def apart(self, file_id: int | None = None) -> Ranges:
        return self._copy_ranges("a", file_id)

    def _copy_ranges(self, kind: str, file_id: int | None, limit: int = -1) -> Ranges:
        """(file id, fileserver, its ranges) under `m/` (missed) or `a/` (apart)."""
        prefix = f"{kind}/" if file_id is None else ranges_key(kind, file_id)
        # (A file's are known once read: an open asks for them each time.)
        group = self._group(prefix) if file_id is not None and limit < 0 else None
        skip = len(self.prefix)
        records = self._scan(prefix, limit=limit) if group is None else \
            [(key[skip:].decode(), value) for key, value in sorted(group.items())]
        found = []
        for key, value in records:
            f, server = key[2:].split("/")
            found.append((int(f, 16), int(server, 16), [tuple(r) for r in json.loads(value)]))
        return found

    def set_missed(self, changes: dict[tuple[int, int], list[tuple[int, int]]],
                   forget_writer: int | None = None,
                   apart: dict[tuple[int, int], list[tuple[int, int]]] | None = None) -> None:
        with self._write_lock:
            ops = [put(self.key(ranges_key(kind, f, s)), json.dumps(ranges)) if ranges
                   else delete(self.key(ranges_key(kind, f, s)))
                   for kind, ranges_of in (("m", changes), ("a", apart or {}))
                   for (f, s), ranges in ranges_of.items()]
            if forget_writer is not None:
                ops += self._drop_session_files("writing", forget_writer, None)
            self._commit_chunks(ops)  # (the writer forgotten last: a crash before is redone)
