"""The consistency checker itself: it accepts consistent histories and rejects broken ones."""
import errno

import pytest

from consistency import Op, find_order


def w(client, index, offset, data, start, end):
    return Op(client, index, "write", offset, data, start, end)


def r(client, index, offset, data, start, end):
    return Op(client, index, "read", offset, data, start, end)


INITIAL = bytes(4)


def test_sequential_history_is_explained():
    ops = [w(0, 0, 0, b"aa", 0, 10), r(1, 0, 0, b"aa\0\0", 20, 30), w(1, 1, 2, b"bb", 40, 50)]
    assert find_order(ops, INITIAL, b"aabb") == ops


def test_concurrent_operations_may_be_ordered_either_way():
    # The read overlaps the write in time: seeing either the old or the new bytes is fine.
    for seen in (b"\0\0\0\0", b"xx\0\0"):
        ops = [w(0, 0, 0, b"xx", 0, 100), r(1, 0, 0, seen, 10, 90)]
        assert find_order(ops, INITIAL, b"xx\0\0") is not None


def test_stale_read_is_rejected():
    """A read that starts after a write finished must not see the bytes from before it (what a
    stale cached block would return)."""
    ops = [w(0, 0, 0, b"xx", 0, 10), r(1, 0, 0, b"\0\0\0\0", 20, 30)]
    assert find_order(ops, INITIAL, b"xx\0\0") is None


def test_torn_read_is_rejected():
    """A read that sees half of one write and half of another, each covering both halves."""
    ops = [w(0, 0, 0, b"aaaa", 0, 100), w(1, 0, 0, b"bbbb", 0, 100),
           r(2, 0, 0, b"aabb", 0, 100)]
    assert find_order(ops, INITIAL, b"bbbb") is None


def test_lost_write_is_rejected():
    """The final file must hold the last write: not an earlier one."""
    ops = [w(0, 0, 0, b"aa", 0, 10), w(1, 0, 0, b"bb", 20, 30)]
    assert find_order(ops, INITIAL, b"aa\0\0") is None


def test_program_order_is_respected():
    """A client's read after its own write sees it (or something later), even concurrently."""
    ops = [w(0, 0, 0, b"zz", 0, 10), r(0, 1, 0, b"\0\0\0\0", 11, 20)]
    assert find_order(ops, INITIAL, b"zz\0\0") is None


# --- files that grow --------------------------------------------------------------------------
EINVAL = errno.EINVAL
ABCD = b"abcd"  # a 4-byte file


def rd(client, index, offset, length, data, start, end, error=0):
    """A read of `length` bytes that returned `data` (short near the end), or failed."""
    return Op(client, index, "read", offset, data, start, end, length=length, error=error)


def wr(client, index, offset, data, start, end, error=0):
    return Op(client, index, "write", offset, data, start, end, error=error)


def st(client, index, size, start, end):
    return Op(client, index, "fstat", 0, b"", start, end, length=size)


def test_append_then_read_past_the_old_end_is_explained():
    ops = [wr(0, 0, 4, b"ef", 0, 10), rd(1, 0, 2, 10, b"cdef", 20, 30), st(1, 1, 6, 40, 50)]
    assert find_order(ops, ABCD, b"abcdef") == ops


def test_read_that_misses_a_finished_append_is_rejected():
    """The append finished before the read began: a read stopping at the old end is stale."""
    ops = [wr(0, 0, 4, b"ef", 0, 10), rd(1, 0, 2, 10, b"cd", 20, 30)]
    assert find_order(ops, ABCD, b"abcdef") is None
    ops = [wr(0, 0, 4, b"ef", 0, 10), rd(1, 0, 4, 10, b"", 20, 30)]  # 0 bytes: "at EOF"
    assert find_order(ops, ABCD, b"abcdef") is None


def test_short_read_at_the_end_consistent_with_the_order_is_accepted():
    # Concurrent with the append: the read may end at the old or at the new end.
    for seen in (b"cd", b"cdef"):
        ops = [wr(0, 0, 4, b"ef", 0, 100), rd(1, 0, 2, 10, seen, 10, 90)]
        assert find_order(ops, ABCD, b"abcdef") is not None
    for seen in (b"", b"ef"):  # a read starting exactly at the old end
        ops = [wr(0, 0, 4, b"ef", 0, 100), rd(1, 0, 4, 10, seen, 10, 90)]
        assert find_order(ops, ABCD, b"abcdef") is not None


def test_short_read_must_stop_at_the_end():
    """A read may not come back shorter than the file allows, nor with bytes past the end."""
    assert find_order([rd(0, 0, 1, 10, b"bc", 0, 10)], ABCD, ABCD) is None
    assert find_order([rd(0, 0, 1, 10, b"bcd\0", 0, 10)], ABCD, ABCD) is None
    assert find_order([rd(0, 0, 1, 10, b"bcd", 0, 10)], ABCD, ABCD) is not None


