"""Directories, rename and truncate through the C-like API, on real clusters: the errors POSIX
users expect, renames that no other client can catch half-done, truncates that every client's
cache respects, and all of it durable across a SIGKILLed cluster."""
import errno
import os
import threading

import pfs
from clusters import COURSE, Cluster, fails, read_file, write_file

B = COURSE["block_size"]


def test_directories_and_their_errors(clients, name):
    c = clients(1)
    assert c.pfs_mkdir(name) == 0
    assert c.pfs_mkdir(f"/{name}/sub") == 0            # a leading "/" is optional
    write_file(c, f"{name}/sub/f", b"data")
    fails(c.pfs_mkdir(name), errno.EEXIST)
    fails(c.pfs_mkdir(f"{name}/missing/x"), errno.ENOENT)
    fails(c.pfs_mkdir(f"{name}/sub/f/x"), errno.ENOTDIR)
    fails(c.pfs_create(f"{name}/sub/f/x", 1), errno.ENOTDIR)
    fails(c.pfs_open(f"{name}/sub", pfs.PFS_READ), errno.EISDIR)
    fails(c.pfs_delete(f"{name}/sub"), errno.EISDIR)
    fails(c.pfs_rmdir(f"{name}/sub"), errno.ENOTEMPTY)
    fails(c.pfs_rmdir(f"{name}/sub/f"), errno.ENOTDIR)
    fails(c.pfs_rmdir(f"{name}/nothing"), errno.ENOENT)
    fails(c.pfs_rmdir("/"), errno.EBUSY)
    fails(c.pfs_rename(name, f"{name}/sub/inside"), errno.EINVAL)
    fails(c.pfs_rename(f"{name}/sub/f", f"{name}/sub"), errno.EISDIR)
    fails(c.pfs_rename(f"{name}/sub", f"{name}/sub/f"), errno.EINVAL)
    entries = c.listdir(name)
    assert [(e.filename, e.is_dir) for e in entries] == [(f"{name}/sub", True)]
    assert c.stat(f"{name}/sub/f").file_size == 4 and c.stat(name).is_dir
    assert c.pfs_delete(f"{name}/sub/f") == 0
    assert c.pfs_rmdir(f"{name}/sub") == 0 and c.pfs_rmdir(name) == 0
    fails(c.pfs_rmdir(name), errno.ENOENT)


def test_rename_moves_trees_and_replaces_files(clients, name):
    c, other = clients(2)
    assert c.pfs_mkdir(name) == 0 and c.pfs_mkdir(f"{name}/a") == 0
    write_file(c, f"{name}/a/f", b"first")
    assert c.pfs_rename(f"{name}/a", f"{name}/b") == 0
    assert read_file(other, f"{name}/b/f") == b"first"
    fails(other.pfs_open(f"{name}/a/f", pfs.PFS_READ), errno.ENOENT)
    write_file(c, f"{name}/new", b"second version")
    assert c.pfs_rename(f"{name}/new", f"{name}/b/f") == 0   # replaces, as POSIX rename
    assert read_file(other, f"{name}/b/f") == b"second version"
    assert [e.filename for e in other.listdir(name)] == [f"{name}/b"]


def test_open_files_cannot_be_renamed_replaced_or_deleted(clients, name):
    c, holder = clients(2)
    write_file(c, f"{name}-x", b"x")
    write_file(c, f"{name}-y", b"y")
    fd = holder.pfs_open(f"{name}-y", pfs.PFS_READ)
    fails(c.pfs_rename(f"{name}-y", f"{name}-z"), errno.EBUSY)
    fails(c.pfs_rename(f"{name}-x", f"{name}-y"), errno.EBUSY)  # it would replace an open file
    fails(c.pfs_delete(f"{name}-y"), errno.EBUSY)
    assert holder.pfs_close(fd) == 0
    assert c.pfs_rename(f"{name}-x", f"{name}-y") == 0
    assert read_file(holder, f"{name}-y") == b"x"


