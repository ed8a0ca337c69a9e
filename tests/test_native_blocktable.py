"""The C block table (csrc/blocktable.c, via pfs._native.BlockTable) driven by a state machine
against the OrderedDict reference: same keys, same LRU order, never more than capacity. The hit
path (read, write, evictable) is compared with the byte-by-byte reference slot for slot: the
reference is told which slot C picked for every insert, so their memory and flags line up."""
import array
import random
import threading
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

import pfs._native._core as core
from pfs._native import EEXIST, EINVAL, ENOENT, ENOSPC, ERANGE, BlockTable, NativeError
from pfs._native import reference as ref

U64 = 2**64 - 1
# A few files and blocks, so keys repeat; the extremes of uint64 too.
files = st.one_of(st.integers(0, 3), st.just(U64))
blocks = st.one_of(st.integers(0, 6), st.just(U64), st.integers(0, U64))


def outcome(fn, *args):
    try:
        return fn(*args)
    except NativeError as e:
        return ("error", e.code)


SENTINEL = 0xA5
U32 = 2**32 - 1
flag_values = st.sampled_from([0, 1, 1, 1, 255])  # nonzero, not only 1, means set


class Slots:
    """A cache's block memory and per-slot flags, in the types BlockTable's hit path takes."""

    def __init__(self, memory, ready, dirty):
        self.memory, self.ready, self.dirty = bytearray(memory), bytearray(ready), bytearray(dirty)

    def copy(self):
        return Slots(self.memory, self.ready, self.dirty)

    def state(self):
        return bytes(self.memory), bytes(self.ready), bytes(self.dirty)


class BlockTableMachine(RuleBasedStateMachine):
    @initialize(capacity=st.integers(1, 8), block_size=st.integers(1, 8), seed=st.integers())
    def make(self, capacity, block_size, seed):
        self.bt = BlockTable(capacity)
        self.ref = ref.BlockTable(capacity)
        self.slot_of = {}  # key -> the C table's slot
        self.block_size = block_size
        memory = random.Random(seed).randbytes(capacity * block_size)
        self.c = Slots(memory, [1] * capacity, [0] * capacity)
        self.r = self.c.copy()  # the reference's copy

    @rule(f=files, b=blocks)
    def insert(self, f, b):
        got = outcome(self.bt.insert, f, b)
        want = outcome(self.ref.insert, f, b, got if isinstance(got, int) else None)
        if isinstance(want, tuple):
            assert got == want
        else:
            assert isinstance(got, int) and got not in self.slot_of.values()
            self.slot_of[(f, b)] = got

    @rule(f=files, b=blocks, touch=st.booleans())
    def lookup(self, f, b, touch):
        got, want = self.bt.lookup(f, b, touch), self.ref.lookup(f, b, touch)
        assert (got is None) == (want is None)
        assert got == self.slot_of.get((f, b))

    @precondition(lambda self: self.slot_of)
    @rule(data=st.data())
    def lookup_present(self, data):
        key = data.draw(st.sampled_from(sorted(self.slot_of)))
        assert self.bt.lookup(*key) == self.slot_of[key]
        self.ref.lookup(*key)

    @rule(f=files, b=blocks)
    def remove(self, f, b):
        got, want = self.bt.remove(f, b), self.ref.remove(f, b)
        assert (got is None) == (want is None)
        assert got == self.slot_of.pop((f, b), None)

    @rule()
    def evict(self):
        slot, want = self.bt.lru(), self.ref.lru()
        assert (slot is None) == (want is None)
        if slot is not None:
            key = self.bt.key(slot)
            assert key == self.ref.key(want)
            assert self.bt.remove(*key) == slot
            self.ref.remove(*key)
            del self.slot_of[key]

    @rule(f=files)
    def file_slots(self, f):
        got = self.bt.file_slots(f)
        assert len(got) == len(set(got))
        assert set(got) == {s for k, s in self.slot_of.items() if k[0] == f}
        assert sorted(self.bt.key(s) for s in got) == \
            sorted(self.ref.key(s) for s in self.ref.file_slots(f))

    def _range(self, data):
        """A range over the first blocks of a file, so that some of it is cached."""
        f = data.draw(files)
        offset = data.draw(st.integers(0, 8 * self.block_size))
        return f, offset, data.draw(st.integers(0, 4 * self.block_size))

    @rule(data=st.data())
    def read(self, data):
        f, offset, length = self._range(data)
        dst_c, dst_r = bytearray([SENTINEL]) * (length + 1), bytearray([SENTINEL]) * (length + 1)
        got = self.bt.read(f, offset, length, self.c.memory, self.block_size, self.c.ready, dst_c)
        want = self.ref.read(f, offset, length, self.r.memory, self.block_size, self.r.ready,
                             dst_r)
        assert got == want and dst_c == dst_r

    @rule(data=st.data())
    def write(self, data):
        f, offset, length = self._range(data)
        src = data.draw(st.binary(min_size=length, max_size=length))
        c, r = self.c, self.r
        got = self.bt.write(f, offset, length, c.memory, self.block_size, c.ready, c.dirty, src)
        want = self.ref.write(f, offset, length, r.memory, self.block_size, r.ready, r.dirty, src)
        assert got == want

    @rule(data=st.data())
    def set_flags(self, data):
        slot = data.draw(st.integers(0, self.bt.capacity - 1))
        ready, dirty = data.draw(flag_values), data.draw(flag_values)
        for s in (self.c, self.r):
            s.ready[slot], s.dirty[slot] = ready, dirty

    @rule(data=st.data())
    def evictable(self, data):
        busy = bytearray(data.draw(st.lists(flag_values, min_size=self.bt.capacity,
                                            max_size=self.bt.capacity)))
        assert self.bt.evictable(busy) == self.ref.evictable(busy)

    @invariant()
    def agrees_with_reference(self):
        assert self.c.state() == self.r.state()
        assert len(self.bt) == len(self.ref) == len(self.slot_of) <= self.bt.capacity
        lru = self.bt.lru()
        assert (lru is None) == (self.ref.lru() is None)
        if lru is not None:
            assert self.bt.key(lru) == self.ref.key(self.ref.lru())
        for slot in range(self.bt.capacity):
            try:
                key = self.bt.key(slot)
            except NativeError as e:
                assert e.code == ENOENT and slot not in self.slot_of.values()
            else:
                assert self.slot_of[key] == slot


BlockTableMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40,
                                               deadline=None)
TestBlockTable = BlockTableMachine.TestCase


def test_full_table_and_bad_slots():
    bt = BlockTable(2)
    assert (bt.insert(7, 0), bt.insert(7, 1)) == (0, 1)
    with pytest.raises(NativeError) as err:
        bt.insert(7, 2)
    assert err.value.code == ENOSPC
    with pytest.raises(NativeError) as err:
        bt.insert(7, 1)
    assert err.value.code == EEXIST
    with pytest.raises(NativeError) as err:
        bt.key(2)
    assert err.value.code == EINVAL
    assert bt.lookup(7, 0) == 0 and bt.lru() == 1  # the lookup made block 0 the newest
    assert bt.lookup(7, 1, touch=False) == 1 and bt.lru() == 1
    assert bt.remove(7, 1) == 1
    with pytest.raises(NativeError) as err:
        bt.key(1)
    assert err.value.code == ENOENT


def test_capacity_limits_and_types():
    empty = BlockTable(0)
    assert len(empty) == 0 and empty.lru() is None and empty.file_slots(0) == []
    with pytest.raises(NativeError) as err:
        empty.insert(0, 0)
    assert err.value.code == ENOSPC
    for bad in (-1, 2**24 + 1):
        with pytest.raises(NativeError) as err:
            BlockTable(bad)
        assert err.value.code == ERANGE
    with pytest.raises(TypeError):
        BlockTable(4).lookup("1", 2)


