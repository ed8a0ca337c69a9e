"""The C fast path (csrc/fastread.c, via pfs._native.FastReads) against its reference
(pfs/_native/reference.py FastReads): random sequences of fd snapshots, lease deadlines, block
table changes and reads, with the same results, bytes, hit counts and LRU order."""
import random

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from pfs._native import EINVAL, EMISS, BlockTable, FastReads, NativeError
from pfs._native import reference as ref
from pfs._native._core import ffi, lib
from pfs._native.fastread import SLOTS

U64 = 2**64 - 1
FDS = [0, 1, 2, SLOTS + 1, -1]  # SLOTS + 1 shares fd 1's place
FILES = [0, 1, 1, U64]
offsets = st.one_of(st.integers(0, 25), st.integers(0, 25), st.just(U64), st.integers(0, U64))
ops = st.one_of(
    st.tuples(st.just("allow"), st.sampled_from(FDS), st.sampled_from(FILES),
              st.integers(0, 48), st.integers(0, 10), st.integers(0, 48), st.integers(0, 48)),
    st.tuples(st.just("deny"), st.sampled_from(FDS)),
    st.tuples(st.just("deny_all")),
    st.tuples(st.just("lease"), st.integers(0, 20)),
    st.tuples(st.just("insert"), st.sampled_from(FILES), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(FILES), st.integers(0, 5)),
    st.tuples(st.just("ready"), st.integers(0, 5), st.booleans()),
)
reads = st.tuples(st.just("read"), st.integers(0, 20), st.sampled_from([1, 1, 1, *FDS]),
                  offsets, st.integers(0, 12), st.sampled_from([0, 0, 0, 1, 3]))
ops = st.one_of(ops, reads, reads)  # mostly reads, of fd 1, into a buffer long enough


def c_read(fast, now, fd, offset, length, dst):
    return lib.pfs_fr_read_at(fast._fr, now, fd, offset, length,
                              ffi.from_buffer("uint8_t[]", dst, True), len(dst))


def outcome(fn, *args):
    try:
        return fn(*args)
    except NativeError as e:
        return ("error", e.code)


class Pair:
    """A C fast path and its reference over block tables of 6 slots of 5-byte blocks."""

    def __init__(self, seed):
        self.B, capacity = 5, 6
        self.memory = bytearray(random.Random(seed).randbytes(capacity * self.B))
        self.c_ready, self.r_ready = bytearray(capacity), bytearray(capacity)
        self.table, self.rtable = BlockTable(capacity), ref.BlockTable(capacity)
        self.c = FastReads(self.table, self.memory, self.B, self.c_ready)
        self.r = ref.FastReads(self.rtable, self.memory, self.B, self.r_ready, SLOTS)

    def apply(self, op):
        kind, args = op[0], op[1:]
        if kind == "allow":
            fd, file_id, size, start, end, read_next = args
            assert outcome(self.c.allow, *args) == outcome(self.r.allow, *args)
        elif kind == "deny":
            assert self.c.deny(*args) == self.r.deny(*args)
        elif kind == "deny_all":
            self.c.deny_all()
            self.r.deny_all()
        elif kind == "lease":
            self.c.lease(*args)
            self.r.lease(*args)
        elif kind == "insert":
            *key, ready = args
            slot = outcome(self.table.insert, *key)
            if isinstance(slot, tuple):  # EEXIST or ENOSPC
                assert outcome(self.rtable.insert, *key) == slot
            else:  # the reference takes the slot C took
                assert self.rtable.insert(*key, slot) == slot
                self.c_ready[slot] = self.r_ready[slot] = ready
        elif kind == "remove":
            assert self.table.remove(*args) == self.rtable.remove(*args)
        elif kind == "ready":
            slot, value = args
            self.c_ready[slot] = self.r_ready[slot] = value
        else:
            now, fd, offset, length, short = args
            size = max(0, length - short)
            c_dst, r_dst = bytearray(b"\xa5" * size), bytearray(b"\xa5" * size)
            got = outcome(c_read, self.c, now, fd, offset, length, c_dst)
            assert got == outcome(self.r.read_at, now, fd, offset, length, r_dst), op
            assert c_dst == r_dst
        assert self.table.lru() == self.rtable.lru()
        assert len(self.table) == len(self.rtable)

    def lru_order(self, table):
        order = []
        while (slot := table.lru()) is not None:
            order.append(slot)
            table.remove(*table.key(slot))
        return order


