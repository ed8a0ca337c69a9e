"""The metaserver's metadata store (store.py), driven directly, one conformance suite for both
engines (SQLite and etcd): POSIX's answers for every kind of mistake, renames that move whole
subtrees in one commit, ids that never change, durability across reopening, sessions, members,
missed and apart ranges (and copies.py's record over them), replica changes, layouts, POSIX
attributes, symlinks, directory times, orphans and session files, a lost fileserver's copies marked in chunks behind an intent (etcd), the migration of flat SQLite data directories, and a model-based property test against
a plain dictionary of paths."""
from __future__ import annotations

import errno
import json
import shutil
import sqlite3
import stat
import subprocess
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfs.protocol.ranges import INFINITY
from pfs_servers.etcdlocal import LocalEtcd, find_etcd
from pfs_servers.metaserver.copies import Copies
from pfs_servers.metaserver.namespace import ROOT, Namespace, NamespaceError
from pfs_servers.metaserver.store import MetaStore, NewAttributes

ENGINES = ["sqlite", "etcd"]


@pytest.fixture(scope="module")
def local_etcd(tmp_path_factory):
    """One etcd member for the module (each store gets a key prefix of its own)."""
    if find_etcd() is None:
        pytest.skip("no etcd binary: run install-system-packages.sh as root (it unpacks "
                    "Debian's etcd-server into /opt/pfs-etcd), or set PFS_ETCD")
    etcd = LocalEtcd(tmp_path_factory.mktemp("etcd"), members=1).start()
    yield etcd
    etcd.stop()


def new_store(engine: str, request, where, prefix: str | None = None) -> MetaStore:
    """An empty store of the engine (or the one at `where` / `prefix` again)."""
    if engine == "sqlite":
        return Namespace(where / "meta.sqlite3")
    from pfs_servers.metaserver.etcd import EtcdStore
    return EtcdStore(request.getfixturevalue("local_etcd").endpoints,
                     prefix=prefix or f"t{uuid.uuid4().hex}/")


@pytest.fixture(params=ENGINES)
def ns(request, tmp_path):
    store = new_store(request.param, request, tmp_path)
    yield store
    store.close()


def p(path: str) -> tuple[str, ...]:
    return tuple(path.split("/")) if path else ()


def fails(code: int, call, *args) -> None:
    with pytest.raises(NamespaceError) as e:
        call(*args)
    assert e.value.errno == code, e.value


def names(ns: Namespace, path: str) -> list[str]:
    return [name for name, _ in ns.listdir(p(path))]


def test_tree_basics_and_mistakes(ns):
    ns.mkdir(p("a"))
    ns.mkdir(p("a/b"))
    f = ns.create(p("a/b/f"), 512, 2, [0, 1])
    assert ns.lookup(p("a/b/f")) == f and not f.is_dir and f.servers == (0, 1)
    assert names(ns, "") == ["a"] and names(ns, "a/b") == ["f"]
    assert ns.path_of(f.node_id) == "a/b/f" and ns.path_of(ROOT) == ""
    fails(errno.EEXIST, ns.mkdir, p("a"))
    fails(errno.EEXIST, ns.create, p("a/b/f"), 512, 2, [0])
    fails(errno.EEXIST, ns.mkdir, ())                       # the root
    fails(errno.ENOENT, ns.create, p("x/y"), 512, 2, [0])  # parent missing
    fails(errno.ENOTDIR, ns.create, p("a/b/f/g"), 512, 2, [0])
    fails(errno.ENOTDIR, ns.lookup, p("a/b/f/g"))
    fails(errno.ENOTDIR, ns.listdir, p("a/b/f"))
    fails(errno.EISDIR, ns.unlink, p("a"))
    fails(errno.ENOTEMPTY, ns.rmdir, p("a"))
    fails(errno.ENOTDIR, ns.rmdir, p("a/b/f"))
    fails(errno.EBUSY, ns.rmdir, ())
    assert ns.unlink(p("a/b/f")).node_id == f.node_id
    assert ns.pending_deletes() == [(f.node_id, (0, 1))]  # in the same commit
    ns.rmdir(p("a/b"))
    fails(errno.ENOENT, ns.lookup, p("a/b"))
    assert ns.count_files() == 0


def test_rename_moves_subtrees_and_keeps_ids(ns):
    ns.mkdir(p("a"))
    ns.mkdir(p("a/b"))
    f = ns.create(p("a/b/f"), 512, 2, [0])
    ns.mkdir(p("z"))
    assert ns.rename(p("a"), p("z/a2")) is None
    assert ns.lookup(p("z/a2/b/f")).node_id == f.node_id
    assert ns.path_of(f.node_id) == "z/a2/b/f"
    fails(errno.ENOENT, ns.lookup, p("a"))
    assert ns.rename(p("z/a2/b/f"), p("g")) is None  # a file across directories
    assert ns.lookup(p("g")).node_id == f.node_id