def test_many_operations_against_reference():
    # A larger table than the state machine uses, so that hash chains get long.
    rng = random.Random(1234)
    bt, model = BlockTable(500), ref.BlockTable(500)
    for _ in range(20000):
        key = (rng.randrange(8), rng.randrange(400))
        op = rng.random()
        if op < 0.45:
            assert (bt.lookup(*key) is None) == (model.lookup(*key) is None)
        elif op < 0.8:
            if len(model) == model.capacity:
                victim = bt.key(bt.lru())
                assert victim == model.key(model.lru())
                bt.remove(*victim), model.remove(*victim)
            assert outcome(bt.insert, *key) == ("error", EEXIST) or model.lookup(*key) is None
            outcome(model.insert, *key)
        else:
            assert (bt.remove(*key) is None) == (model.remove(*key) is None)
        assert len(bt) == len(model)
    for f in range(8):
        assert sorted(bt.key(s) for s in bt.file_slots(f)) == \
            sorted(model.key(s) for s in model.file_slots(f))


def test_concurrent_use_keeps_the_table_consistent():
    bt = BlockTable(64)

    def worker(file_id):
        rng = random.Random(file_id)
        for _ in range(3000):
            block = rng.randrange(40)
            if bt.lookup(file_id, block) is None:
                try:
                    bt.insert(file_id, block)
                except NativeError:
                    victim = bt.lru()
                    if victim is not None:
                        try:
                            bt.remove(*bt.key(victim))
                        except NativeError:
                            pass  # another thread freed it first
            elif rng.random() < 0.3:
                bt.remove(file_id, block)

    threads = [threading.Thread(target=worker, args=(f,)) for f in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots = [s for f in range(4) for s in bt.file_slots(f)]
    assert len(slots) == len(set(slots)) == len(bt) <= 64
    assert all(bt.lookup(*bt.key(s), touch=False) == s for s in slots)


# --- the hit path: read, write, evictable against the reference ----------------------------------

@st.composite
def hit_scenarios(draw):
    """A table holding some of a range's blocks (and some other keys) in a random LRU order,
    random flags and block bytes, and the range: partial or whole first and last blocks, ends on
    block boundaries, length 0, block numbers near the top of uint64."""
    capacity = draw(st.integers(1, 8))
    B = draw(st.one_of(st.integers(1, 16), st.sampled_from([64, 4096])))
    f = draw(files)
    top = U64 // B  # the last block with a file byte
    first = draw(st.one_of(st.integers(0, 3), st.integers(max(0, top - 4), top)))
    nblocks = draw(st.integers(1, capacity + 1))
    offset = min(U64, first * B + draw(st.one_of(st.just(0), st.integers(0, B - 1))))
    if draw(st.booleans()):
        end = (first + nblocks) * B  # exactly at a block boundary
    else:
        end = offset + draw(st.integers(0, nblocks * B))
    length = min(max(end, offset), U64) - offset
    last = (offset + length - 1) // B if length else first
    # Most of the range's blocks, so that hits span blocks and misses fall in the middle; and
    # decoys: the blocks around the range, and the same blocks of another file.
    other = 0 if f == U64 else f + 1
    keys = [(f, b) for b in range(first, last + 1) if draw(st.integers(0, 4))]
    keys += [k for k in [(f, first - 1), (f, last + 1), (other, first), (other, last)]
             if 0 <= k[1] <= U64 and draw(st.booleans())]
    keys = draw(st.permutations(sorted(set(keys))))
    ops = [("insert", k) for k in keys]
    if keys:  # then a few touches, removes and re-inserts: other LRU orders and free slots
        ops += draw(st.lists(st.tuples(st.sampled_from(["touch", "remove", "insert"]),
                                       st.sampled_from(keys)), max_size=6))
    flags = st.lists(flag_values, min_size=capacity, max_size=capacity)
    return Scenario(
        capacity=capacity, block_size=B, file=f, offset=offset, length=length, ops=ops,
        extra=draw(st.integers(0, 3)), seed=draw(st.integers(0, U32)), ready=draw(flags),
        dirty=draw(flags), busy=draw(flags))


class Scenario(SimpleNamespace):
    """hit_scenarios' example: the bytes (block memory, src) come from `seed`, so that a failing
    example prints in a few lines. memory, src and dst are `extra` bytes longer than needed."""

    def __init__(self, **fields):
        super().__init__(**fields)
        rng = random.Random(self.seed)
        self.memory = rng.randbytes(self.capacity * self.block_size + self.extra)
        self.src = rng.randbytes(self.length + self.extra)
        self.dst_len = self.length + self.extra

    def __repr__(self):
        hidden = ("memory", "src", "dst_len")
        return "Scenario(" + ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                                       if k not in hidden) + ")"


