"""Where the etcd engine keeps what (the keys below a cluster prefix) and how a node is encoded.

Invariant: ids are fixed-width hex, so keys sort as their numbers do and a range scan of a
prefix is a listing in order; a value stays a few hundred bytes, far below etcd's limit.

Keys, as JuiceFS's tkv layout:

    n/<id>                      a node: [is_dir, size, ctime, mtime, block_size, stripe_blocks,
                                servers, replicas, parent, name, mode, uid, gid, atime, target,
                                special, rdev, subdirs] (parent null: an orphan; the last
                                eight may be missing: unset; a directory's subdirs missing:
                                written before link counts, counted by etcdlookups.py)
    e/<parent>/<name>           an entry: "<id>,<is_dir>" (one per component of a lookup)
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
    txn                         the id of the last write (etcdcommits.py)
"""
from __future__ import annotations

import json

from .namespace import Node
from .store import SESSION_FILE_TABLES


def hex_id(n: int, width: int = 16) -> str:
    return format(n, f"0{width}x")


def node_key(node_id: int) -> str:
    return f"n/{hex_id(node_id)}"


def entry_key(parent: int, name: str = "") -> str:
    """An entry's key (name ""): the prefix of the directory's entries."""
    return f"e/{hex_id(parent)}/{name}"


def entry_value(node: Node) -> str:
    return f"{hex_id(node.node_id)},{int(node.is_dir)}"


def orphan_key(node_id: int) -> str:
    return f"o/{hex_id(node_id)}"


def counter_key(name: str) -> str:
    return f"c/{name}"


def pending_key(file_id: int, server: int | None = None) -> str:
    """Objects still to delete: a removed file's, or one dropped copy's."""
    return f"d/{hex_id(file_id)}" + ("" if server is None else f"/{hex_id(server, 8)}")


def member_key(index: int) -> str:
    return f"f/{hex_id(index, 8)}"


def session_key(client_id: int) -> str:
    return f"s/{hex_id(client_id)}"


def ranges_key(kind: str, file_id: int, server: int | None = None) -> str:
    """A copy's ranges, `kind` "m" (missed) or "a" (held apart); server None: the file's."""
    return f"{kind}/{hex_id(file_id)}/" + ("" if server is None else hex_id(server, 8))


def layout_key(dir_id: int) -> str:
    return f"l/{hex_id(dir_id)}"


def lost_intent_key(server: int) -> str:
    return f"i/lost/{hex_id(server, 8)}"


def session_file_key(table: str, client_id: int | None = None,
                     file_id: int | None = None) -> str:
    """The key of a session file, or the prefix of a session's, or of a table's."""
    if table not in SESSION_FILE_TABLES:
        raise ValueError(f"no session-file table {table!r}")
    key = f"w/{table}/"
    if client_id is not None:
        key += f"{hex_id(client_id)}/" + ("" if file_id is None else hex_id(file_id))
    return key


def id_after(key: str, prefix: str) -> int:
    """The id a key holds after its prefix."""
    return int(key[len(prefix):], 16)


def encode_node(node: Node, parent: int | None, name: str) -> str:
    """(parent None: an orphan.)"""
    fields = [int(node.is_dir), node.size, node.ctime, node.mtime, node.block_size,
              node.stripe_blocks, list(node.servers), node.replicas, parent, name]
    attributes = [node.mode, node.uid, node.gid, node.atime, node.target, node.special, node.rdev,
                  node.subdirs if node.is_dir else None]
    while attributes and attributes[-1] is None:  # (most nodes have none set: kept short)
        attributes.pop()
    return json.dumps(fields + attributes, separators=(",", ":"))


def decode_node(node_id: int, value: bytes) -> tuple[Node, int | None, str]:
    """(A directory's subdirs None: not stored, from before link counts.)"""
    (is_dir, size, ctime, mtime, block_size, stripe_blocks, servers, replicas, parent, name,
     *attributes) = json.loads(value)
    attributes += [None] * (7 - len(attributes))
    if len(attributes) == 7:
        attributes.append(None if is_dir else 0)
    return (Node(node_id, bool(is_dir), size, ctime, mtime, block_size, stripe_blocks,
                 tuple(servers), replicas, *attributes), parent, name)


def decode_servers(value: bytes) -> tuple[int, ...]:
    return tuple(int(s) for s in value.decode().split(",")) if value else ()
