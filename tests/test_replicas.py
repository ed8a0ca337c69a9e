"""Mirrored stripes and end-to-end checksums, with faults (README, "Copies and checksums"):
a replicated file outlives a fileserver that dies and loses its disk mid-write, and the copy is
resynced when it returns; a byte flipped on a fileserver's disk is never returned: it is read
around and repaired when there is another copy, EIO naming the file, offset and fileserver when
there is not; `pfs scrub` finds what reads did not touch."""
import contextlib
import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

import pfs
from clusters import COURSE, Cluster, RemoteClient, fails, read_file, wait_until
from test_members import all_online, fileserver_pid, member_down, status

UNIT = 4096  # bytes of an object one checksum covers (pfs/wire.py)


@pytest.fixture
def cluster(tmp_path):
    """Four fileservers; new files get two copies of each stripe unit unless they ask."""
    c = Cluster(tmp_path / "data", lease_seconds=3.0, extra_args=("--replicas", "2"),
                **COURSE).start()
    yield c
    c.stop()


def names(cluster: Cluster) -> dict[int, str]:
    """Fileserver index -> member name, as `pfs status --json` lists them."""
    return {f["index"]: f["name"] for f in json.loads(pfs_cli(cluster, "status", "--json")
                                                      .stdout)["fileservers"]}


def in_sync(cluster: Cluster) -> bool:
    shown = status(cluster)
    return shown.returncode == 0 and "all in sync" in shown.stdout


def objects(directory: pathlib.Path) -> dict[str, bytes]:
    """A fileserver's stored objects and checksum files, by name, with their bytes."""
    return {p.name: p.read_bytes() for p in (directory / "objects").glob("*/*")}


def pfs_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pfs", *args], capture_output=True, text=True,
                          timeout=60, env=cluster.env(), cwd=cluster.data_dir)


def stored_file(cluster: Cluster, name: str, data: bytes, width: int, replicas: int):
    """Writes a file and closes it; (its recipe, the data directory of each of its copies of
    column 0, first copy first)."""
    client = cluster.client(cache_blocks=0)
    client.create(name, width, replicas)
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert client.pfs_write(fd, data, len(data), 0) == len(data), pfs.pfs_last_error()
    recipe = client.fstat(fd).recipe
    assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    client.pfs_finish(client.pfs_initialize())
    members = names(cluster)
    return recipe, [cluster.data_dir / members[i] for i in recipe.copies(0)]


@contextlib.contextmanager
def hung(cluster: Cluster, name: str):
    """Fileserver `name` stopped (SIGSTOP) within the block: calls to it hang."""
    pid = fileserver_pid(cluster, name)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def disk_lost(cluster: Cluster, name: str) -> None:
    """Fileserver `name` killed and its data directory wiped; `pfs up` restarts it empty."""
    with member_down(cluster, name) as directory:
        shutil.rmtree(directory)


def only_object(directory: pathlib.Path) -> pathlib.Path:
    """The (only) object in a fileserver's data directory."""
    (path,) = [p for p in (directory / "objects").glob("*/*") if p.suffix != ".crc"]
    return path


