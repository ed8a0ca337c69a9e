"""CRC32C in C (csrc/crc32c.c, via pfs._native) against the bitwise reference and published check
values: whole buffers, chaining, combine, per-unit CRCs and their verification. Both
implementations are compared, the one this CPU gets (the crc32 instruction where there is one)
and the portable tables, so the tests pass, and check the tables, on any machine. Bad arguments
are clear errors, from the wrapper and from C, and C writes nothing then."""
import os
import pathlib
import platform
import random
import re
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pfs._native._core as core
from pfs._native import (EINVAL, ENOSPC, ERANGE, NativeError, checksum, crc32c, crc32c_combine,
                         unit_count, unit_crcs, verify_units)
from pfs._native import reference as ref

ffi, lib = core.ffi, core.lib
U32, U64 = 2**32 - 1, 2**64 - 1
PROPERTY = settings(max_examples=200, deadline=None)
CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"
# The hardware path's stream lengths (csrc/crc32c.c): buffer lengths around 3x these change path.
LONG, SHORT = 8192, 256

IMPLEMENTATIONS = {"fastest": checksum.crc32c, "tables": checksum.crc32c_sw,
                   "reference": ref.crc32c}
# The usual check string, and RFC 3720 (iSCSI) B.4's vectors.
VECTORS = [(b"", 0), (b"123456789", 0xE3069283), (bytes(32), 0x8A9136AA),
           (b"\xff" * 32, 0x62A8AB43), (bytes(range(32)), 0x46DD794E),
           (bytes(range(31, -1, -1)), 0x113FDB5C)]

units = st.one_of(st.integers(1, 16), st.integers(1, 700))


@st.composite
def pieces_of(draw, max_size=2000):
    """(data, unit, first_offset)."""
    data = draw(st.binary(max_size=max_size))
    unit = draw(units)
    return data, unit, draw(st.integers(0, unit - 1))


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
@pytest.mark.parametrize("data, expected", VECTORS)
def test_published_check_values(name, data, expected):
    assert IMPLEMENTATIONS[name](data) == expected


def test_implementation_follows_the_cpu():
    flags = set()
    if platform.machine() == "x86_64" and os.path.exists("/proc/cpuinfo"):
        text = pathlib.Path("/proc/cpuinfo").read_text()
        flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
    hardware = {"sse4_2", "pclmulqdq"} <= flags
    assert checksum.IMPLEMENTATION == ("sse4.2" if hardware else "slicing-by-8")


@PROPERTY
@given(data=st.binary(max_size=3000), cut=st.integers(0, 3000), start=st.integers(0, U32))
def test_matches_reference_and_chains(data, cut, start):
    a, b = data[:cut], data[cut:]
    expected = ref.crc32c(data, start)
    for name, fn in IMPLEMENTATIONS.items():
        assert fn(data, start) == expected, name
        assert fn(b, fn(a, start)) == expected, name  # chaining


# Lengths at and around every change of path: 3 long streams, 3 short ones, the 8-byte loop.
lengths = st.one_of(
    st.integers(0, 200_000),
    st.builds(lambda longs, shorts, rest: longs * 3 * LONG + shorts * 3 * SHORT + rest,
              st.integers(0, 4), st.integers(0, 40), st.integers(-9, 9)).filter(lambda n: n >= 0))


@PROPERTY
@given(length=lengths, start=st.integers(0, 15), crc=st.integers(0, U32), seed=st.integers())
def test_fastest_and_tables_agree_on_long_misaligned_buffers(length, start, crc, seed):
    data = memoryview(random_bytes(start + length, seed))[start:]
    assert checksum.crc32c(data, crc) == checksum.crc32c_sw(data, crc)


def test_agrees_with_google_crc32c_on_megabytes():
    google_crc32c = pytest.importorskip("google_crc32c")  # an independent implementation
    for seed, length in enumerate([1 << 20, 4 << 20, 3 * LONG * 5 + 3 * SHORT * 7 + 5]):
        data = random_bytes(length, seed)
        assert crc32c(data) == checksum.crc32c_sw(data) == google_crc32c.value(data)


@PROPERTY
@given(pieces_of())
def test_unit_crcs_match_reference(args):
    data, unit, first = args
    crcs = unit_crcs(data, unit, first)
    assert isinstance(crcs, array) and crcs.itemsize == 4
    assert list(crcs) == ref.unit_crcs(data, unit, first)
    assert len(crcs) == unit_count(len(data), unit, first) == len(ref.unit_pieces(len(data), unit,
                                                                                  first))
    assert verify_units(data, unit, first, crcs) == -1


@PROPERTY
@given(args=pieces_of().filter(lambda a: a[0]), where=st.integers(0), bit=st.integers(0, 7))
def test_verify_finds_the_unit_of_a_flipped_byte(args, where, bit):
    data, unit, first = args
    expected = unit_crcs(data, unit, first)
    damaged = bytearray(data)
    where %= len(data)
    damaged[where] ^= 1 << bit
    piece = (first + where) // unit  # the unit the byte is in, counted from the buffer's first
    assert verify_units(damaged, unit, first, expected) == piece
    assert ref.verify_units(damaged, unit, first, expected) == piece