def build(sc, model_cls=ref.BlockTable):
    """The scenario's C table and a model of it, with the same keys in the same slots."""
    bt, model = BlockTable(sc.capacity), model_cls(sc.capacity)
    for op, key in sc.ops:
        if op == "insert":
            got = outcome(bt.insert, *key)
            assert got == outcome(model.insert, *key, got if isinstance(got, int) else None)
        elif op == "touch":
            assert bt.lookup(*key) == model.lookup(*key)
        else:
            assert bt.remove(*key) == model.remove(*key)
    return bt, model


def drain(table):
    """(slot, key) oldest first, evicting everything: the whole LRU order."""
    order = []
    while (slot := table.lru()) is not None:
        order.append((slot, table.key(slot)))
        table.remove(*order[-1][1])
    return order


def compare(sc, model_cls=ref.BlockTable):
    """Runs read, then write, then evictable on the C table and the model; everything they
    return or change must agree, down to the LRU order."""
    bt, model = build(sc, model_cls)
    c = Slots(sc.memory, sc.ready, sc.dirty)
    r = c.copy()
    args = (sc.file, sc.offset, sc.length)
    dst_c, dst_r = bytearray([SENTINEL]) * sc.dst_len, bytearray([SENTINEL]) * sc.dst_len
    got = bt.read(*args, c.memory, sc.block_size, c.ready, dst_c)
    assert got == model.read(*args, r.memory, sc.block_size, r.ready, dst_r)
    assert dst_c == dst_r  # the copied bytes, and nothing past them
    assert 0 <= got[0] <= sc.length and got[1] <= sc.capacity
    got = bt.write(*args, c.memory, sc.block_size, c.ready, c.dirty, sc.src)
    assert got == model.write(*args, r.memory, sc.block_size, r.ready, r.dirty, sc.src)
    assert c.state() == r.state()
    busy = bytearray(sc.busy)
    assert bt.evictable(busy) == model.evictable(busy)
    assert drain(bt) == drain(model)
    return got


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hit_scenarios())
def test_read_write_evictable_match_reference(sc):
    compare(sc)


def test_scenarios_reach_the_interesting_cases():
    # The strategy above is only as good as what it generates: full hits over several blocks,
    # stops at a miss or a non-ready block part way, and length 0 must all come up.
    seen = set()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(hit_scenarios())
    def survey(sc):
        copied, blocks = compare(sc)
        if sc.length == 0:
            seen.add("empty")
        elif copied == sc.length and blocks > 1:
            seen.add("full multi-block")
        elif 0 < copied < sc.length:
            seen.add("partial")
        elif copied == 0:
            seen.add("miss")

    survey()
    assert seen == {"empty", "full multi-block", "partial", "miss"}


# Deliberately wrong references: each must be told apart from C by the comparison above.
class NoTouch(ref.BlockTable):
    def _touch(self, slots):
        pass


class TouchesBackwards(ref.BlockTable):
    def _touch(self, slots):
        super()._touch(slots[::-1])


class IgnoresReady(ref.BlockTable):
    def _hits(self, file_id, offset, length, block_size, ready):
        return super()._hits(file_id, offset, length, block_size, [1] * self.capacity)


class SkipsMisses(ref.BlockTable):
    """Carries on past a missing block instead of stopping."""

    def _hits(self, file_id, offset, length, block_size, ready):
        hits, slots = [], []
        for i in range(length):
            block, within = divmod(offset + i, block_size)
            slot = self._slots.get((file_id, block))
            if slot is not None and ready[slot]:
                hits.append((i, slot * block_size + within))
                if not slots or slots[-1] != slot:
                    slots.append(slot)
        return hits, slots


class DropsLastPartialBlock(ref.BlockTable):
    def _hits(self, file_id, offset, length, block_size, ready):
        end = offset + length
        if end % block_size and (end - 1) // block_size > offset // block_size:
            length -= end % block_size
        return super()._hits(file_id, offset, length, block_size, ready)


class EvictsBusy(ref.BlockTable):
    def evictable(self, busy):
        return self.lru()


