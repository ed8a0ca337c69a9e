"""The C block table (csrc/blocktable.c, via pfs._native.BlockTable) driven by a state machine
against the OrderedDict reference: same keys, same LRU order, never more than capacity."""
import random
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

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


class BlockTableMachine(RuleBasedStateMachine):
    @initialize(capacity=st.integers(1, 8))
    def make(self, capacity):
        self.bt = BlockTable(capacity)
        self.ref = ref.BlockTable(capacity)
        self.slot_of = {}  # key -> the C table's slot

    @rule(f=files, b=blocks)
    def insert(self, f, b):
        got, want = outcome(self.bt.insert, f, b), outcome(self.ref.insert, f, b)
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

    @invariant()
    def agrees_with_reference(self):
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