def test_every_listing_sees_the_old_name_or_the_new_one(clients, name):
    """Rename is atomic: while one client renames a file back and forth, every listing of the
    directory by another client holds exactly one of the two names."""
    mover, watcher = clients(2)
    assert mover.pfs_mkdir(name) == 0
    write_file(mover, f"{name}/ping", b"p")
    done = threading.Event()

    def move() -> None:
        for i in range(150):
            old, new = ("ping", "pong") if i % 2 == 0 else ("pong", "ping")
            assert mover.pfs_rename(f"{name}/{old}", f"{name}/{new}") == 0
        done.set()
    thread = threading.Thread(target=move)
    thread.start()
    seen = 0
    while not done.is_set():
        listed = [e.filename.rsplit("/", 1)[1] for e in watcher.listdir(name)]
        assert listed in (["ping"], ["pong"]), listed
        seen += 1
    thread.join()
    assert seen > 10


def test_truncate_cuts_and_extends_for_every_client(clients, name):
    """ftruncate takes a WRITE token from the new end to infinity: another client's cached tail
    is revoked, so it reads the new end; an extension reads as zeros; writes may then continue
    from the new end only."""
    writer, reader = clients(2, cache_blocks=16)
    data = os.urandom(6 * B + 100)
    write_file(writer, name, data)
    rfd = reader.pfs_open(name, pfs.PFS_READ)
    buf = bytearray(len(data))
    assert reader.pfs_read(rfd, buf, len(buf), 0) == len(data)      # cached at the reader
    wfd = writer.pfs_open(name, pfs.PFS_READ_WRITE)
    assert writer.pfs_ftruncate(wfd, 2 * B + 7) == 0
    assert reader.pfs_read(rfd, buf, len(buf), 0) == 2 * B + 7       # not the cached old tail
    assert buf[:2 * B + 7] == data[:2 * B + 7]
    fails(writer.pfs_write(wfd, b"z", 1, 3 * B), errno.EINVAL)        # past the new end: a hole
    assert writer.pfs_ftruncate(wfd, 4 * B) == 0                      # extends with zeros
    assert reader.pfs_read(rfd, buf, len(buf), 0) == 4 * B
    assert buf[:4 * B] == data[:2 * B + 7] + bytes(2 * B - 7)
    assert writer.pfs_write(wfd, b"tail", 4, 4 * B) == 4
    meta = pfs.Metadata()
    assert reader.pfs_fstat(rfd, meta) == 0 and meta.file_size == 4 * B + 4
    assert writer.pfs_close(wfd) == 0 and reader.pfs_close(rfd) == 0
    assert read_file(reader, name) == data[:2 * B + 7] + bytes(2 * B - 7) + b"tail"


def test_truncate_failures(clients, name):
    c = clients(1)
    write_file(c, name, b"0123456789")
    ro = c.pfs_open(name, pfs.PFS_READ)
    fails(c.pfs_ftruncate(ro, 3), errno.EBADF)
    fails(c.pfs_ftruncate(ro + 1000, 3), errno.EBADF)
    assert c.pfs_close(ro) == 0
    rw = c.pfs_open(name, pfs.PFS_READ_WRITE)
    fails(c.pfs_ftruncate(rw, -1), errno.EINVAL)
    fails(c.pfs_ftruncate(rw, 1 << 60), errno.EFBIG)
    if c.pfs_ftruncate(rw, 1 << 50) == -1:  # PFS allows it; a fileserver's disk may not
        assert pfs.pfs_last_error().errno == errno.EFBIG, pfs.pfs_last_error()  # (ext4: 16 TiB)
    assert c.pfs_ftruncate(rw, 0) == 0
    assert c.pfs_close(rw) == 0
    assert read_file(c, name) == b""


def test_tree_renames_and_truncates_survive_a_killed_cluster(tmp_path):
    cluster = Cluster(tmp_path / "data", **COURSE).start()
    try:
        c = cluster.client()
        assert c.pfs_mkdir("d") == 0 and c.pfs_mkdir("d/e") == 0
        write_file(c, "d/e/f", b"x" * 3000)
        assert c.pfs_rename("d/e", "d/moved") == 0
        fd = c.pfs_open("d/moved/f", pfs.PFS_READ_WRITE)
        assert c.pfs_ftruncate(fd, 1234) == 0
        assert c.pfs_close(fd) == 0
        cluster.kill()
        cluster.start()
        c = cluster.client()
        assert [e.filename for e in c.listdir("d")] == ["d/moved"]
        assert read_file(c, "d/moved/f") == b"x" * 1234
    finally:
        cluster.stop()