@pytest.mark.parametrize("mutant", [NoTouch, TouchesBackwards, IgnoresReady, SkipsMisses,
                                    DropsLastPartialBlock, EvictsBusy])
def test_a_wrong_reference_is_caught(mutant):
    def disagrees(sc):
        try:
            compare(sc, mutant)
        except AssertionError:
            return True
        return False

    find(hit_scenarios(), disagrees,
         settings=settings(max_examples=2000, database=None, phases=[Phase.generate],
                           suppress_health_check=list(HealthCheck)))


def test_read_write_by_hand():
    # Blocks of 4: slot 0 = block 1, slot 1 = block 2, slot 2 = block 4 (block 3 missing).
    bt, B = BlockTable(4), 4
    assert [bt.insert(9, b) for b in (1, 2, 4)] == [0, 1, 2]
    memory = bytearray(b"AAAABBBBCCCCDDDD")
    ready, dirty = bytearray([1, 1, 1, 1]), bytearray(4)
    dst = bytearray(12)
    assert bt.read(9, 5, 10, memory, B, ready, dst) == (7, 2)  # stops at block 3
    assert dst == b"AAABBBB\0\0\0\0\0"
    assert bt.lru() == 2 and bt.evictable(bytearray([0, 0, 1, 0])) == 0
    assert bt.read(9, 8, 4, memory, B, ready, dst) == (4, 1)  # ends on a block boundary
    assert bt.evictable(bytearray([0, 0, 1, 0])) == 0 and bt.evictable(bytearray(4)) == 2
    assert bt.read(9, 0, 8, memory, B, ready, dst) == (0, 0)  # block 0 is not cached
    assert bt.read(9, 6, 0, memory, B, ready, dst) == (0, 0)
    ready[1] = 0  # block 2 being filled
    assert bt.write(9, 6, 6, memory, B, ready, dirty, b"xyzuvw") == (2, 1)
    assert memory == b"AAxyBBBBCCCCDDDD" and dirty == b"\1\0\0\0"
    ready[1] = 1
    assert bt.write(9, 6, 6, memory, B, ready, dirty, b"xyzuvw") == (6, 2)
    assert memory == b"AAxyzuvwCCCCDDDD" and dirty == b"\1\1\0\0"
    assert bt.evictable(bytearray([1, 1, 1, 1])) is None
    assert BlockTable(3).evictable(bytearray(3)) is None


def test_wrapper_rejects_bad_arguments_before_calling():
    bt, B = BlockTable(4), 8
    bt.insert(1, 0)
    memory, dst = bytearray(4 * B), bytearray(2 * B)
    ready, dirty = bytearray([1] * 4), bytearray(4)

    def code(fn, *args):
        with pytest.raises(NativeError) as err:
            fn(*args)
        return err.value.code

    assert code(bt.read, 1, 0, B, memory, 0, ready, dst) == EINVAL  # block_size 0
    assert code(bt.read, 1, 0, B, memory[:-1], B, ready, dst) == EINVAL  # memory short
    assert code(bt.read, 1, 0, 2 * B + 1, memory, B, ready, dst) == EINVAL  # dst short
    assert code(bt.read, 1, 0, B, memory, B, ready[:3], dst) == EINVAL  # ready short
    assert code(bt.read, 1, U64, 1, memory, B, ready, dst) == ERANGE  # past uint64
    assert code(bt.read, 1, -1, 1, memory, B, ready, dst) == ERANGE
    assert code(bt.write, 1, 0, B, memory, B, ready, dirty, dst[:B - 1]) == EINVAL
    assert code(bt.write, 1, 0, B, memory, B, ready, dirty[:3], dst) == EINVAL
    assert code(bt.write, 1, U64 - 3, 4, memory, B, ready, dirty, dst) == ERANGE
    assert code(bt.evictable, bytearray(3)) == EINVAL
    assert code(bt.read, 1, U64, 1, memory, B, ready[:3], dst) == EINVAL  # EINVAL before ERANGE
    with pytest.raises(TypeError):
        bt.read(1, 0, B, 12, B, ready, dst)
    with pytest.raises(TypeError):
        bt.read(1, "0", B, memory, B, ready, dst)
    with pytest.raises(TypeError):  # a flag array of wider items
        bt.read(1, 0, B, memory, B, array.array("I", [1] * 4), dst)
    with pytest.raises(TypeError):
        bt.write(1, 0, B, memory, B, ready, [0] * 4, dst)
    with pytest.raises(BufferError):  # read-only destination
        bt.read(1, 0, B, memory, B, ready, bytes(B))
    with pytest.raises(BufferError):  # read-only block memory for a write
        bt.write(1, 0, B, bytes(memory), B, ready, dirty, dst)
    with pytest.raises(BufferError):
        bt.write(1, 0, B, memory, B, ready, bytes(4), dst)
    # Nothing moved, nothing touched, nothing marked.
    assert dst == bytearray(2 * B) and dirty == bytearray(4)
    assert bt.read(1, 0, B, bytes(memory), B, bytes(ready), dst) == (B, 1)  # read-only is fine