def test_einval_after_the_file_grew_past_the_offset_is_rejected():
    """The file had already grown past offset 6 when this write began: EINVAL is wrong."""
    ops = [wr(0, 0, 4, b"xxxx", 0, 10), wr(1, 0, 6, b"yy", 20, 30, error=EINVAL)]
    assert find_order(ops, ABCD, b"abcdxxxx") is None
    ops = [wr(0, 0, 4, b"xxxx", 0, 10), rd(1, 0, 6, 1, b"", 20, 30, error=EINVAL)]
    assert find_order(ops, ABCD, b"abcdxxxx") is None


def test_einval_before_the_file_grew_is_accepted():
    # Concurrent with the append, the failed write may come before it; the file keeps the append.
    ops = [wr(0, 0, 4, b"xxxx", 0, 100), wr(1, 0, 6, b"yy", 10, 90, error=EINVAL)]
    assert find_order(ops, ABCD, b"abcdxxxx") is not None
    # And a failure is no write: the final file may not hold its bytes.
    assert find_order(ops, ABCD, b"abcdxxyy") is None
    # Sequentially: the failed read before the append, a good one after.
    ops = [rd(1, 0, 5, 1, b"", 0, 10, error=EINVAL), wr(0, 0, 4, b"xxxx", 20, 30),
           rd(1, 1, 5, 1, b"x", 40, 50)]
    assert find_order(ops, ABCD, b"abcdxxxx") == ops


def test_write_beyond_the_end_is_rejected():
    """No holes: a write at an offset beyond the end cannot have succeeded."""
    assert find_order([wr(0, 0, 5, b"z", 0, 10)], ABCD, b"abcd\0z") is None
    assert find_order([wr(0, 0, 5, b"z", 0, 10, error=EINVAL)], ABCD, ABCD) is not None


def test_stale_append_lands_inside_the_file():
    """An append at a stale end overwrites the other client's appended bytes."""
    ops = [wr(0, 0, 4, b"ef", 0, 10), wr(1, 0, 4, b"XYZ", 20, 30)]
    assert find_order(ops, ABCD, b"abcdXYZ") is not None
    assert find_order(ops, ABCD, b"abcdefZ") is None  # the later write won


def test_final_size_must_match():
    """A lost append: the final file is shorter than the last writes left it."""
    ops = [wr(0, 0, 4, b"ef", 0, 10), wr(1, 0, 6, b"gh", 20, 30)]
    assert find_order(ops, ABCD, b"abcdefgh") is not None
    assert find_order(ops, ABCD, b"abcdef") is None


def test_fstat_must_report_a_size_the_file_had_during_the_call():
    ops = [wr(0, 0, 4, b"ef", 0, 10), st(1, 0, 4, 20, 30)]
    assert find_order(ops, ABCD, b"abcdef") is None
    ops = [wr(0, 0, 4, b"ef", 0, 100), st(1, 0, 4, 10, 30)]
    assert find_order(ops, ABCD, b"abcdef") is not None
    assert find_order([st(0, 0, 5, 0, 10)], ABCD, ABCD) is None


def test_errors_other_than_einval_are_not_explained():
    with pytest.raises(ValueError):
        find_order([wr(0, 0, 0, b"a", 0, 10, error=errno.EIO)], ABCD, ABCD)


def _simulated_history(seed, clients=5, per_client=200):
    """A history that is linearizable by construction: each operation takes effect at a random
    instant inside its own [start, end), and operations of one client do not overlap."""
    import random
    rng = random.Random(seed)
    state, ops = bytearray(b"0123456789" * 30), []
    initial = bytes(state)
    clock = [0] * clients
    points = []  # (instant, client, index, start, end)
    for c in range(clients):
        for i in range(per_client):
            start = clock[c] + rng.randint(0, 50)
            end = start + rng.randint(1, 400)
            points.append((rng.randint(start, end - 1), c, i, start, end))
            clock[c] = end
    for _, c, i, start, end in sorted(points):
        offset, length, dice = rng.randint(0, len(state) + 40), rng.randint(1, 120), rng.random()
        if dice < 0.1:
            ops.append(st(c, i, len(state), start, end))
        elif offset > len(state):
            ops.append(Op(c, i, "read" if dice < 0.5 else "write", offset, b"", start, end,
                          length=length, error=EINVAL))
        elif dice < 0.55:
            ops.append(rd(c, i, offset, length, bytes(state[offset:offset + length]), start, end))
        else:
            data = bytes(rng.randrange(256) for _ in range(length))
            state[offset:offset + length] = data
            ops.append(wr(c, i, offset, data, start, end))
    return ops, initial, bytes(state)


def test_long_histories_of_many_clients_are_checked_quickly():
    """1000 overlapping operations of 5 clients on a growing file (reads, writes, fstats and
    EINVAL failures): accepted, and one read that lost its last byte rejected, in seconds."""
    import dataclasses
    import time
    for seed in (1, 2):
        ops, initial, final = _simulated_history(seed)
        began = time.monotonic()
        assert find_order(ops, initial, final) is not None
        read = next(op for op in ops[len(ops) // 2:] if op.kind == "read" and len(op.data) > 1)
        bad = [dataclasses.replace(op, data=op.data[:-1]) if op is read else op for op in ops]
        assert find_order(bad, initial, final) is None
        assert time.monotonic() - began < 20