def test_verify_reports_the_first_of_several_bad_units():
    data = bytearray(random_bytes(10 * 100 + 30, 1))
    expected = unit_crcs(data, 100, 70)  # pieces of 30, then 100 each, then 100
    for i in (900, 450, 31):
        data[i] ^= 0x80
    assert verify_units(data, 100, 70, expected) == 1  # byte 31 is in the second piece


def test_hot_path_4mib_in_1024_units():
    np = pytest.importorskip("numpy")
    size, unit = 4 << 20, 4096
    data = bytearray(random_bytes(size, 2))
    crcs = unit_crcs(data, unit)
    assert len(crcs) == 1024
    assert list(crcs) == [crc32c(data[i:i + unit]) for i in range(0, size, unit)]
    assert verify_units(data, unit, 0, crcs) == -1
    assert verify_units(np.frombuffer(data, np.uint8), unit, 0, np.array(crcs, np.uint32)) == -1
    data[1000 * unit + 4095] ^= 1
    assert verify_units(data, unit, 0, crcs) == 1000
    # A range that starts and ends inside units: partial first and last pieces.
    part = memoryview(data)[100:size - 100]
    pieces = unit_crcs(part, unit, 100)
    assert len(pieces) == 1024
    assert pieces[0] == crc32c(data[100:unit]) and pieces[1:999] == crcs[1:999]
    assert pieces[1023] == crc32c(data[1023 * unit:size - 100])


@PROPERTY
@given(a=st.binary(max_size=300), b=st.binary(max_size=300))
def test_combine_matches_reference(a, b):
    crc1, crc2 = crc32c(a), crc32c(b)
    assert crc32c_combine(crc1, crc2, len(b)) == crc32c(a + b)
    assert ref.crc32c_combine(crc1, crc2, len(b)) == crc32c(a + b)


@PROPERTY
@given(crc=st.integers(0, U32), m=st.integers(0, U64), n=st.integers(0, U64))
def test_combine_over_any_length_is_the_polynomial_shift(crc, m, n):
    # combine(crc, 0, n) moves crc past n zero bytes: crc * x^(8n) mod P.
    assert crc32c_combine(crc, 0, n) == ref.multmodp(ref.xpow(8 * n), crc)
    if m + n <= U64:
        assert crc32c_combine(crc32c_combine(crc, 0, m), 0, n) == crc32c_combine(crc, 0, m + n)


@given(crc=st.integers(0, U32), n=st.integers(0, 200))
def test_reference_shift_is_the_zero_byte_run(crc, n):
    # The reference's two statements of the shift agree: polynomial arithmetic, and zero bytes.
    assert ref.multmodp(ref.xpow(8 * n), crc) == ref.crc32c_combine(crc, 0, n)


def c_arrays(text: str) -> dict[str, list[int]]:
    """Every `static const uint32_t NAME[...] = {...};` in C source text, by name."""
    found = re.findall(r"static const uint32_t (\w+)(?:\[\d+\])+ = \{(.*?)\};", text, re.S)
    return {name: [int(v, 16) for v in re.findall(r"0x[0-9a-fA-F]+", body)]
            for name, body in found}


def test_c_constants_are_the_references():
    tables = c_arrays((CSRC / "crc32c_tables.h").read_text())
    row, expected = list(range(256)), []
    for _ in range(8):  # table k: the register i after k + 1 zero bytes
        row = [ref.crc32c_step(v, 0) for v in row]
        expected += row
    assert tables["crc32c_table"] == expected
    assert tables["crc32c_x8_pow2"] == [ref.xpow(8 << k) for k in range(64)]
    source = (CSRC / "crc32c.c").read_text()
    assert re.search(rf"LONG = {LONG}, SHORT = {SHORT}\b", source)
    shifts = c_arrays(source)  # x^(8n - 33) for streams 2n and n bytes ahead (join, crc32c.c)
    assert shifts["SHIFT_LONG"] == [ref.xpow(8 * 2 * LONG - 33), ref.xpow(8 * LONG - 33)]
    assert shifts["SHIFT_SHORT"] == [ref.xpow(8 * 2 * SHORT - 33), ref.xpow(8 * SHORT - 33)]


def test_any_contiguous_buffer_is_data():
    np = pytest.importorskip("numpy")
    data = random_bytes(800, 3)
    floats = np.frombuffer(data, np.float64)
    for buf in (data, bytearray(data), memoryview(data), array("d", data), floats):
        assert crc32c(buf) == crc32c(data)
        assert unit_crcs(buf, 64, 5) == unit_crcs(data, 64, 5)
    with pytest.raises((BufferError, ValueError)):  # non-contiguous: refused, never copied
        crc32c(floats[::2])