def test_hit_path_remembers_the_last_buffer_of_each_argument():
    # The cache passes the same memory, ready, dirty and busy on every call: the table keeps the
    # view of the last buffer of each (so keeps it exported: not resizable) and reuses it while
    # the same object comes again; any other object, even an equal one, is converted afresh.
    bt, B = BlockTable(4), 4
    assert [bt.insert(1, b) for b in range(4)] == [0, 1, 2, 3]
    memory, dst = bytearray(b"AAAABBBBCCCCDDDD"), bytearray(16)
    ready, dirty, busy = bytearray([1] * 4), bytearray(4), bytearray([1, 0, 0, 0])
    for _ in range(2):  # first seen, then remembered
        assert bt.read(1, 0, 16, memory, B, ready, dst) == (16, 4) and dst == memory
        assert bt.write(1, 2, 4, memory, B, ready, dirty, b"wxyz") == (4, 2)
        assert bt.evictable(busy) == 2
    assert memory == b"AAwxyzBBCCCCDDDD" and dirty == b"\1\1\0\0"
    for buf in (memory, ready, dirty, busy):
        with pytest.raises(BufferError):
            buf.append(0)
    dst.append(0)  # the caller's dst and src are not kept
    del dst[16:]
    # Changes made through the caller's own reference are seen: the view is of the same bytes.
    ready[2], busy[2] = 0, 1
    assert bt.read(1, 0, 16, memory, B, ready, dst) == (8, 2)
    assert bt.evictable(busy) == 3
    # Equal copies are other buffers: written to, marked and consulted instead of the originals.
    memory2, ready2, dirty2, busy2 = (bytearray(b) for b in (memory, ready, dirty, busy))
    assert bt.write(1, 12, 4, memory2, B, ready2, dirty2, b"1234") == (4, 1)
    assert memory2 == b"AAwxyzBBCCCC1234" and dirty2 == b"\1\1\0\1"
    assert memory == b"AAwxyzBBCCCCDDDD" and dirty == b"\1\1\0\0"
    ready2[0], busy2[0] = 0, 0
    assert bt.read(1, 0, 4, memory2, B, ready2, dst) == (0, 0)
    assert bt.evictable(busy2) == 0
    for buf in (memory, ready, dirty, busy):  # released once replaced
        buf.append(0)
        del buf[-1]
    # Memory remembered from a read of a read-only buffer is not written through.
    frozen = bytes(memory2)
    assert bt.read(1, 12, 4, frozen, B, ready2, dst) == (4, 1) and dst[:4] == b"1234"
    with pytest.raises(BufferError):
        bt.write(1, 12, 4, frozen, B, ready2, dirty2, b"!!!!")
    assert frozen == memory2 and bt.read(1, 12, 4, frozen, B, ready2, dst) == (4, 1)
    # A buffer the caller let go stays alive while remembered, so no new buffer can take its id
    # and be taken for it: a short one is still refused.
    assert bt.read(1, 12, 4, memory2, B, bytearray([1] * 4), dst) == (4, 1)
    for _ in range(3):
        with pytest.raises(NativeError) as err:
            bt.read(1, 12, 4, memory2, B, bytearray(3), dst)
        assert err.value.code == EINVAL
    with pytest.raises(NativeError) as err:  # a memory too short for this block size
        bt.read(1, 12, 4, memory2, B + 1, ready2, dst)
    assert err.value.code == EINVAL


