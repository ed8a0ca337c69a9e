"""The consistency checker itself: it accepts consistent histories and rejects broken ones."""
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