# Every sequence starts from fd 1 allowed on file 1, whose blocks 0-4 are cached and ready, and
# a lease deadline of 20: the random operations then take that apart while reads go on.
START = [("allow", 1, 1, 48, 0, 48, 48), ("lease", 20)] + [("insert", 1, b, True)
                                                           for b in range(5)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(), st.lists(ops, max_size=60))
def test_fast_path_matches_reference(seed, sequence):
    pair = Pair(seed)
    for op in START + sequence:
        pair.apply(op)
    assert pair.c.take_hits() == pair.r.take_hits()
    assert pair.lru_order(pair.table) == pair.lru_order(pair.rtable)


def test_a_hit_by_hand_then_each_reason_to_miss():
    pair = Pair(1)
    for block in range(3):
        assert pair.table.insert(7, block) == block
        pair.c_ready[block] = 1
    fast, B = pair.c, pair.B
    fast.allow(3, 7, 14, 0, 15, 99)
    fast.lease(100)
    dst = bytearray(6)
    assert c_read(fast, 50, 3, 2, 6, dst) == 6
    assert dst == pair.memory[2:8]
    assert fast.take_hits() == 2 and pair.table.lru() == 2  # blocks 0, 1 touched
    assert c_read(fast, 50, 3, 8, 6, dst) == EMISS  # sequential: read-ahead is the caller's
    assert c_read(fast, 50, 3, 9, 6, dst) == EMISS  # past the size (14)
    assert c_read(fast, 100, 3, 0, 4, dst) == EMISS  # the lease ran out
    assert c_read(fast, 50, 4, 0, 4, dst) == EMISS  # no entry
    assert c_read(fast, 50, 3, 0, 0, dst) == EMISS  # nothing to read: the general path
    pair.c_ready[1] = 0
    assert c_read(fast, 50, 3, 3, 4, dst) == EMISS  # block 1 not ready
    pair.c_ready[1] = 1
    pair.table.remove(7, 2)
    assert c_read(fast, 50, 3, 9, 4, dst) == EMISS  # block 2 evicted
    assert fast.take_hits() == 0
    assert c_read(fast, 50, 3, 0, 7, bytearray(6)) == EINVAL  # dst too short
    assert fast.deny(3) == 8 and fast.deny(3) is None
    assert c_read(fast, 50, 3, 0, 4, dst) == EMISS
    with pytest.raises(NativeError):
        fast.allow(-1, 7, 14, 0, 15, 0)
    assert B == 5


def test_read_wrapper_sends_odd_arguments_the_general_way():
    pair = Pair(2)
    pair.table.insert(7, 0)
    pair.c_ready[0] = 1
    pair.c.allow(1, 7, 5, 0, 5, 99)
    pair.c.lease(2**62)
    buf = bytearray(4)
    assert pair.c.read(1, buf, 4, 0) == 4 and buf == pair.memory[:4]
    for fd, dst, length, offset in [(True, buf, 4, 1), (1, buf, True, 1), (1, buf, 4, 1.0),
                                    (1, bytes(4), 4, 1), (1, "abcd", 4, 1), (1, buf, 4, -1),
                                    (1, buf, -4, 1), (1, buf, 5, 0), (2**64, buf, 4, 1)]:
        assert pair.c.read(fd, dst, length, offset) == -1
    assert pair.c.take_hits() == 1


def test_construction_checks_sizes():
    table = BlockTable(4)
    with pytest.raises(ValueError):
        FastReads(table, bytearray(4 * 8 - 1), 8, bytearray(4))
    with pytest.raises(ValueError):
        FastReads(table, bytearray(4 * 8), 8, bytearray(3))
    with pytest.raises(ValueError):
        FastReads(table, bytearray(4 * 8), 0, bytearray(4))
    assert lib.pfs_fr_new(ffi.NULL, ffi.NULL, 0, 1, ffi.NULL, 0, 1) == ffi.NULL


@pytest.mark.parametrize("after", ["nothing", "deny", "lease", "remove", "ready"])
def test_sequences_reach_hits_and_misses(after):
    """The random sequences above reach reads the fast path serves, in sequences that also
    take fds off it, change the lease, and evict or unready blocks."""
    def served(case):
        pair = Pair(case[0])
        for op in START + case[1]:
            pair.apply(op)
        kinds = [op[0] for op in case[1]]
        return pair.c.take_hits() > 0 and (after == "nothing" or after in kinds)
    find(st.tuples(st.integers(), st.lists(ops, max_size=60)), served,
         settings=settings(max_examples=1000, deadline=None, database=None,
                           suppress_health_check=list(HealthCheck)))