def test_numpy_buffers():
    np = pytest.importorskip("numpy")
    bt, B = BlockTable(4), 16
    for b in range(4):
        bt.insert(3, b)
    memory = np.arange(4 * B // 8, dtype=np.float64)  # any dtype: it is bytes to the table
    ready = np.ones(4, dtype=np.uint8)
    dst = np.zeros(4 * B, dtype=np.uint8)
    assert bt.read(3, 0, 4 * B, memory, B, ready, dst) == (4 * B, 4)
    assert dst.tobytes() == memory.tobytes()
    dirty = np.zeros(4, dtype=np.bool_)
    assert bt.write(3, 8, B, memory, B, ready, dirty, np.full(B, 7, np.uint8)) == (B, 2)
    assert dirty.tolist() == [True, True, False, False]
    with pytest.raises(TypeError):  # a flag array of wider items
        bt.write(3, 0, 1, memory, B, ready, np.zeros(4, np.uint16), b"x")
    with pytest.raises((BufferError, ValueError)):  # non-contiguous: refused, never copied
        bt.read(3, 0, B, memory, B, ready, np.zeros(2 * B, np.uint8)[::2])


# --- the C entry points' own checks, past the wrapper --------------------------------------------

class CCall:
    """A direct pfs_bt_read/pfs_bt_write/pfs_bt_evictable call on a table of 4 slots of 8 bytes
    holding blocks 0..2 of file 1, with every argument open to damage."""

    B = 8

    def __init__(self):
        ffi, lib = core.ffi, core.lib
        self.bt = ffi.gc(lib.pfs_bt_new(4), lib.pfs_bt_free)
        for b in range(3):
            assert lib.pfs_bt_insert(self.bt, 1, b) == b
        self.args = dict(bt=self.bt, file=1, offset=3, length=16,
                         memory=ffi.new("uint8_t[]", bytes(range(32))), memory_len=32,
                         block_size=self.B, ready=ffi.new("uint8_t[]", [1, 1, 1, 1]),
                         dirty=ffi.new("uint8_t[]", 4),
                         buf=ffi.new("uint8_t[]", [SENTINEL] * 16), buf_len=16,
                         blocks=ffi.new("uint32_t *", 99))

    def read(self):
        a = self.args
        return core.lib.pfs_bt_read(a["bt"], a["file"], a["offset"], a["length"], a["memory"],
                                    a["memory_len"], a["block_size"], a["ready"], a["buf"],
                                    a["buf_len"], a["blocks"])

    def write(self):
        a = self.args
        return core.lib.pfs_bt_write(a["bt"], a["file"], a["offset"], a["length"], a["memory"],
                                     a["memory_len"], a["block_size"], a["ready"], a["dirty"],
                                     a["buf"], a["buf_len"], a["blocks"])

    def snapshot(self):
        ffi, a = core.ffi, self.args
        bufs = [a[k] for k in ("memory", "ready", "dirty", "buf", "blocks")
                if a[k] != ffi.NULL]
        return [bytes(ffi.buffer(b)) for b in bufs], core.lib.pfs_bt_lru(self.bt)


SIZE_MAX = 2**64 - 1
DAMAGES = {  # argument -> (bad value, code)
    "null_bt": ("bt", "NULL", EINVAL),
    "null_memory": ("memory", "NULL", EINVAL),
    "null_ready": ("ready", "NULL", EINVAL),
    "null_buf": ("buf", "NULL", EINVAL),
    "null_blocks": ("blocks", "NULL", EINVAL),
    "block_size_0": ("block_size", 0, EINVAL),
    "memory_short": ("memory_len", 31, EINVAL),
    "buf_short": ("buf_len", 15, EINVAL),
    # 4 slots of 2**62 + 1 bytes: a product that wraps to below memory_len if computed
    "memory_product_wraps": ("block_size", 2**62 + 1, EINVAL),
    "range_past_uint64": ("offset", U64 - 15, ERANGE),
    "length_past_int64": ("length", 2**63, ERANGE),
}


WRITE_DAMAGES = {"null_dirty": ("dirty", "NULL", EINVAL)}


@pytest.mark.parametrize("direction, damage",
                         [(d, k) for d in ("read", "write") for k in sorted(DAMAGES)]
                         + [("write", k) for k in sorted(WRITE_DAMAGES)])
def test_c_rejects_bad_arguments_without_effect(direction, damage):
    call = CCall()
    name, value, expected = {**DAMAGES, **WRITE_DAMAGES}[damage]
    call.args[name] = core.ffi.NULL if value == "NULL" else value
    if damage == "memory_product_wraps":
        call.args["memory_len"] = SIZE_MAX
    if damage == "length_past_int64":
        call.args["buf_len"] = SIZE_MAX  # a lie C must not act on: it stops at ERANGE first
    before = call.snapshot()
    assert getattr(call, direction)() == expected
    assert call.snapshot() == before  # no byte, flag, count or LRU position changed


def test_c_happy_call_and_evictable_checks():
    call = CCall()
    assert call.read() == 16 and call.args["blocks"][0] == 3  # 5 + 8 + 3 bytes
    assert bytes(core.ffi.buffer(call.args["buf"])) == bytes(range(3, 19))
    assert call.write() == 16 and list(call.args["dirty"]) == [1, 1, 1, 0]
    call.args["length"] = 0
    assert call.read() == 0 and call.args["blocks"][0] == 0
    ffi, lib = core.ffi, core.lib
    busy = ffi.new("uint8_t[]", [1, 0, 0, 0])
    assert lib.pfs_bt_evictable(call.bt, busy) == 1
    assert lib.pfs_bt_evictable(ffi.NULL, busy) == EINVAL
    assert lib.pfs_bt_evictable(call.bt, ffi.NULL) == EINVAL


def test_concurrent_hits_keep_table_and_flags_consistent():
    # Threads read and write their own file's blocks through one table at once (the C calls run
    # without the GIL, serialized by the table's lock), while another thread touches and asks
    # for eviction candidates. Each thread passes its own ready and dirty arrays, ready only for
    # its own slots, so that the table's remembered views change hands all the time: a call
    # given another thread's view would stop short or mark the wrong array. Each thread's bytes
    # stay its own.
    B, per, nthreads, rounds = 32, 4, 4, 1500
    cap = per * nthreads
    bt = BlockTable(cap)
    memory = bytearray(cap * B)
    for f in range(nthreads):
        for b in range(per):
            bt.insert(f, b)
    mine = [set(bt.file_slots(f)) for f in range(nthreads)]
    readies = [bytearray(s in mine[f] for s in range(cap)) for f in range(nthreads)]
    dirties = [bytearray(cap) for _ in range(nthreads)]
    stop = threading.Event()
    errors, written = [], [set() for _ in range(nthreads)]

    def worker(f):
        rng = random.Random(f)
        ready, dirty = readies[f], dirties[f]
        expected = bytearray(per * B)
        dst = bytearray(per * B)
        for _ in range(rounds):
            off = rng.randrange(per * B)
            n = rng.randrange(per * B - off + 1)
            if rng.random() < 0.5:
                src = rng.randbytes(n)
                got = bt.write(f, off, n, memory, B, ready, dirty, src)
                expected[off:off + n] = src
                for b in range(off // B, (off + n - 1) // B + 1) if n else ():
                    written[f].add(bt.lookup(f, b, touch=False))
            else:
                got = bt.read(f, off, n, memory, B, ready, dst)
                if dst[:n] != expected[off:off + n]:
                    errors.append((f, off, n))
            if got[0] != n:
                errors.append(("short", f, off, n, got))

    def toucher():
        rng = random.Random(99)
        while not stop.is_set():
            bt.lookup(rng.randrange(nthreads), rng.randrange(per))
            bt.evictable(bytearray(rng.choices([0, 1], k=cap)))

    side = threading.Thread(target=toucher)
    threads = [threading.Thread(target=worker, args=(f,)) for f in range(nthreads)]
    side.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    side.join()
    assert errors == []
    for f in range(nthreads):
        assert [s for s in range(cap) if dirties[f][s]] == sorted(written[f])
    assert sorted(key for _, key in drain(bt)) == [(f, b) for f in range(nthreads)
                                                   for b in range(per)]