def test_rename_replaces_as_posix_does(ns):
    old = ns.create(p("old"), 512, 2, [0])
    new = ns.create(p("new"), 512, 2, [1])
    assert ns.rename(p("old"), p("new")).node_id == new.node_id  # replaced, objects to delete
    assert ns.lookup(p("new")).node_id == old.node_id
    assert ns.pending_deletes() == [(new.node_id, (1,))]
    assert ns.rename(p("new"), p("new")) is None                 # the same file: nothing
    ns.mkdir(p("d"))
    ns.mkdir(p("d/sub"))
    ns.mkdir(p("empty"))
    ns.mkdir(p("full"))
    ns.create(p("full/x"), 512, 2, [0])
    fails(errno.EINVAL, ns.rename, p("d"), p("d/sub/d"))          # into its own subtree
    fails(errno.EISDIR, ns.rename, p("new"), p("d"))              # a file onto a directory
    fails(errno.ENOTDIR, ns.rename, p("d"), p("new"))             # a directory onto a file
    fails(errno.ENOTEMPTY, ns.rename, p("d"), p("full"))
    fails(errno.ENOENT, ns.rename, p("missing"), p("m2"))
    fails(errno.ENOENT, ns.rename, p("new"), p("nowhere/new"))
    fails(errno.ENOTDIR, ns.rename, p("new"), p("new/inside"))
    fails(errno.EBUSY, ns.rename, (), p("root2"))
    assert ns.rename(p("d"), p("empty")).is_dir                   # an empty directory goes
    assert names(ns, "") == ["empty", "full", "new"] and names(ns, "empty") == ["sub"]


@pytest.mark.parametrize("engine", ENGINES)
def test_committed_changes_survive_reopening(engine, request, tmp_path):
    prefix = f"t{uuid.uuid4().hex}/"
    ns = new_store(engine, request, tmp_path, prefix)
    ns.mkdir(p("d"))
    f = ns.create(p("d/f"), 512, 2, [0, 1, 2])
    ns.record_size(f.node_id, 1000, touch=True)
    ns.record_size(f.node_id, 10, touch=False)               # sizes only grow...
    ns.set_attributes(p("d/f"), mode=0o604, uid=7, gid=8, atime=3.0)
    ns.symlink(p("d/l"), "f")
    g = ns.create(p("d/o"), 512, 2, [0])
    ns.unlink(p("d/o"), orphan=True)
    ns.close()
    ns = new_store(engine, request, tmp_path, prefix)
    assert ns.lookup(p("d/f")).size == 1000
    kept = ns.lookup(p("d/f"))
    assert (kept.mode, kept.uid, kept.gid, kept.atime) == (0o604, 7, 8, 3.0)
    assert ns.lookup(p("d/l")).target == "f" and ns.orphans() == [g.node_id]
    ns.record_size(f.node_id, 10, touch=False, exact=True)   # ...except by a truncate
    assert ns.lookup(p("d/f")).size == 10
    assert ns.create(p("d/g"), 512, 2, [0]).node_id > f.node_id  # ids are never reused
    ns.close()


def subdirs(ns, *paths: str) -> list[int]:
    return [ns.lookup(p(path)).subdirs for path in paths]


def test_link_counts_follow_subdirectories(ns):
    """A directory's subdirectories (its link count less 2, as POSIX's) move with mkdir, rmdir
    and renames across parents, the root's too; files do not count."""
    ns.mkdir(p("a"))
    ns.mkdir(p("b"))
    ns.mkdir(p("a/x"))
    ns.mkdir(p("a/y"))
    ns.create(p("a/f"), 512, 2, [0])
    assert subdirs(ns, "", "a", "b", "a/x") == [2, 2, 0, 0]
    ns.rename(p("a/x"), p("b/x"))                     # across parents
    assert subdirs(ns, "", "a", "b") == [2, 1, 1]
    ns.rename(p("b/x"), p("b/z"))                     # within one
    ns.rename(p("a/f"), p("b/f"))                     # a file
    assert subdirs(ns, "a", "b") == [1, 1]
    ns.rename(p("a/y"), p("b/z"))                     # over an empty directory
    assert subdirs(ns, "a", "b") == [0, 1]
    ns.rename(p("b"), p("a/b"))                       # a subtree, from the root
    assert subdirs(ns, "", "a", "a/b") == [1, 1, 1]
    ns.rmdir(p("a/b/z"))
    ns.unlink(p("a/b/f"))
    ns.rmdir(p("a/b"))
    assert subdirs(ns, "", "a") == [1, 0]
    assert [node.subdirs for _, node in ns.listdir(())] == [0]


