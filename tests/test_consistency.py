"""Randomized races: client processes with tiny caches read and write overlapping ranges of one
file; every read and the final file must be explained by one total order of all operations
(tests/consistency.py). Evictions and revocations are frequent: blocks are 512 bytes and each
client caches only a few.

A second race does the same on a file that grows: appends (at an end that may be stale), reads
across and past the end, writes past it that must fail with EINVAL, and fstat; every size seen
must be explained too.

Seeds and sizes come from the environment, for longer runs outside CI:
    PFS_CONSISTENCY_SEEDS=1,2,3,4,5,6,7,8 PFS_CONSISTENCY_OPS=200 pytest tests/test_consistency.py
(also PFS_CONSISTENCY_CLIENTS, and PFS_CONSISTENCY_MAX_SIZE for the growing file).
"""
import errno
import os

import pytest

import pfs
from clusters import RemoteClient
from consistency import Op, find_order

SEEDS = [int(s) for s in os.environ.get("PFS_CONSISTENCY_SEEDS", "1,2,3").split(",")]
OPS = int(os.environ.get("PFS_CONSISTENCY_OPS", "40"))
CLIENTS = int(os.environ.get("PFS_CONSISTENCY_CLIENTS", "3"))
FILE_SIZE = 8 * 512
WRITABLE_END = 7 * 512  # the last block is never written: it must never read differently
MAX_LEN = 1300          # up to three blocks, so operations span block and stripe boundaries


def race(cluster, setup: pfs.Client, name: str, seed: int, initial: bytes, helper: str,
         *args) -> list:
    """Creates the file holding `initial`, then runs worker `helper` (seeded per client) in
    CLIENTS processes at once; their histories. Cache sizes differ: none, tiny, a little."""
    assert setup.pfs_create(name, 1 + seed % 4) == 0
    fd = setup.pfs_open(name, pfs.PFS_READ_WRITE)
    assert setup.pfs_write(fd, initial, len(initial), 0) == len(initial)
    assert setup.pfs_close(fd) == 0
    workers = [RemoteClient(cluster, cache_blocks=[0, 2, 5][k % 3]) for k in range(CLIENTS)]
    try:
        for k, worker in enumerate(workers):
            worker.send(helper, name, seed * 100 + k, OPS, *args)
        return [worker.receive(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            worker.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_racing_clients_stay_sequentially_consistent(cluster, clients, name, seed):
    initial = bytes((i * 31 + seed) % 251 for i in range(FILE_SIZE))
    setup = clients(1)
    histories = race(cluster, setup, name, seed, initial, "random_ops", FILE_SIZE,
                     WRITABLE_END, MAX_LEN)

    fd = setup.pfs_open(name, pfs.PFS_READ)
    final = bytearray(FILE_SIZE)
    assert setup.pfs_read(fd, final, FILE_SIZE, 0) == FILE_SIZE
    assert setup.pfs_close(fd) == 0

    ops = [Op(k, i, kind, offset, bytes.fromhex(data), start, end)
           for k, history in enumerate(histories)
           for i, (kind, offset, data, start, end) in enumerate(history)]
    for op in ops:  # the region nobody writes
        lo, hi = max(op.offset, WRITABLE_END), op.offset + len(op.data)
        if op.kind == "read" and lo < hi:
            assert op.data[lo - op.offset:] == initial[lo:hi]
    assert final[WRITABLE_END:] == initial[WRITABLE_END:]
    order = find_order(ops, initial, bytes(final))
    assert order is not None, "no total order of the operations explains what the reads saw"
    assert sum(op.kind == "write" for op in ops) > 0 and sum(op.kind == "read" for op in ops) > 0


GROW_INITIAL = 300        # a small file: its last block is partial, and the end moves a lot
GROW_MAX_LEN = 700        # operations span block and stripe-unit boundaries
# Appends stop there, so long runs keep the checker's states small (raise it to grow longer).
GROW_MAX_SIZE = int(os.environ.get("PFS_CONSISTENCY_MAX_SIZE", 16 * 512))


@pytest.mark.parametrize("seed", SEEDS)
def test_racing_clients_growing_file(cluster, clients, name, seed):
    initial = bytes((i * 37 + seed) % 253 for i in range(GROW_INITIAL))
    setup = clients(1)
    histories = race(cluster, setup, name, seed, initial, "random_growing_ops", GROW_MAX_LEN,
                     GROW_MAX_SIZE)

    fd = setup.pfs_open(name, pfs.PFS_READ)
    meta = pfs.Metadata()
    assert setup.pfs_fstat(fd, meta) == 0
    final = bytearray(meta.file_size + 1)
    assert setup.pfs_read(fd, final, len(final), 0) == meta.file_size
    assert setup.pfs_close(fd) == 0
    final = bytes(final[:meta.file_size])

    ops = [Op(k, i, kind, offset, bytes.fromhex(data), start, end, length=length, error=err)
           for k, history in enumerate(histories)
           for i, (kind, offset, length, data, err, start, end) in enumerate(history)]
    unexpected = [op for op in ops if op.error not in (0, errno.EINVAL)]
    assert not unexpected, f"calls failed other than with EINVAL: {unexpected[:5]}"
    order = find_order(ops, initial, final)
    assert order is not None, ("no total order of the operations explains what the reads, "
                               "failures and fstats saw")
    assert len(final) >= GROW_INITIAL
    assert any(op.kind == "write" and not op.error for op in ops)
    assert any(op.kind == "read" and not op.error for op in ops)
