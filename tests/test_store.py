"""A fileserver's stripe storage and the checksums kept beside each object (README, "Copies and
checksums"): whatever sequence of writes, partial or out of order, and truncates an object
sees, every unit read back passes its checksum and holds the bytes last written; bytes damaged
on disk, or never written, never pass; a piece damaged on the way is refused and stores
nothing."""
import os
import pathlib
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from pfs.protocol import checksums, wire
from pfs_servers.fileserver.store import Corrupt, StripeStore

UNIT = wire.CHECKSUM_UNIT


def write(store: StripeStore, offset: int, data: bytes, file_id: int = 1) -> None:
    """Stores `data` with the CRCs a writing client computes (parsed back as a fileserver
    receives them)."""
    _, _, crcs, payload = wire.parse_write(wire.write_request(file_id, offset, data))
    store.write(file_id, offset, crcs, payload)


def read_checked(store: StripeStore, offset: int, length: int, file_id: int = 1) -> bytes:
    """What a reading client takes from a read: every unit checked first."""
    start, crcs, data = store.read(file_id, offset, length)
    assert checksums.first_bad(memoryview(data), crcs) is None, "a unit fails its checksum"
    return bytes(data[offset - start:offset - start + length])


def object_path(store: StripeStore, file_id: int = 1) -> pathlib.Path:
    return store.objects / f"{file_id % 256:02x}" / str(file_id)


@pytest.fixture
def store(tmp_path):
    return StripeStore(tmp_path)


operations = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 5 * UNIT), st.binary(min_size=1, max_size=3 * UNIT)),
    st.tuples(st.just("truncate"), st.integers(0, 6 * UNIT), st.just(b""))), max_size=12)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_every_unit_read_back_passes_its_checksum_and_holds_the_last_write(ops):
    with tempfile.TemporaryDirectory() as tmp:
        store = StripeStore(pathlib.Path(tmp))
        model = bytearray()
        for kind, offset, data in ops:
            if kind == "write":
                offset = min(offset, len(model))  # files have no holes: writes start within
                write(store, offset, data)
                model[offset:offset + len(data)] = data
            else:
                store.truncate(1, offset, offset)
                model = model[:offset] + bytes(max(0, offset - len(model)))
        assert store.length(1) == len(model)
        if model:
            assert read_checked(store, 0, len(model)) == bytes(model)


def test_writes_that_land_out_of_order_leave_every_unit_checked(store):
    data = os.urandom(3 * UNIT)
    write(store, 2 * UNIT + 100, data[2 * UNIT + 100:])  # the end first, past a hole
    write(store, 100, data[100:2 * UNIT + 100])  # then the middle, partial units at both ends
    write(store, 0, data[:100])
    assert read_checked(store, 0, len(data)) == data


def test_a_flipped_byte_on_disk_fails_its_unit_only(store):
    data = os.urandom(3 * UNIT)
    write(store, 0, data)
    with open(object_path(store), "r+b") as f:
        f.seek(UNIT + 1)
        f.write(bytes([data[UNIT + 1] ^ 1]))
    start, crcs, got = store.read(1, 0, len(data))
    assert checksums.first_bad(memoryview(got), crcs) == 1
    assert read_checked(store, 2 * UNIT, UNIT) == data[2 * UNIT:]
    with pytest.raises(Corrupt, match="damaged"):  # merging into it would bless the damage
        write(store, UNIT + 10, b"x")


def test_bytes_with_their_checksums_lost_never_pass_for_zeros(store):
    """A copy that lost its data and then took a write further on holds a hole before it: it
    reads as zeros, and must fail."""
    write(store, 5 * UNIT, b"later bytes")
    start, crcs, got = store.read(1, 0, UNIT)
    assert got == bytes(UNIT) and checksums.first_bad(memoryview(got), crcs) == 0


def test_a_piece_damaged_on_the_way_is_refused_and_nothing_is_stored(store):
    write(store, 0, b"a" * 100)
    request = bytearray(wire.write_request(1, 50, b"b" * 10))
    request[-1] ^= 1  # a bit flipped in transit, after the client computed the CRC
    _, _, crcs, payload = wire.parse_write(bytes(request))
    with pytest.raises(Corrupt, match="damaged on the way"):
        store.write(1, 50, crcs, payload)
    assert read_checked(store, 0, 100) == b"a" * 100


def test_truncate_extends_with_zeros_that_pass_and_cuts_units_cleanly(store):
    data = os.urandom(UNIT + 300)
    write(store, 0, data)
    store.truncate(1, UNIT + 100, UNIT + 100)  # cut inside a unit
    store.truncate(1, 4 * UNIT + 7, UNIT + 100)  # extended with zeros
    assert read_checked(store, 0, 4 * UNIT + 7) == data[:UNIT + 100] + bytes(3 * UNIT - 93)


def test_a_huge_truncate_costs_no_more_than_a_small_one(store):
    """Zeros a truncate adds pass their checks without a checksum written for each unit."""
    write(store, 0, b"head")
    store.truncate(1, 1 << 40, 4)
    crc_file = pathlib.Path(str(object_path(store)) + ".crc")
    assert crc_file.stat().st_blocks * 512 <= 64 * 1024  # not 1 GiB of checksums
    assert read_checked(store, (1 << 39) + 5, 100) == bytes(100)
    write(store, (1 << 39) + 10, b"middle")  # a partial unit of the zeros
    assert read_checked(store, (1 << 39), 20) == bytes(10) + b"middle" + bytes(4)
    assert read_checked(store, 0, 8) == b"head" + bytes(4)
    store.truncate(1, 2, 2)  # cut back: the zeros after it are no more
    write(store, 3 * UNIT, b"x")
    start, crcs, got = store.read(1, UNIT, UNIT)
    assert checksums.first_bad(memoryview(got), crcs) == 0  # a hole again, not zeros