@pytest.mark.parametrize("engine", ENGINES)
def test_link_counts_of_data_from_before_them(engine, request, tmp_path):
    """Directories stored before link counts were are counted: a SQLite database once when
    opened, an etcd node when read, until its next change stores the count."""
    prefix = f"t{uuid.uuid4().hex}/"
    ns = new_store(engine, request, tmp_path, prefix)
    for path in ("d", "d/s", "d/t", "d/s/u", "e"):
        ns.mkdir(p(path))
    ns.create(p("d/f"), 512, 2, [0])
    ns.close()
    if engine == "sqlite":
        db = sqlite3.connect(tmp_path / "meta.sqlite3")
        db.execute("ALTER TABLE nodes DROP COLUMN subdirs")
        db.commit()
        db.close()
    else:
        from pfs_servers.metaserver.etcd import EtcdStore
        from pfs_servers.metaserver.etcdclient import put
        old = EtcdStore(request.getfixturevalue("local_etcd").endpoints, prefix=prefix)
        old._commit([put(key, json.dumps(json.loads(value)[:10])) for key, value in
                     old.etcd.scan(old.key("n/"))])   # as written before: no subdirs
        old.close()
    ns = new_store(engine, request, tmp_path, prefix)
    assert subdirs(ns, "", "d", "d/s", "d/t", "e") == [2, 2, 1, 0, 0]
    ns.rename(p("d/t"), p("e/t"))
    ns.mkdir(p("d/s/v"))
    assert subdirs(ns, "", "d", "d/s", "e") == [2, 1, 2, 1]
    assert [node.subdirs for _, node in ns.listdir(p("d"))] == [0, 2]
    ns.close()