@pytest.mark.parametrize("call, error, code", [
    (lambda: crc32c("text"), TypeError, None),
    (lambda: crc32c([1, 2]), TypeError, None),
    (lambda: crc32c(b"x", 1.0), TypeError, None),
    (lambda: crc32c(b"x", -1), NativeError, ERANGE),
    (lambda: crc32c(b"x", 2**32), NativeError, ERANGE),
    (lambda: crc32c_combine(2**32, 0, 1), NativeError, ERANGE),
    (lambda: crc32c_combine(0, -1, 1), NativeError, ERANGE),
    (lambda: crc32c_combine(0, 0, 2**64), NativeError, ERANGE),
    (lambda: crc32c_combine(0, 0, "1"), TypeError, None),
    (lambda: unit_crcs(b"x", 0), NativeError, EINVAL),
    (lambda: unit_crcs(b"x", 4, 4), NativeError, ERANGE),
    (lambda: unit_crcs(b"x", 4, -1), NativeError, ERANGE),
    (lambda: unit_crcs(b"x", 2**64), NativeError, ERANGE),
    (lambda: unit_crcs(b"x", 4.0), TypeError, None),
    (lambda: unit_crcs(None, 4), TypeError, None),
    (lambda: unit_count(-1, 4), NativeError, ERANGE),
    (lambda: unit_count(10, 0), NativeError, EINVAL),
    (lambda: verify_units(b"x" * 9, 4, 0, array("I", [0, 0])), NativeError, EINVAL),  # 3 pieces
    (lambda: verify_units(b"x" * 9, 4, 0, array("I", [0] * 4)), NativeError, EINVAL),
    (lambda: verify_units(b"x" * 8, 4, 0, [0, 0]), TypeError, None),
    (lambda: verify_units(b"x" * 8, 4, 0, bytes(8)), TypeError, None),
    (lambda: verify_units(b"x" * 8, 4, 0, array("i", [0, 0])), TypeError, None),
    (lambda: verify_units(b"x" * 8, 4, 0, array("Q", [0, 0])), TypeError, None),
    (lambda: verify_units(b"x", 4, 7, array("I", [0])), NativeError, ERANGE),
])
def test_wrapper_rejects_bad_arguments(call, error, code):
    with pytest.raises(error) as err:
        call()
    if code is not None:
        assert err.value.code == code
    assert str(err.value)  # says what was wrong


def test_empty_buffer_has_no_pieces():
    assert len(unit_crcs(b"", 7, 3)) == 0 == unit_count(0, 7, 3)
    assert verify_units(b"", 7, 3, array("I")) == -1


def test_c_checks_its_arguments_and_writes_nothing_on_error():
    data = ffi.from_buffer(b"0123456789")
    out = ffi.new("uint32_t[]", [0xA5A5A5A5] * 4)
    for fn in (lib.pfs_crc32c, lib.pfs_crc32c_sw):
        assert fn(0, ffi.NULL, 1) == EINVAL
        assert fn(0, ffi.NULL, 0) == 0
    cases = [
        ((ffi.NULL, 1, 4, 0, out, 4), EINVAL),  # NULL data
        ((data, 10, 0, 0, out, 4), EINVAL),  # unit 0
        ((data, 10, 4, 4, out, 4), ERANGE),  # first offset outside the unit
        ((data, 10, 4, 0, ffi.NULL, 3), EINVAL),  # NULL output
        ((data, 10, 4, 0, out, 2), ENOSPC),  # 3 pieces, room for 2
        ((data, 10, 4, 3, out, 3), ENOSPC),  # pieces of 1, 4, 4, 1 bytes
        ((ffi.NULL, 2**63, 1, 0, ffi.NULL, 0), EINVAL),
    ]
    for args, code in cases:
        assert lib.pfs_crc32c_units(*args) == code, args
    assert list(out) == [0xA5A5A5A5] * 4
    assert lib.pfs_crc32c_units(data, 10, 4, 3, out, 4) == 4
    assert list(out) == ref.unit_crcs(b"0123456789", 4, 3)
    assert lib.pfs_crc32c_verify(data, 10, 4, 3, out, 4) == 4  # all 4 match
    assert lib.pfs_crc32c_verify(data, 10, 4, 3, out, 3) == EINVAL  # one CRC missing
    assert lib.pfs_crc32c_verify(data, 10, 4, 3, ffi.NULL, 4) == EINVAL
    assert lib.pfs_crc32c_verify(data, 10, 4, 4, out, 4) == ERANGE
    assert lib.pfs_crc32c_verify(data, 0, 4, 0, ffi.NULL, 0) == 0  # no pieces, all match
    out[2] ^= 1
    assert lib.pfs_crc32c_verify(data, 10, 4, 3, out, 4) == 2


def test_piece_count_past_int64_is_erange():
    # Only a unit of 1 byte over more than 2^63 bytes has that many pieces; C counts before
    # touching a byte, so a small real buffer declared that long is safe to pass here.
    data = ffi.from_buffer(b"x")
    assert lib.pfs_crc32c_units(data, 2**63, 1, 0, ffi.NULL, 0) == ERANGE
    assert lib.pfs_crc32c_units(data, 2**63 - 1, 1, 0, ffi.NULL, 0) == ENOSPC
