"""The POSIX forms of read and write on pfs.Client (pread, pwrite, append), which the Pythonic
layer and the mount use, beside the C-like calls that keep the course's contract (SPEC §3)."""
import errno
import threading

import pfs
from clusters import fails


def _open_new(client: pfs.Client, name: str) -> int:
    assert client.pfs_create(name, 3) == 0
    return client.open(name, pfs.PFS_READ_WRITE)


def test_pwrite_past_the_end_leaves_zeros_and_pread_there_reads_nothing(clients, name):
    a, b = clients(2)
    fd = _open_new(a, name)
    assert a.pwrite(fd, b"head", 4, 0) == 4
    assert a.pwrite(fd, b"tail", 4, 5000) == 4  # several blocks and stripe units on
    assert a.pwrite(fd, b"", 0, 9000) == 0  # writes nothing, extends nothing (as POSIX)
    fd_b = b.open(name, pfs.PFS_READ)
    buf = bytearray(6000)
    assert b.pread(fd_b, buf, 6000, 0) == 5004
    assert bytes(buf[:5004]) == b"head" + bytes(4996) + b"tail"
    assert b.pread(fd_b, buf, 10, 5004) == 0 and b.pread(fd_b, buf, 10, 1 << 20) == 0
    # The C-like calls keep the course's rows: EINVAL past the end, for reads and writes.
    assert fails(b.pfs_read(fd_b, buf, 10, 1 << 20), errno.EINVAL)
    assert fails(a.pfs_write(fd, b"x", 1, 1 << 20), errno.EINVAL)
    assert b.fstat(fd_b).file_size == 5004
    b.close(fd_b)
    a.close(fd)


def test_appends_of_two_clients_at_once_never_overwrite_each_other(clients, name):
    a, b = clients(2)
    fd_a = _open_new(a, name)
    fd_b = b.open(name, pfs.PFS_READ_WRITE)
    records = 40

    def appender(client: pfs.Client, fd: int, tag: bytes, offsets: list[int]) -> None:
        for i in range(records):
            record = tag + b"%03d\n" % i
            offsets.append(client.append(fd, record, len(record)))

    got_a, got_b = [], []
    threads = [threading.Thread(target=appender, args=(a, fd_a, b"a", got_a)),
               threading.Thread(target=appender, args=(b, fd_b, b"b", got_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got_a + got_b) == [5 * i for i in range(2 * records)]
    buf = bytearray(10 * records)
    assert a.pread(fd_a, buf, len(buf), 0) == len(buf)
    lines = bytes(buf).splitlines()
    assert sorted(lines) == sorted([b"a%03d" % i for i in range(records)]
                                   + [b"b%03d" % i for i in range(records)])
    a.close(fd_a)
    b.close(fd_b)