def flip(directory: pathlib.Path, offset: int) -> None:
    """Flips one bit of the (only) object in a fileserver's data directory, as a disk might."""
    with open(only_object(directory), "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def test_replicated_files_outlive_a_fileserver_wiped_mid_write_and_it_is_resynced(cluster):
    writer = RemoteClient(cluster, cache_blocks=0)
    files, size = 40, 96 * 1024
    writer.send("write_files", "f", files, size)  # each created, written, closed in turn
    wait_until(lambda: any((cluster.data_dir / "fs1" / "objects").rglob("*")), timeout=30,
               what="the writer to store something on fs1")
    with member_down(cluster, "fs1") as directory:
        shutil.rmtree(directory)  # its disk lost, in the middle of the writes
        closed = writer.receive(timeout=240)  # the writes go on: the other copies take them
    writer.close()
    assert closed == list(range(files)), "a replicated write failed with one fileserver down"
    reader = cluster.client(cache_blocks=0)
    for i in closed:
        assert read_file(reader, f"f{i}") == pattern(i, size), f"f{i} differs"
    wait_until(lambda: in_sync(cluster), timeout=120, what="the resync of fs1")
    # The resynced copies are those of the others, byte for byte, checksums included.
    others = {}
    for name in ("fs0", "fs2", "fs3"):
        for object_name, content in objects(cluster.data_dir / name).items():
            others.setdefault(object_name, []).append(content)
    resynced = objects(cluster.data_dir / "fs1")
    assert len(resynced) == 2 * files, "fs1 should hold a copy of one column of every file"
    for object_name, content in resynced.items():
        assert content in others[object_name], f"fs1's {object_name} differs from its copies"


def test_the_copy_kept_apart_stands_in_when_the_kept_copy_is_lost_too(cluster):
    """Two faults: a writer dies with a replicated file open, so every copy but the first is
    recorded stale for the bytes it held a WRITE token on (its unfinished write may be on some
    copies only), and before the resync the first copy's fileserver loses its disk. The other
    copy holds everything the writer sent: it stands in, reads return the fsynced bytes (not
    EIO), and the resync makes the lost copy equal to it."""
    old, new = os.urandom(2 * UNIT), os.urandom(2 * UNIT)
    recipe, (kept, apart) = stored_file(cluster, "f", old, width=1, replicas=2)
    writer = RemoteClient(cluster, cache_blocks=0)
    fd = writer.call("pfs_open", "f", pfs.PFS_READ_WRITE)
    assert writer.call("pfs_write", fd, new, len(new), 0) == len(new)
    assert writer.call("pfs_fsync", fd) == 0  # on both copies; the file stays open
    with hung(cluster, apart.name):  # so that no resync makes it equal to the kept copy yet
        writer.process.kill()
        writer.process.wait(10)
        wait_until(lambda: "session ended with file" in cluster.log.read_text(), timeout=30,
                   what="the dead writer's copies to be recorded apart")
        disk_lost(cluster, kept.name)
    wait_until(lambda: all_online(cluster), timeout=60, what="both fileservers to be back")
    reader = cluster.client(cache_blocks=0)
    assert read_file(reader, "f") == new
    wait_until(lambda: in_sync(cluster), timeout=60, what="the resync of the lost copy")
    assert objects(kept) == objects(apart)


def test_a_resync_writes_only_the_bytes_a_copy_lacks(cluster, monkeypatch):
    """Each copy of a column lacks bytes the other holds, within one checksum unit: a writer
    dies mid-write while the second copy's fileserver hangs, so that copy is recorded as having
    missed the writer's bytes (the first is kept, with what it took); then, the first copy's
    fileserver down, another client writes other bytes of the unit, which the second copy alone
    takes. The resync gives each copy the bytes it lacks and no others, so both outlive it
    (copying whole units put one copy's old bytes over the other's)."""
    monkeypatch.setenv("PFS_RETRY_SECONDS", "2")
    old, new = os.urandom(2 * UNIT), os.urandom(600)
    recipe, (first, second) = stored_file(cluster, "f", old, width=1, replicas=2)
    client = cluster.client(cache_blocks=0)
    fd = client.pfs_open("f", pfs.PFS_READ_WRITE)  # its WRITE token, before the writer's
    assert client.pfs_write(fd, old[401:1001], 600, 401) == 600, pfs.pfs_last_error()
    writer = RemoteClient(cluster, cache_blocks=0)
    written = writer.call("pfs_open", "f", pfs.PFS_READ_WRITE)
    assert writer.call("pfs_write", written, old[:10], 10, 0) == 10  # (its WRITE token)
    # Stored on both: the writer is connected to each, so its next write to the hung one waits
    # (a first connection to it would fail at once, and the write be done and recorded).
    assert writer.call("pfs_fsync", written) == 0
    hanging = fileserver_pid(cluster, second.name)
    os.kill(hanging, signal.SIGSTOP)  # so the first copy is kept, and not copied from yet
    try:
        assert writer.call("pfs_write", written, os.urandom(10), 10, 0) == 10
        writer.send("pfs_fsync", written)  # taken by the first copy only
        time.sleep(0.5)
        writer.process.kill()
        writer.process.wait(10)
        wait_until(lambda: "session ended with file" in cluster.log.read_text(), timeout=30,
                   what="the dead writer's bytes to be recorded missed by the second copy")
        with member_down(cluster, first.name) as directory:  # (`pfs up` restarts it)
            kept = only_object(directory).read_bytes()[:10]  # what the first copy holds of the writer's
            os.kill(hanging, signal.SIGCONT)
            assert client.pfs_write(fd, new, 600, 401) == 600, pfs.pfs_last_error()
            assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    finally:
        os.kill(hanging, signal.SIGCONT)
    wait_until(lambda: all_online(cluster) and in_sync(cluster), timeout=60,
               what="the resync of both copies")
    assert read_file(client, "f") == kept + old[10:401] + new + old[1001:]
    assert objects(first) == objects(second)
    client.pfs_finish(client.pfs_initialize())


def test_bytes_one_copy_holds_stay_readable_when_no_copy_is_whole(cluster, monkeypatch):
    """Two faults on one file: the second copy misses a write (its fileserver is down), then
    the first copy's fileserver loses its disk before the second is back (were it back first,
    the resync would give it the write). No copy is whole, but only the bytes no copy holds
    fail (EIO naming them); the rest is read from the copy that holds them, and the resync
    gives the lost copy everything that copy has."""
    monkeypatch.setenv("PFS_RETRY_SECONDS", "2")
    old, new = os.urandom(4 * UNIT), os.urandom(UNIT)
    recipe, (first, second) = stored_file(cluster, "f", old, width=1, replicas=2)
    writer = cluster.client(cache_blocks=0)
    with member_down(cluster, second.name):
        fd = writer.pfs_open("f", pfs.PFS_READ_WRITE)
        assert writer.pfs_write(fd, new, len(new), UNIT) == len(new)
        assert writer.pfs_close(fd) == 0  # stored on the first copy, recorded missed on the second
        disk_lost(cluster, first.name)  # (`pfs up` restarts both when it ends)
    wait_until(lambda: all_online(cluster), timeout=60, what="both fileservers to be back")
    reader = cluster.client(cache_blocks=0)
    fd = reader.pfs_open("f", pfs.PFS_READ)
    buf = bytearray(UNIT)
    for at in (0, 2 * UNIT, 3 * UNIT):  # held by the second copy
        assert reader.pfs_read(fd, buf, UNIT, at) == UNIT, pfs.pfs_last_error()
        assert buf == old[at:at + UNIT]
    error = fails(reader.pfs_read(fd, buf, UNIT, UNIT), errno.EIO)
    assert f"byte {UNIT}" in str(error)
    reader.pfs_close(fd)
    wait_until(lambda: "some of them no copy holds now" in cluster.log.read_text(), timeout=60,
               what="the resync of what the second copy holds")
    for c in (writer, reader):
        c.pfs_finish(c.pfs_initialize())


def test_a_column_whose_copies_each_miss_part_is_read_and_fsynced_piece_by_piece(cluster):
    """The state two faults leave (a writer died with the file open, so the second copy is
    apart, then the first copy missed a write for real and the second stands in there): every
    copy of column 0 is stale, each missing a different part. The client holding that view
    reads across both parts in one call, piece by piece from the copy holding each, and fsyncs
    every copy that holds something (the metaserver's grants give clients this view; here it
    is given directly, since the faults that make it leave it only until the resync ends)."""
    data = os.urandom(4 * UNIT)
    stored_file(cluster, "f", data, width=2, replicas=2)
    client = cluster.client(cache_blocks=0)
    fd = client.pfs_open("f", pfs.PFS_READ_WRITE)
    buf = bytearray(len(data))
    assert client.pfs_read(fd, buf, len(buf), 0) == len(buf)  # its tokens: no grant comes now
    f = client._state.fds[fd]
    first, second = f.recipe.copies(0)
    f.missed = {first: [(0, UNIT)], second: [(UNIT, 1 << 62)]}
    f.stale = {first, second}
    buf[:] = bytes(len(buf))
    assert client.pfs_read(fd, buf, len(buf), 0) == len(buf), pfs.pfs_last_error()
    assert buf == data
    assert f.stale == {first, second}
    assert client.pfs_fsync(fd) == 0, pfs.pfs_last_error()
    f.missed[second] = [(UNIT // 2, 1 << 62)]  # now no copy holds local bytes 2-4 KiB
    fails(client.pfs_read(fd, buf, len(buf), 0), errno.EIO)
    assert client.pfs_close(fd) == 0
    client.pfs_finish(client.pfs_initialize())


def pattern(i: int, size: int) -> bytes:
    """The bytes the worker's write_files writes to file i (tests/worker.py)."""
    return bytes((i * 7 + k) % 251 for k in range(size))


def test_a_flipped_byte_is_read_around_and_repaired_from_the_other_copy(cluster):
    data = os.urandom(3 * UNIT)
    recipe, (first, second) = stored_file(cluster, "f", data, width=1, replicas=2)
    assert recipe.replicas == 2 and len(recipe.servers) == 2
    shown = pfs_cli(cluster, "stat", "f")
    assert "replicas:      2" in shown.stdout, shown.stdout
    healthy = objects(first)
    flip(first, UNIT + 5)  # in the copy reads go to first
    reader = cluster.client(cache_blocks=0)
    assert read_file(reader, "f") == data  # the damaged unit never comes back
    assert "degraded" in status(cluster).stdout or in_sync(cluster)
    wait_until(lambda: in_sync(cluster), timeout=60, what="the damaged copy's repair")
    assert objects(first) == healthy
    assert "fails its checksum" in cluster.log.read_text()  # said, not silent: the client's
    # report is in the metaserver's log


def test_a_flipped_byte_without_another_copy_is_eio_naming_file_offset_and_fileserver(cluster):
    data = os.urandom(3 * UNIT)
    recipe, (only,) = stored_file(cluster, "single", data, width=1, replicas=1)
    flip(only, UNIT + 5)
    reader = cluster.client(cache_blocks=0)
    fd = reader.pfs_open("single", pfs.PFS_READ)
    buf = bytearray(len(data))
    e = fails(reader.pfs_read(fd, buf, len(buf), 0), errno.EIO)
    assert "single" in str(e) and f"byte {UNIT} " in str(e), e
    assert f"fileserver {names(cluster)[recipe.servers[0]]} " in str(e), e
    assert reader.pfs_read(fd, buf, UNIT, 0) == UNIT and bytes(buf[:UNIT]) == data[:UNIT]
    assert reader.pfs_read(fd, buf, UNIT, 2 * UNIT) == UNIT
    assert bytes(buf[:UNIT]) == data[2 * UNIT:]
    assert reader.pfs_close(fd) == 0
    scrubbed = pfs_cli(cluster, "scrub", "/")
    assert scrubbed.returncode == 1 and "pfs:/single has no other copy" in scrubbed.stdout and \
        "backup" in scrubbed.stdout, scrubbed


def test_scrub_finds_a_damaged_copy_reads_do_not_touch_and_repairs_it(cluster):
    data = os.urandom(2 * UNIT + 100)
    pfs_cli(cluster, "mkdir", "d")
    _, (first, second) = stored_file(cluster, "d/f", data, width=1, replicas=2)
    healthy = objects(second)
    flip(second, 2 * UNIT + 7)  # the last, partial unit of the copy reads do not go to
    reader = cluster.client(cache_blocks=0)
    assert read_file(reader, "d/f") == data
    scrubbed = pfs_cli(cluster, "scrub", "d")
    assert scrubbed.returncode == 1 and "1 damaged" in scrubbed.stdout, scrubbed
    assert "beyond repair" not in scrubbed.stdout, scrubbed
    assert "resynced" in scrubbed.stdout, scrubbed
    wait_until(lambda: in_sync(cluster), timeout=60, what="the damaged copy's repair")
    assert objects(second) == healthy
    scrubbed = pfs_cli(cluster, "scrub")
    assert scrubbed.returncode == 0 and "all good" in scrubbed.stdout, scrubbed


def test_copies_need_fileservers_of_their_own(cluster):
    client = cluster.client()
    with pytest.raises(OSError) as e:
        client.create("too-wide", 3, 2)  # 6 copies of columns, 4 fileservers
    assert e.value.errno == errno.EINVAL and "fileserver" in str(e.value)
    client.create("widest", 2, 2)
    assert client.stat("widest").recipe.replicas == 2
    client.create("single", 4, 1)
    assert client.stat("single").recipe.replicas == 1
    with pfs.open("opened", "wb", client=client, replicas=1) as f:  # the Python option
        f.write(b"one copy")
    assert client.stat("opened").recipe.replicas == 1
    assert client.stat("opened").recipe.stripe_width == 4  # as wide as one copy each allows
    local = cluster.data_dir / "local"
    local.write_bytes(b"two copies")
    put = pfs_cli(cluster, "put", "--replicas", "2", "--stripe-width", "1", str(local), "put")
    assert put.returncode == 0, put
    assert client.stat("put").recipe.replicas == 2
    copied = pfs_cli(cluster, "cp", "put", "copied")  # as its source
    assert copied.returncode == 0 and client.stat("copied").recipe.replicas == 2, copied
