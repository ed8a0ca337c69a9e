"""Stripe math in C (csrc/stripe.c, via pfs._native) against the pure-Python reference, on
arbitrary layouts: offsets up to 2**40 (and the top of the uint64 range), block sizes 1 B to
16 MiB, stripe_blocks 1-64, widths 1-64."""
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pfs._native._core as core
from pfs._native import EINVAL, ENOSPC, ERANGE, NativeError, plan_stripes
from pfs._native import reference as ref

U64 = 2**64 - 1
MiB = 1 << 20
PROPERTY = settings(max_examples=250, deadline=None)

block_sizes = st.one_of(st.integers(1, 64), st.sampled_from([512, 4096, 65536, 16 * MiB]),
                        st.integers(1, 16 * MiB))
stripe_blocks = st.integers(1, 64)
widths = st.integers(1, 64)


@st.composite
def layouts(draw, max_units=200):
    """(offset, length, B, S, w), with the offset often near a stripe-unit boundary and the range
    spanning at most about max_units units."""
    b, s, w = draw(block_sizes), draw(stripe_blocks), draw(widths)
    unit = b * s
    if draw(st.booleans()):
        offset = draw(st.integers(0, 2**40))
    else:
        offset = max(0, draw(st.integers(0, 2**40 // unit)) * unit + draw(st.integers(-3, 3)))
    length = draw(st.one_of(st.integers(0, 3 * unit + 3), st.integers(0, max_units * unit)))
    return offset, length, b, s, w


def test_extension_is_compiled_and_has_no_python_fallback(tmp_path):
    assert core.__file__.endswith(tuple(EXTENSION_SUFFIXES)), core.__file__
    assert "pfs_scatter" in dir(core.lib)
    # Importing the package must not even load the reference module.
    code = "import sys, pfs._native; assert 'pfs._native.reference' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # the installed pfs


def test_spec_example():
    # docs/design.md's example: B=512, S=2, w=3.
    plan = plan_stripes(0, 4096, 512, 2, 3)
    assert plan.segments() == [(0, 0, 0, 1024), (1, 0, 1024, 1024), (2, 0, 2048, 1024),
                               (0, 1024, 3072, 1024)]
    assert plan.extents == [(0, 0, 2048), (1, 0, 1024), (2, 0, 1024)]


@PROPERTY
@given(layouts())
def test_segments_tile_the_range_and_match_reference(layout):
    offset, length, b, s, w = layout
    unit = b * s
    segments = plan_stripes(*layout).segments()
    assert segments == ref.stripe_segments(*layout)
    at = offset
    for server, local, file_offset, n in segments:
        assert file_offset == at and n > 0  # in order, disjoint, no gaps
        assert file_offset // unit == (file_offset + n - 1) // unit  # inside one unit
        assert (server, local) == ref.locate(file_offset, b, s, w)
        at += n
    assert at == offset + length  # covers the range exactly
    count = core.ffi.new("size_t *")
    assert core.lib.pfs_stripe_count(offset, length, b, s, count) == 0
    assert count[0] == len(segments) == ref.stripe_count(offset, length, b, s)


@PROPERTY
@given(layouts(max_units=2000))
def test_extents_match_reference_and_hold_each_servers_segments(layout):
    plan = plan_stripes(*layout)
    expected = [(srv, start, n) for srv, (start, n) in enumerate(ref.stripe_extents(*layout)) if n]
    assert plan.extents == expected
    by_server = {e.server: e for e in plan.extents}
    next_local = {e.server: e.local_offset for e in plan.extents}
    for server, local, _, n in plan.segments():
        # A server's segments follow one another inside its extent.
        assert local == next_local[server]
        next_local[server] += n
    for e in plan.extents:
        assert next_local[e.server] == e.local_offset + e.length
    assert sum(e.length for e in plan.extents) == plan.length
    assert len(by_server) == len(plan.extents)


@PROPERTY
@given(b=block_sizes, s=stripe_blocks, w=widths, back=st.integers(0, 2**20),
       length=st.integers(0, 2**20))
def test_top_of_the_uint64_range(b, s, w, back, length):
    offset = U64 - back
    length = min(length, U64 - offset)  # offset + length == 2**64 - 1 at most
    plan = plan_stripes(offset, length, b, s, w)
    assert plan.segments() == ref.stripe_segments(offset, length, b, s, w)
    assert plan.extents == [(srv, start, n) for srv, (start, n)
                            in enumerate(ref.stripe_extents(offset, length, b, s, w)) if n]


def expected_status(offset, length, b, s, w):
    """The C core's documented verdict on a layout and range."""
    if b == 0 or s == 0 or w == 0:
        return EINVAL
    if b * s > U64 or offset + length > U64 or w > 1024:
        return ERANGE
    return 0


u64s = st.one_of(st.integers(0, 3), st.integers(0, U64), st.integers(U64 - 3, U64),
                 st.sampled_from([2**32, 2**63]))


@PROPERTY
@given(offset=u64s, length=u64s, b=u64s, s=u64s, w=st.one_of(st.integers(0, 1100),
                                                            st.integers(0, 2**32 - 1)))
def test_bad_layouts_are_reported_not_crashed(offset, length, b, s, w):
    expected = expected_status(offset, length, b, s, w)
    start, size = core.ffi.new("uint64_t[]", 1100), core.ffi.new("uint64_t[]", 1100)
    assert core.lib.pfs_stripe_extents(offset, length, b, s, w, start, size, 1100) == expected
    count = core.ffi.new("size_t *")
    assert core.lib.pfs_stripe_count(offset, length, b, s, count) == \
        expected_status(offset, length, b, s, 1)  # the count does not depend on the width
    if expected == 0:
        if w <= 64:  # one array per server: keep the wrapper's allocations small
            plan_stripes(offset, length, b, s, w)
    else:
        with pytest.raises(NativeError) as err:
            plan_stripes(offset, length, b, s, w)
        assert err.value.code == expected


def test_small_output_arrays_are_enospc():
    n = core.ffi.new("size_t *")
    segs = core.ffi.new("pfs_segment[]", 2)
    assert core.lib.pfs_stripe_segments(0, 4096, 512, 2, 3, segs, 2, n) == ENOSPC
    assert n[0] == 4  # the count needed
    start, size = core.ffi.new("uint64_t[]", 2), core.ffi.new("uint64_t[]", 2)
    assert core.lib.pfs_stripe_extents(0, 4096, 512, 2, 3, start, size, 2) == ENOSPC
    assert core.lib.pfs_stripe_extents(0, 4096, 512, 2, 3, core.ffi.NULL, size, 3) == EINVAL


def test_wrapper_checks_argument_types_and_ranges():
    with pytest.raises(TypeError):
        plan_stripes(0.5, 10, 512, 2, 3)
    with pytest.raises(TypeError):
        plan_stripes("0", 10, 512, 2, 3)
    for bad in ([-1, 10, 512, 2, 3], [0, 2**64, 512, 2, 3], [0, 10, 512, 2, 2**32]):
        with pytest.raises(NativeError) as err:
            plan_stripes(*bad)
        assert err.value.code == ERANGE
    assert isinstance(err.value, ValueError)


def test_empty_range():
    plan = plan_stripes(12345, 0, 512, 2, 3)
    assert plan.extents == [] and plan.segments() == []
    assert plan.scatter(b"") == []
    plan.gather([], bytearray())


def test_huge_range_plans_without_listing_segments():
    # Extents are O(width); the segment array is only built when scatter/gather need it.
    plan = plan_stripes(0, 2**40, 1, 1, 4)
    assert plan.extents == [(s, 0, 2**38) for s in range(4)]