def test_flat_data_directories_are_migrated(tmp_path):
    """A metadata database from before directories (one `files` table) opens with every file
    in the root, under the same ids (its objects on the fileservers are named by them)."""
    path = tmp_path / "meta.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL, ctime REAL NOT NULL, mtime REAL NOT NULL,
            block_size INTEGER NOT NULL, stripe_blocks INTEGER NOT NULL, servers TEXT NOT NULL);
        INSERT INTO files VALUES (3, 'results', 4096, 1.0, 2.0, 512, 2, '0,1');
        INSERT INTO files VALUES (7, 'notes', 10, 1.0, 2.0, 512, 2, '2');""")
    db.commit()
    db.close()
    ns = Namespace(path)
    assert names(ns, "") == ["notes", "results"] and ns.count_files() == 2
    results = ns.lookup(p("results"))
    assert (results.node_id, results.size, results.servers) == (3, 4096, (0, 1))
    assert ns.create(p("new"), 512, 2, [0]).node_id > 7
    ns.close()


# --- a model-based property test --------------------------------------------------------------
NAMES = st.sampled_from(["a", "b", "c"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)
OPS = st.lists(st.one_of(
    st.tuples(st.just("mkdir"), PATHS), st.tuples(st.just("create"), PATHS),
    st.tuples(st.just("unlink"), PATHS), st.tuples(st.just("rmdir"), PATHS),
    st.tuples(st.just("rename"), PATHS, PATHS)), max_size=40)


class Model:
    """The tree as a dict of paths to "dir" or "file": what POSIX says each call does."""

    def __init__(self) -> None:
        self.kind: dict[tuple[str, ...], str] = {(): "dir"}

    def children(self, path):
        return [q for q in self.kind if len(q) == len(path) + 1 and q[:len(path)] == path]

    def check_parent(self, path) -> int | None:
        for depth in range(1, len(path)):
            kind = self.kind.get(path[:depth])
            if kind is None:
                return errno.ENOENT
            if kind == "file":
                return errno.ENOTDIR
        return None

    def apply(self, op, *args) -> int | None:
        """The errno the call fails with (None: it succeeds), applying it if it succeeds."""
        path = args[0]
        if op in ("mkdir", "create"):
            problem = self.check_parent(path)
            if problem:
                return problem
            if path in self.kind:
                return errno.EEXIST
            self.kind[path] = "dir" if op == "mkdir" else "file"
            return None
        if op in ("unlink", "rmdir"):
            problem = self.check_parent(path) or (None if path in self.kind else errno.ENOENT)
            if problem:
                return problem
            if op == "unlink" and self.kind[path] == "dir":
                return errno.EISDIR
            if op == "rmdir" and self.kind[path] == "file":
                return errno.ENOTDIR
            if self.children(path):
                return errno.ENOTEMPTY
            del self.kind[path]
            return None
        new = args[1]
        problem = self.check_parent(path) or (None if path in self.kind else errno.ENOENT)
        problem = problem or self.check_parent(new)
        if problem:
            return problem
        moving = self.kind[path]
        if moving == "dir" and new[:len(path)] == path:
            return None if new == path else errno.EINVAL
        if new == path:
            return None
        if new in self.kind:
            if moving == "dir" and self.kind[new] == "file":
                return errno.ENOTDIR
            if moving == "file" and self.kind[new] == "dir":
                return errno.EISDIR
            if self.children(new):
                return errno.ENOTEMPTY
            del self.kind[new]
        moved = {q: k for q, k in self.kind.items() if q[:len(path)] == path}
        for q in moved:
            del self.kind[q]
        for q, k in moved.items():
            self.kind[new + q[len(path):]] = k
        return None


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=100, deadline=None)
@given(ops=OPS)
def test_namespace_agrees_with_a_model(engine, request, tmp_path_factory, ops):
    ns = new_store(engine, request, tmp_path_factory.mktemp("model"))
    model = Model()
    calls = {"mkdir": ns.mkdir, "create": lambda path: ns.create(path, 512, 2, [0]),
             "unlink": ns.unlink, "rmdir": ns.rmdir, "rename": ns.rename}
    try:
        for op, *args in ops:
            expected = model.apply(op, *args)
            try:
                calls[op](*args)
                got = None
            except NamespaceError as e:
                got = e.errno
            assert got == expected, (op, args, got, expected)
        assert ns.count_files() == sum(kind == "file" for kind in model.kind.values())
        for path, kind in model.kind.items():
            node = ns.lookup(path)
            assert node.is_dir == (kind == "dir")
            if kind == "dir":
                assert sorted(names(ns, "/".join(path))) == sorted(
                    q[-1] for q in model.children(path))
                assert node.subdirs == sum(model.kind[q] == "dir" for q in model.children(path))
    finally:
        ns.close()


def test_attributes_and_symlinks_are_kept(ns, request, tmp_path):
    f = ns.create(p("f"), 512, 2, [0, 1], attributes=NewAttributes(0o600, 1000, 100))
    assert (f.mode, f.uid, f.gid, f.atime, f.target) == (0o600, 1000, 100, None, None)
    d = ns.mkdir(p("d"), NewAttributes(mode=0o700))
    assert d.mode == 0o700 and d.uid is None
    link = ns.symlink(p("d/l"), "../f", NewAttributes(uid=5))
    assert link.is_symlink and not link.is_dir and link.servers == () and link.uid == 5
    assert ns.lookup(p("d/l")).target == "../f" and ns.count_files() == 2
    changed = ns.set_attributes(p("f"), mode=0o640, atime=1.5, mtime=2.5)
    assert (changed.mode, changed.uid, changed.atime, changed.mtime) == (0o640, 1000, 1.5, 2.5)
    assert changed.ctime >= f.ctime and ns.lookup(p("f")) == changed
    assert [n.mode for _, n in ns.listdir(())] == [0o700, 0o640]
    ns.unlink(p("d/l"))
    assert ns.pending_deletes() == []             # a symlink has no objects
    assert ns.count_files() == 1


def test_special_files_are_names_and_attributes_without_data(ns):
    fifo = ns.mknod(p("q"), stat.S_IFIFO, None, NewAttributes(mode=0o640, uid=7))
    device = ns.mknod(p("null"), stat.S_IFCHR, 0x103)
    assert (fifo.special, fifo.rdev, fifo.mode, fifo.uid) == (stat.S_IFIFO, None, 0o640, 7)
    assert not fifo.has_data and fifo.servers == () and not fifo.is_dir
    assert ns.lookup(p("null")) == device and (device.special, device.rdev) == (stat.S_IFCHR,
                                                                                0x103)
    assert ns.set_attributes(p("q"), mode=0o600).special == stat.S_IFIFO
    ns.rename(p("q"), p("q2"))
    assert ns.lookup(p("q2")).special == stat.S_IFIFO
    fails(errno.EEXIST, ns.mknod, p("null"), stat.S_IFIFO, None)
    ns.unlink(p("q2"))
    ns.unlink(p("null"))
    assert ns.pending_deletes() == [] and names(ns, "") == []


def test_a_directory_s_times_move_with_its_entries(ns):
    ns.mkdir(p("a"))
    ns.mkdir(p("b"))

    def times(path: str) -> tuple[float, float]:
        node = ns.lookup(p(path))
        return node.mtime, node.ctime
    for change in (lambda: ns.create(p("a/f"), 512, 2, [0]), lambda: ns.mkdir(p("a/d")),
                   lambda: ns.rename(p("a/f"), p("a/g")), lambda: ns.unlink(p("a/g")),
                   lambda: ns.rmdir(p("a/d"))):
        before = times("a")
        ns.set_attributes(p("a"), mtime=1.0)
        change()
        assert times("a")[0] > 1.0 and times("a")[1] >= before[1]
    ns.create(p("a/f"), 512, 2, [0])
    ns.set_attributes(p("a"), mtime=1.0)
    ns.set_attributes(p("b"), mtime=1.0)
    ns.rename(p("a/f"), p("b/f"))                 # both directories
    assert times("a")[0] > 1.0 and times("b")[0] > 1.0
    f = ns.lookup(p("b/f"))
    ns.set_attributes(p("b/f"), mtime=1.0)
    ns.record_size(f.node_id, 10, touch=True)     # a write moves mtime and ctime
    assert times("b/f")[0] > 1.0 and times("b/f")[1] >= times("b/f")[0]


def test_orphans_keep_their_file_until_reclaimed(ns):
    ns.mkdir(p("d"))
    f = ns.create(p("d/f"), 512, 2, [0, 1])
    ns.unlink(p("d/f"), orphan=True)
    fails(errno.ENOENT, ns.lookup, p("d/f"))
    assert names(ns, "d") == [] and ns.get(f.node_id).servers == (0, 1)
    assert ns.path_of(f.node_id) == "" and ns.orphans() == [f.node_id]
    assert ns.pending_deletes() == [] and ns.count_files() == 1
    changed = ns.set_attributes(f.node_id, mode=0o600, uid=3, mtime=4.0)  # (fchmod: by id)
    assert (changed.mode, changed.uid, changed.mtime) == (0o600, 3, 4.0)
    assert ns.get(f.node_id) == changed and ns.orphans() == [f.node_id]
    ns.rmdir(p("d"))                              # its directory may go meanwhile
    g = ns.create(p("g"), 512, 2, [1])
    h = ns.create(p("h"), 512, 2, [0])
    assert ns.rename(p("h"), p("g"), orphan_replaced=True) == g
    assert sorted(ns.orphans()) == [f.node_id, g.node_id] and ns.count_files() == 3
    assert ns.lookup(p("g")).node_id == h.node_id
    assert ns.reclaim_orphan(f.node_id).node_id == f.node_id
    assert ns.reclaim_orphan(f.node_id) is None   # (once)
    fails(errno.ENOENT, ns.get, f.node_id)
    fails(errno.ENOENT, ns.set_attributes, f.node_id, 0o644)
    assert ns.pending_deletes() == [(f.node_id, (0, 1))] and ns.count_files() == 2
    assert ns.reclaim_orphan(h.node_id) is None   # no orphan
    assert ns.orphans() == [g.node_id]


# --- the rest of what the store keeps -------------------------------------------------------
def test_sessions_members_and_deletes(ns):
    first = ns.new_session(b"hash-1")
    assert ns.next_client_id() == first + 1
    second = ns.new_session(b"hash-2")
    assert ns.recorded_sessions() == {first: b"hash-1", second: b"hash-2"}
    ns.forget_session(first)
    assert ns.recorded_sessions() == {second: b"hash-2"}
    assert ns.register_fileserver("fs0", "u0", "h:1") == (0, False)
    assert ns.register_fileserver("fs1", "u1", "h:2") == (1, False)
    assert ns.register_fileserver("fs0", "u0b", "h:3") == (0, True)   # a new data directory
    fails(errno.EEXIST, ns.register_fileserver, "fs2", "u1", "h:4")   # fs1's directory
    assert ns.fileservers() == {0: "h:3", 1: "h:2"}
    assert ns.members()[0][0] == "fs0" and ns.members()[0][1] > 0 and ns.members()[1][1] == 0
    f = ns.create(p("f"), 512, 2, [0, 1], replicas=2)
    g = ns.create(p("g"), 512, 2, [1])
    assert [n.node_id for n in ns.files_on(0)] == [f.node_id]
    ns.unlink(p("g"))
    assert ns.pending_deletes() == [(g.node_id, (1,))]
    ns.delete_done([g.node_id])
    assert ns.pending_deletes() == []
    ns.register_fileserver("fs2", "u2", "h:5")
    ns.remove_member(0, {f.node_id: 2})           # fs0 goes; its copy of f moves to fs2
    assert ns.get(f.node_id).servers == (2, 1) and 0 not in ns.fileservers()
    assert ns.missed(f.node_id) == [(f.node_id, 2, [(0, INFINITY)])]
    assert ns.register_fileserver("fs3", "u3", "h:6")[0] == 3       # index 0 never again


def test_missed_ranges_and_session_files(ns):
    f = ns.create(p("f"), 512, 2, [0, 1], replicas=2)
    ns.add_session_file("writing", 7, f.node_id)
    ns.add_session_file("temporaries", 7, f.node_id)
    ns.add_session_file("writing", 8, f.node_id)
    assert ns.session_files("writing", 7) == [f.node_id]
    assert ns.session_file_clients("writing") == {7, 8}
    ns.drop_session_files("temporaries", 7, [f.node_id])
    assert ns.session_file_clients("temporaries") == set()
    ns.set_missed({(f.node_id, 1): [(0, 10), (20, 30)], (f.node_id, 0): [(5, 6)]},
                  forget_writer=7)
    assert ns.session_file_clients("writing") == {8}
    assert ns.missed(f.node_id) == [(f.node_id, 0, [(5, 6)]), (f.node_id, 1, [(0, 10), (20, 30)])]
    assert ns.missed(limit=1) == [(f.node_id, 0, [(5, 6)])]
    ns.set_missed({(f.node_id, 0): []})
    assert [server for _, server, _ in ns.missed()] == [1]
    ns.unlink(p("f"))
    assert ns.missed() == []                      # a deleted file's records go with it


def test_apart_ranges_commit_with_missed_ones_and_go_with_their_copy(ns):
    f = ns.create(p("f"), 512, 2, [0, 1], replicas=2)
    g = ns.create(p("g"), 512, 2, [1, 2], replicas=2)
    ns.add_session_file("writing", 7, f.node_id)
    ns.set_missed({(f.node_id, 1): [(0, 10)], (g.node_id, 1): [(0, 5)]}, forget_writer=7,
                  apart={(f.node_id, 1): [(0, 10)], (g.node_id, 1): [(2, 5)]})
    assert ns.session_file_clients("writing") == set()
    assert ns.apart(f.node_id) == [(f.node_id, 1, [(0, 10)])]
    assert ns.apart() == [(f.node_id, 1, [(0, 10)]), (g.node_id, 1, [(2, 5)])]
    ns.set_missed({}, apart={(f.node_id, 1): []})
    assert ns.apart() == [(g.node_id, 1, [(2, 5)])] and len(ns.missed()) == 2
    ns.set_missed({}, apart={(f.node_id, 1): [(0, 10)]})
    ns.mark_lost(1)                               # what a lost copy held apart is gone
    assert ns.apart() == [] and ns.missed(f.node_id) == [(f.node_id, 1, [(0, INFINITY)])]
    ns.set_missed({}, apart={(f.node_id, 0): [(0, 1)], (g.node_id, 2): [(0, 1)]})
    ns.unlink(p("f"))                             # a deleted file's go with it
    assert ns.apart() == [(g.node_id, 2, [(0, 1)])]
    ns.register_fileserver("fs0", "u0", "h:1")
    ns.register_fileserver("fs1", "u1", "h:2")
    ns.register_fileserver("fs2", "u2", "h:3")
    ns.register_fileserver("fs3", "u3", "h:4")
    ns.remove_member(2, {g.node_id: 3})           # a removed member's too
    assert ns.apart() == []


def test_a_copy_apart_stands_in_where_no_copy_holds_the_bytes(ns):
    """copies.py over the store: a writer's unfinished write leaves every copy but the kept
    one missing (and apart) there; when the kept copy's fileserver loses its data, the copy
    apart is good again where nothing else holds the bytes, and only there."""
    copies = Copies(ns)
    f = ns.create(p("f"), 512, 2, [0, 1], replicas=2)
    ns.set_missed({(f.node_id, 1): [(0, 100)]})          # it missed a write before
    copies.writing(7, f.node_id)
    assert copies.abandoned(7, {f.node_id: [(0, 4096)]}, {0, 1}, {0, 1}) == [
        (f.node_id, 1, 0, 4096)]
    assert copies.writers() == set()
    assert ns.missed(f.node_id) == [(f.node_id, 1, [(0, 4096)])]
    assert ns.apart(f.node_id) == [(f.node_id, 1, [(100, 4096)])]  # (not what it lacked)
    copies.lost(0)
    assert copies.missed_ranges(f.node_id) == [(0, 0, INFINITY), (1, 0, 100)]
    assert ns.apart() == []
    copies.repaired(f.node_id, 1, 0, 100)
    assert copies.stale(f.node_id) == {0}


def test_an_unfinished_write_keeps_the_copy_heard_from_lately(ns):
    """A fileserver cut off together with the writer is still online for the metaserver
    until its lease runs out: the copy kept is one whose fileserver still answers, so reads go
    on; when that copy then misses bytes for real, the copy apart stands in there, and the
    client reporting the miss learns it from the answer."""
    copies = Copies(ns)
    f = ns.create(p("f"), 512, 1, [0, 1], replicas=2)
    copies.writing(7, f.node_id)
    assert copies.abandoned(7, {f.node_id: [(0, 1024)]}, {0, 1}, {1}) == [
        (f.node_id, 0, 0, 1024)]
    assert copies.missed(f.node_id, 1, 512, 1024) == [(0, 0, 512), (1, 512, 1024)]


def test_replica_changes_commit_copies_ranges_and_deletes_together(ns):
    f = ns.create(p("f"), 512, 2, [0, 1], replicas=1)
    ns.change_copies(f.node_id, [0, 1, 2, 3], 2, [2, 3], [])
    assert ns.get(f.node_id).servers == (0, 1, 2, 3) and ns.get(f.node_id).replicas == 2
    assert ns.missed(f.node_id) == [(f.node_id, 2, [(0, INFINITY)]),
                                    (f.node_id, 3, [(0, INFINITY)])]
    ns.set_missed({}, apart={(f.node_id, 0): [(0, 9)]})
    ns.change_copies(f.node_id, [2, 1], 1, [], [0, 3])  # the stale 3 and the good 0 go
    assert ns.get(f.node_id).servers == (2, 1) and ns.get(f.node_id).replicas == 1
    assert ns.missed(f.node_id) == [(f.node_id, 2, [(0, INFINITY)])]
    assert ns.apart() == []
    assert ns.pending_deletes() == [(f.node_id, (0, 3))]
    ns.change_copies(f.node_id, [2, 1, 0, 4], 2, [0, 4], [])  # (not in practice: 0 is taken)
    ns.change_copies(f.node_id, [2, 1], 1, [], [4])
    ns.unlink(p("f"))                             # merged with what was dropped before
    [(file_id, servers)] = ns.pending_deletes()
    assert file_id == f.node_id and sorted(servers) == [0, 1, 2, 3, 4]
    ns.register_fileserver("fs0", "u0", "h:1")
    ns.register_fileserver("fs1", "u1", "h:2")
    ns.remove_member(0, {})                       # a removed member's objects are not waited for
    assert sorted(ns.pending_deletes()[0][1]) == [1, 2, 3, 4]
    ns.delete_done([f.node_id])
    assert ns.pending_deletes() == []


def test_layouts_are_kept_and_go_with_their_directory(ns):
    ns.mkdir(p("d"))
    ns.mkdir(p("d/e"))
    d, e = ns.lookup(p("d")).node_id, ns.lookup(p("d/e")).node_id
    ns.set_layout(d, (2, 4, 0))
    ns.set_layout(e, (0, 0, 3))
    assert ns.layouts() == {d: (2, 4, 0), e: (0, 0, 3)}
    ns.set_layout(d, None)
    assert ns.layouts() == {e: (0, 0, 3)}
    ns.rmdir(p("d/e"))
    assert ns.layouts() == {}
    ns.set_layout(d, (1, 1, 1))
    ns.mkdir(p("x"))
    ns.rename(p("x"), p("d"))                     # an empty directory replaced: its goes too
    assert ns.layouts() == {}


def test_a_lost_fileserver_marks_every_replicated_copy(ns):
    """Many files: on etcd more than one transaction holds, done in chunks."""
    for i in range(250):
        ns.create(p(f"r{i}"), 512, 2, [i % 3, (i + 1) % 3], replicas=2)
    ns.create(p("single"), 512, 2, [0])
    holding = [n.node_id for n in ns.files_on(0) if n.replicas > 1]
    assert ns.mark_lost(0) == len(holding)
    assert sorted(f for f, server, ranges in ns.missed()
                  if server == 0 and ranges == [(0, INFINITY)]) == sorted(holding)


def test_names_another_metaserver_made_are_seen_by_the_next_active(request, local_etcd):
    """The active one expects a name it does not know absent, in the commit itself, instead
    of reading it first: a name made by the one before it is still found taken (EEXIST), and
    a rename onto it still replaces it."""
    from pfs_servers.metaserver.etcd import EtcdStore
    ns = new_store("etcd", request, None)
    taken = ns.create(p("taken"), 512, 2, [0])
    ns.mkdir(p("d"))
    ns.create(p("d/target"), 512, 2, [1])
    again = EtcdStore(local_etcd.endpoints, prefix=ns.prefix.decode())
    with pytest.raises(NamespaceError) as e:
        again.create(p("taken"), 512, 2, [0])
    assert e.value.errno == errno.EEXIST
    with pytest.raises(NamespaceError) as e:
        again.mkdir(p("d"))
    assert e.value.errno == errno.EEXIST
    moved = again.create(p("moved"), 512, 2, [0])
    replaced = again.rename(p("moved"), p("d/target"))
    assert replaced is not None and replaced.servers == (1,)
    assert again.lookup(p("d/target")).node_id == moved.node_id
    assert again.lookup(p("taken")) == taken
    assert again.count_files() == 2
    again.close()
    ns.close()


def test_what_the_active_knows_without_reading_agrees_with_etcd(request, local_etcd):
    """The active one answers from memory names (absent ones too: a directory's entries read
    whole, or made by it) and a file's copy ranges it read or committed: after creates,
    renames, unlinks, range changes and removals its answers are those of a metaserver that
    reads everything, in a directory too big to hold whole too."""
    from pfs_servers.metaserver.etcd import EtcdStore
    from pfs_servers.metaserver.etcdcache import GROUP_KEYS
    before = new_store("etcd", request, None)          # the active before
    before.mkdir(p("d"))
    before.mkdir(p("big"))
    for i in range(GROUP_KEYS + 1):
        before.create(p(f"big/f{i}"), 512, 2, [0])
    r = before.create(p("d/r"), 512, 2, [0, 1], replicas=2)
    for i in range(3):
        before.create(p(f"d/f{i}"), 512, 2, [0])
    before.set_missed({(r.node_id, 1): [(0, 10)]}, apart={(r.node_id, 1): [(0, 5)]})
    before.close()
    ns = EtcdStore(local_etcd.endpoints, prefix=before.prefix.decode())
    fails(errno.ENOENT, ns.lookup, p("d/x"))           # (read: d's entries, whole)
    fails(errno.ENOENT, ns.lookup, p("big/x"))         # (read: that name alone)
    assert ns.missed(r.node_id) == [(r.node_id, 1, [(0, 10)])]  # (read: r's, whole)
    ns.create(p("big/x"), 512, 2, [0])
    ns.rename(p("d/f0"), p("d/x"))
    ns.rename(p("d/f1"), p("d/f2"))                    # replaces f2
    ns.unlink(p("big/f0"))
    ns.change_copies(r.node_id, [0, 2], 2, added=[2], dropped=[1])
    ns.mkdir(p("d/sub"))
    fails(errno.ENOENT, ns.lookup, p("d/sub/t"))       # (known: a directory it made)
    ns.create(p("d/sub/s"), 512, 2, [0])
    gone = ns.create(p("d/gone"), 512, 2, [0, 1], replicas=2)
    ns.set_missed({(gone.node_id, 0): [(0, 1)]})
    ns.unlink(p("d/gone"))                             # its ranges go with it
    ns.set_missed({(gone.node_id, 1): []})
    again = EtcdStore(local_etcd.endpoints, prefix=ns.prefix.decode())

    def answers(store: MetaStore) -> list:
        found = []
        for name in ("d/x", "d/f0", "d/f1", "d/f2", "d/r", "d/gone", "d/sub/s", "d/sub/t",
                     "big/x", "big/f0", "big/f1"):
            try:
                found.append(store.lookup(p(name)).node_id)
            except NamespaceError as e:
                found.append(e.errno)
        return found + [store.missed(f) + store.apart(f) for f in (r.node_id, gone.node_id)]
    assert answers(ns) == answers(again)
    assert answers(ns)[:2] == [again.lookup(p("d/x")).node_id, errno.ENOENT]
    assert answers(ns)[-2:] == [[(r.node_id, 2, [(0, INFINITY)])], []]
    again.close()
    ns.close()


def test_an_interrupted_mark_is_finished_by_the_next_active(request, local_etcd):
    """The intent etcd keeps while marking: a crash midway leaves it, and resume() (what the
    next active metaserver runs first) finishes the marking."""
    from pfs_servers.metaserver.etcd import EtcdStore
    from pfs_servers.metaserver.etcdclient import put
    ns = new_store("etcd", request, None)
    files = [ns.create(p(f"r{i}"), 512, 2, [0, 1], replicas=2).node_id for i in range(5)]
    ns._commit([put(ns.key("i/lost/00000001"), "")])   # as a crash right after the intent
    again = EtcdStore(local_etcd.endpoints, prefix=ns.prefix.decode())
    again.resume()
    assert sorted(f for f, server, _ in again.missed() if server == 1) == files
    assert list(again._scan("i/")) == []
    again.close()
    ns.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_etcd_over_tls(tmp_path):
    """--etcd-ca: the store talks TLS to etcd members that serve it, trusting their CA (here
    a self-signed certificate); without it, nothing is read or written."""
    if find_etcd() is None:
        pytest.skip("no etcd binary: run install-system-packages.sh as root")
    from pfs_servers.metaserver.etcd import EtcdStore, EtcdUnavailable
    cert, key = str(tmp_path / "etcd.pem"), str(tmp_path / "etcd.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=etcd",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    etcd = LocalEtcd(tmp_path / "etcd", members=1, tls=(cert, key)).start()
    try:
        store = EtcdStore(etcd.endpoints, ca_file=cert)
        f = store.create(p("over-tls"), 512, 2, [0])
        assert store.lookup(p("over-tls")) == f
        store.close()
        with pytest.raises((EtcdUnavailable, OSError)):
            EtcdStore(etcd.endpoints)   # plain gRPC to a TLS member
    finally:
        etcd.stop()
