"""The cache's fast path for reads (csrc/fastread.c, one C call per hit) on a real cluster:
it serves a cached read only while the general path would, and stops before another client's
write is acknowledged, at close, at an eviction and (tests/test_fencing.py) once the lease may
have run out; its hits count as the general path's do."""
import errno

import pytest

import pfs
from clusters import COURSE, Cluster, write_file

B = COURSE["block_size"]
SIZE = 16 * B


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("fastreads"), **COURSE).start()
    yield c
    c.stop()


def fast(client: pfs.Client, fd: int, length: int, offset: int) -> bytes | None:
    """The read as the fast path alone serves it (what pfs_read tries first), or None."""
    buf = bytearray(length)
    n = client._state.cache.fast_read(fd, buf, length, offset)
    return bytes(buf) if n >= 0 else None


def cached_reader(cluster: Cluster, name: str) -> tuple[pfs.Client, int]:
    """A client with `name` open and all of it cached (read whole, in blocks), on the fast
    path."""
    reader = cluster.client(cache_blocks=64)
    fd = reader.pfs_open(name, pfs.PFS_READ)
    buf = bytearray(SIZE)
    assert reader.pfs_read(fd, buf, SIZE, 0) == SIZE
    return reader, fd


def test_cached_reads_take_the_fast_path_and_count_hits(cluster):
    data = bytes(range(256)) * (SIZE // 256)
    setup = cluster.client()
    write_file(setup, "/fast-hits", data)
    reader, fd = cached_reader(cluster, "/fast-hits")
    hits = pfs.ExecStat()
    assert reader.pfs_execstat(hits) == 0
    assert fast(reader, fd, 100, 3 * B + 7) == data[3 * B + 7:3 * B + 107]
    assert fast(reader, fd, B, 5 * B - 10) == data[5 * B - 10:6 * B - 10]  # two blocks
    after = pfs.ExecStat()
    assert reader.pfs_execstat(after) == 0
    assert after.num_read_hits == hits.num_read_hits + 3
    assert fast(reader, fd, 10, 6 * B - 10) is None  # sequential: read-ahead's, the general way
    assert fast(reader, fd, 10, SIZE - 5) is None    # past the end
    buf = bytearray(10)
    assert reader.pfs_read(fd, buf, 10, SIZE - 5) == 5  # short, as ever
    assert reader.pfs_read(fd, buf, 10, 2 * B) == 10 and buf == data[2 * B:2 * B + 10]
    for client in (reader, setup):
        assert client.pfs_finish(client.pfs_initialize()) == 0


@pytest.mark.parametrize("change", ["write", "truncate"])
def test_another_clients_change_stops_the_fast_path_before_it_is_done(cluster, change):
    """The change needs the reader's READ token: the revocation takes the fd off the fast path
    (and drops the blocks) before the reader acknowledges it, so no read after the change
    returns the old bytes."""
    name = f"/fast-{change}"
    setup = cluster.client()
    write_file(setup, name, b"o" * SIZE)
    reader, fd = cached_reader(cluster, name)
    assert fast(reader, fd, 10, 4 * B) == b"o" * 10
    writer = cluster.client(cache_blocks=0)
    wfd = writer.pfs_open(name, pfs.PFS_READ_WRITE)
    if change == "write":
        assert writer.pfs_write(wfd, b"n" * B, B, 4 * B) == B
    else:
        writer.ftruncate(wfd, 2 * B)
    assert writer.pfs_close(wfd) == 0  # returned: every revocation was acknowledged
    assert fast(reader, fd, 10, 4 * B) is None
    buf = bytearray(10)
    if change == "write":
        assert reader.pfs_read(fd, buf, 10, 4 * B) == 10 and buf == b"n" * 10
        assert fast(reader, fd, 10, 4 * B + 200) in (None, b"n" * 10)  # (cached again or not)
    else:
        assert reader.pfs_read(fd, buf, 10, 4 * B) == -1
        assert pfs.pfs_last_error().errno == errno.EINVAL  # past the new end
        assert fast(reader, fd, 10, B) in (None, b"o" * 10)
    for client in (reader, writer, setup):
        assert client.pfs_finish(client.pfs_initialize()) == 0


def test_close_and_eviction_stop_the_fast_path(cluster):
    setup = cluster.client()
    write_file(setup, "/fast-close", b"c" * SIZE)
    reader, fd = cached_reader(cluster, "/fast-close")
    assert fast(reader, fd, 10, B) == b"c" * 10
    # Another file's reads take every slot: the blocks are evicted, and the fd misses.
    write_file(setup, "/fast-other", b"x" * (80 * B))
    other = reader.pfs_open("/fast-other", pfs.PFS_READ)
    for offset in range(0, 80 * B, 8 * B):
        assert reader.pfs_read(other, bytearray(8 * B), 8 * B, offset) == 8 * B
    assert reader._state.cache._table.lookup(reader._state.fds[fd].file_id, 1) is None
    assert fast(reader, fd, 10, B) is None
    buf = bytearray(10)
    assert reader.pfs_read(fd, buf, 10, B) == 10 and buf == b"c" * 10
    assert reader.pfs_read(fd, bytearray(SIZE), SIZE, 0) == SIZE  # all cached again
    assert fast(reader, fd, 10, 3 * B) == b"c" * 10
    assert reader.pfs_close(fd) == 0
    assert fast(reader, fd, 10, 3 * B) is None
    assert reader.pfs_read(fd, buf, 10, 3 * B) == -1
    assert pfs.pfs_last_error().errno == errno.EBADF
    for client in (reader, setup):
        assert client.pfs_finish(client.pfs_initialize()) == 0


def test_a_read_before_initialize_or_after_finish_says_so(cluster):
    client = pfs.Client(metaserver=cluster.address)
    buf = bytearray(10)
    assert client.pfs_read(1, buf, 10, 0) == -1
    assert pfs.pfs_last_error().errno == errno.ENOTCONN
    setup = cluster.client()
    write_file(setup, "/fast-finish", b"f" * SIZE)
    reader, fd = cached_reader(cluster, "/fast-finish")
    assert fast(reader, fd, 10, B) == b"f" * 10
    assert reader.pfs_finish(reader.pfs_initialize()) == 0
    assert fast(reader, fd, 10, B) is None
    assert reader.pfs_read(fd, buf, 10, B) == -1
    assert pfs.pfs_last_error().errno == errno.ENOTCONN
    assert setup.pfs_finish(setup.pfs_initialize()) == 0
