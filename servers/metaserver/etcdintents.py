"""The etcd engine's changes too big for one transaction (etcd's --max-txn-ops, 128 by
default): marking every copy a lost fileserver held, and removing a member.

Invariant: they go in chunks that are each idempotent, so a crash midway is finished by doing
the change again; marking a lost fileserver's copies works behind a durable intent
(`i/lost/<server>`, holding how far it got) that the next active metaserver finishes (resume).
"""
from __future__ import annotations

import dataclasses
import json
import logging

from pfs.protocol.ranges import INFINITY

from .etcdclient import delete, put
from .etcdcommits import TXN_OPS
from .etcdkeys import decode_node, id_after, lost_intent_key, member_key, node_key, ranges_key
from .etcdnamespace import EtcdNamespace
from .etcdrecords import EtcdRecords
from .namespace import Node

log = logging.getLogger("pfs.metaserver")


class ChunkedChanges(EtcdNamespace, EtcdRecords):
    def _files_after(self, after: str):
        """The files whose node keys sort after `after` (all: ""), by id."""
        for key, value in self._scan("n/", after + "\0" if after else None):
            node, _, _ = decode_node(id_after(key, "n/"), value)
            if not node.is_dir:
                yield node

    def files_on(self, index: int) -> list[Node]:
        return [node for node in self._files_after("") if index in node.servers]

    def mark_lost(self, server: int) -> int:
        with self._write_lock:
            self._commit([put(self.key(lost_intent_key(server)), "")])
            return self._finish_lost(server, "")

    def _finish_lost(self, server: int, after: str) -> int:
        """Marks the lost fileserver's copies from node key `after` on, a chunk a commit, the
        intent's cursor moving with each; then drops the intent."""
        intent, marked, ops = self.key(lost_intent_key(server)), 0, []
        for node in self._files_after(after):
            if node.replicas > 1 and server in node.servers:
                ops += [put(self.key(ranges_key("m", node.node_id, server)),
                            json.dumps([[0, INFINITY]])),
                        delete(self.key(ranges_key("a", node.node_id, server)))]
                marked += 1
            if len(ops) >= TXN_OPS - 2:
                self._commit(ops + [put(intent, node_key(node.node_id))])
                ops = []
        self._commit(ops + [delete(intent)])
        return marked

    def resume(self) -> None:
        with self._write_lock:
            for key, cursor in self._scan("i/lost/"):
                server = id_after(key, "i/lost/")
                log.warning("finishing what a metaserver left half done: marking fileserver "
                            "%d's copies as lost", server)
                self._finish_lost(server, cursor.decode())

    def remove_member(self, index: int, moved: dict[int, int]) -> None:
        """(In chunks, each idempotent: a crash midway leaves some copies moved, and the
        removal given again moves the rest.)"""
        with self._write_lock:
            ops = []
            for file_id, to in moved.items():
                node, parent, name = self._node(file_id)
                servers = tuple(to if s == index else s for s in node.servers)
                ops.append(self._put_node(dataclasses.replace(node, servers=servers),
                                          parent, name))
                if node.replicas > 1:
                    ops.append(put(self.key(ranges_key("m", file_id, to)),
                                   json.dumps([[0, INFINITY]])))
            for kind, records in (("m", self.missed()), ("a", self.apart())):
                ops += [delete(self.key(ranges_key(kind, file_id, server)))
                        for file_id, server, _ in records if server == index]
            for key, _, servers in self._pending():
                kept = [s for s in servers if s != index]
                if kept != list(servers):
                    ops.append(put(self.key(key), ",".join(map(str, kept))) if kept
                               else delete(self.key(key)))
            self._commit_chunks(ops)
            self._commit([delete(self.key(member_key(index)))],
                         {"next_fileserver": max(index + 1, self._counter("next_fileserver"))})
