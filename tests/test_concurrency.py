"""Several clients at once, in processes of their own: tokens keep every view consistent."""
import threading

import pfs
from clusters import RemoteClient, read_file, write_file

SIZE = 1200
WIDTH = 3  # the files here are striped over 3 of the 4 fileservers


def test_three_writers_in_parallel_processes(cluster, clients, name):
    """The documented writers on bytes 300-500, 800-1100 and 200-250 of one file, each in its own
    process, many rounds at once: every region ends with its writer's last round, and no byte
    outside them changes."""
    write_file(clients(1), name, bytes(SIZE), width=WIDTH)
    regions = [(300, 201), (800, 301), (200, 51)]
    rounds = 25
    workers = [RemoteClient(cluster, cache_blocks=4) for _ in regions]
    try:
        for worker, (offset, length) in zip(workers, regions):
            worker.send("rounds_of_writes", name, offset, length, rounds)
        assert [w.receive(timeout=120) for w in workers] == [rounds] * 3
    finally:
        for worker in workers:
            worker.close()
    expected = bytearray(SIZE)
    for offset, length in regions:
        expected[offset:offset + length] = bytes([rounds]) * length
    assert read_file(clients(1), name, SIZE) == expected


def test_reader_sees_writer_in_another_process(cluster, clients, name):
    """A writes and keeps the file open (its data only in its cache); B, in another process,
    reads A's bytes; B writes; A reads B's bytes. A's counters show the writeback its data
    needed and the invalidation of its copy."""
    write_file(clients(1), name, bytes(SIZE), width=WIDTH)
    a, b = RemoteClient(cluster), RemoteClient(cluster)
    try:
        fa = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        assert a.call("pfs_write", fa, b"A" * 600, 600, 100) == 600
        fb = b.call("pfs_open", name, pfs.PFS_READ_WRITE)
        n, data = b.call("pfs_read", fb, 800, 0)
        assert n == 800 and data == bytes(100) + b"A" * 600 + bytes(100)
        assert b.call("pfs_write", fb, b"B" * 50, 50, 400) == 50
        n, data = a.call("pfs_read", fa, 800, 0)
        assert data == bytes(100) + b"A" * 300 + b"B" * 50 + b"A" * 250 + bytes(100)
        stats = a.call("pfs_execstat")
        assert stats["num_writebacks"] >= 1      # A's dirty block went back for B's read
        assert stats["num_invalidations"] >= 1   # and A's copy was dropped for B's write
        assert a.call("pfs_close", fa) == 0 and b.call("pfs_close", fb) == 0
    finally:
        a.close()
        b.close()


def test_fstat_sees_size_held_in_another_cache(cluster, clients, name):
    """A appends and keeps its bytes cached; B's fstat reports the new size (a glimpse)."""
    write_file(clients(1), name, bytes(100), width=WIDTH)
    a = RemoteClient(cluster)
    try:
        fa = a.call("pfs_open", name, pfs.PFS_READ_WRITE)
        assert a.call("pfs_write", fa, b"x" * 900, 900, 100) == 900
        b = clients(1)
        fb = b.pfs_open(name, pfs.PFS_READ)
        meta = pfs.Metadata()
        assert b.pfs_fstat(fb, meta) == 0
        assert meta.file_size == 1000
        buf = bytearray(2000)
        assert b.pfs_read(fb, buf, 2000, 0) == 1000  # and reads see it too
        assert buf[100:1000] == b"x" * 900
        assert b.pfs_close(fb) == 0
        assert a.call("pfs_close", fa) == 0
    finally:
        a.close()


def test_partial_revocation_keeps_the_rest(clients, name):
    """A holds a write token over 500-800 (and beyond); B writes 600-700. A gives up only the
    overlap: its cached block 0-511 stays valid (a read hit, no invalidation), the block holding
    600-700 is invalidated, and A keeps its token around it."""
    write_file(clients(1), name, bytes(SIZE), width=WIDTH)
    a, b = clients(2, cache_blocks=16)
    fa = a.pfs_open(name, pfs.PFS_READ_WRITE)
    assert a.pfs_write(fa, b"a" * 301, 301, 500) == 301
    buf = bytearray(512)
    assert a.pfs_read(fa, buf, 512, 0) == 512  # caches block 0 (0-511) too
    fb = b.pfs_open(name, pfs.PFS_READ_WRITE)
    assert b.pfs_write(fb, b"b" * 101, 101, 600) == 101
    tokens = [(s, e) for s, e, _ in a._fds[fa].tokens]
    assert tokens[0] == (0, 600) and tokens[1][0] == 701
    before = pfs.ExecStat()
    a.pfs_execstat(before)
    assert before.num_invalidations == 1  # block 1 (512-1023) only
    assert a.pfs_read(fa, buf, 100, 0) == 100
    after = pfs.ExecStat()
    a.pfs_execstat(after)
    assert after.num_read_hits == before.num_read_hits + 1
    whole = bytearray(SIZE)
    assert a.pfs_read(fa, whole, SIZE, 0) == SIZE
    assert whole[500:600] == b"a" * 100 and whole[600:701] == b"b" * 101
    assert whole[701:801] == b"a" * 100
    assert a.pfs_close(fa) == 0 and b.pfs_close(fb) == 0


def test_threads_share_one_client(clients, name):
    """pfs.Client is thread-safe: threads writing disjoint parts through one client."""
    write_file(clients(1), name, bytes(8 * 512), width=WIDTH)
    client = clients(1)
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    results = []

    def writer(k: int) -> None:
        for _ in range(20):
            results.append(client.pfs_write(fd, bytes([k + 1]) * 512, 512, k * 512))
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [512] * 160
    buf = bytearray(8 * 512)
    assert client.pfs_read(fd, buf, len(buf), 0) == len(buf)
    assert buf == b"".join(bytes([k + 1]) * 512 for k in range(8))
    assert client.pfs_close(fd) == 0
