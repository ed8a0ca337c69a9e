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
