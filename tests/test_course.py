"""The course scenario: three clients in turn on one file (B=512, S=2, 4 fileservers, width 3)."""
import pfs

DATA = bytes((i * 7 + 3) % 256 for i in range(4096))


def test_three_sequential_clients(clients, name):
    """Client 1 writes 0-1023, client 2 1024-2047 (and sees size 2048), client 3 writes
    2048-4095 and reads back all 4096 bytes, closes, deletes; the file cannot be opened again.
    Client 3's cache counters are exactly the course's."""
    c1, c2, c3 = clients(3, cache_blocks=16)

    assert c1.pfs_create(name, 3) == 0
    fd = c1.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0
    assert c1.pfs_write(fd, DATA[:1024], 1024, 0) == 1024
    assert c1.pfs_close(fd) == 0

    fd = c2.pfs_open(name, pfs.PFS_READ_WRITE)
    assert c2.pfs_write(fd, DATA[1024:2048], 1024, 1024) == 1024
    meta = pfs.Metadata()
    assert c2.pfs_fstat(fd, meta) == 0
    assert meta.file_size == 2048
    assert meta.recipe.stripe_width == 3 and meta.recipe.block_size == 512
    assert meta.recipe.stripe_blocks == 2 and len(meta.recipe.servers) == 3
    assert c2.pfs_close(fd) == 0

    fd = c3.pfs_open(name, pfs.PFS_READ_WRITE)
    assert c3.pfs_write(fd, DATA[2048:], 2048, 2048) == 2048
    buf = bytearray(4096)
    assert c3.pfs_read(fd, buf, 4096, 0) == 4096
    assert buf == DATA
    assert c3.pfs_close(fd) == 0

    stats = pfs.ExecStat()
    assert c3.pfs_execstat(stats) == 0
    assert vars(stats) == dict(num_read_hits=4, num_write_hits=0, num_evictions=0,
                               num_writebacks=0, num_invalidations=0,
                               num_close_writebacks=4, num_close_evictions=8)

    assert c3.pfs_delete(name) == 0
    assert c3.pfs_open(name, pfs.PFS_READ) == -1
    assert isinstance(pfs.pfs_last_error(), FileNotFoundError)


def test_module_level_api(cluster, name, monkeypatch):
    """The module functions work on one process-wide client configured by PFS_METASERVER."""
    monkeypatch.setenv("PFS_METASERVER", cluster.address)
    client_id = pfs.pfs_initialize()
    assert client_id > 0
    assert pfs.pfs_initialize() == client_id  # the same id again
    assert pfs.pfs_create(name, 2) == 0
    fd = pfs.pfs_open(name, pfs.PFS_READ_WRITE)
    assert pfs.pfs_write(fd, b"hello, pfs", 10, 0) == 10
    buf = bytearray(64)
    assert pfs.pfs_read(fd, buf, 64, 0) == 10 and buf[:10] == b"hello, pfs"
    assert pfs.pfs_close(fd) == 0
    assert pfs.pfs_delete(name) == 0
    assert pfs.pfs_finish(client_id) == 0
    assert pfs.pfs_create(name, 1) == -1  # not initialized any more
    assert pfs.pfs_last_error().errno == 107  # ENOTCONN


def test_numpy_arrays_are_read_into_in_place(clients, name):
    """pfs_read fills a preallocated NumPy array in place; pfs_write takes one too."""
    import numpy as np
    client = clients(1)
    assert client.pfs_create(name, 4) == 0
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    source = np.arange(3000, dtype=np.float64)
    assert client.pfs_write(fd, source, source.nbytes, 0) == source.nbytes
    target = np.zeros(3000, dtype=np.float64)
    address = target.ctypes.data
    assert client.pfs_read(fd, target, target.nbytes, 0) == target.nbytes
    assert target.ctypes.data == address and np.array_equal(target, source)
    assert client.pfs_read(fd, target[::2], 8, 0) == -1  # not contiguous: refused, not copied
    assert client.pfs_close(fd) == 0


def _stats(client: pfs.Client) -> dict:
    stats = pfs.ExecStat()
    assert client.pfs_execstat(stats) == 0
    return vars(stats)


def test_revocations_count_the_blocks_they_write_back_and_drop(clients, name):
    """A writer holds 8 dirty blocks (B=512) of a 4 KiB file; another client's requests revoke
    parts of its WRITE token, and each dirty block written back because of a revocation counts
    once as a writeback, each block dropped as an invalidation: a READ of the tail (from block
    7 past the end: every dirty block of the file is written back, so that the size the writer
    reports is stored, and all are kept, the token downgraded), then, once the writer dirtied
    blocks 2 and 4 again, a WRITE request in the middle (block 2: written back and dropped)
    and a READ in the middle (block 4: written back and kept)."""
    writer, other = clients(2, cache_blocks=16)
    assert writer.pfs_create(name, 4) == 0
    fd = writer.pfs_open(name, pfs.PFS_READ_WRITE)
    assert writer.pfs_write(fd, DATA, 4096, 0) == 4096      # 8 blocks, all dirty
    theirs = other.pfs_open(name, pfs.PFS_READ_WRITE)
    buf = bytearray(1024)
    assert other.pfs_read(theirs, buf, 1024, 3584) == 512   # to the end, and past it
    assert buf[:512] == DATA[3584:]
    counts = lambda: (_stats(writer)["num_writebacks"], _stats(writer)["num_invalidations"])
    assert counts() == (8, 0)

    for block in (2, 4):
        assert writer.pfs_write(fd, b"d" * 512, 512, block * 512) == 512
    assert other.pfs_write(theirs, b"w" * 512, 512, 1024) == 512
    assert counts() == (9, 1)
    assert other.pfs_read(theirs, buf, 512, 2048) == 512
    assert buf[:512] == b"d" * 512
    assert counts() == (10, 1)
    assert writer.pfs_close(fd) == 0
    assert other.pfs_close(theirs) == 0
