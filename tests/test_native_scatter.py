"""Scatter/gather in C (csrc/scatter.c, via StripePlan) against the byte-by-byte reference, and the
C bounds checks: a bad length or offset is an error code and no byte is written."""
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pfs._native._core as core
from pfs._native import EINVAL, ENOSPC, ERANGE, NativeError, plan_stripes
from pfs._native import reference as ref

ffi, lib = core.ffi, core.lib
MiB = 1 << 20
PROPERTY = settings(max_examples=250, deadline=None)
SENTINEL = 0xA5


@st.composite
def ranges(draw, max_length=4096):
    """(offset, length, B, S, w) with few bytes: large offsets and block sizes, small lengths."""
    b = draw(st.one_of(st.integers(1, 64), st.sampled_from([512, 4096, 16 * MiB]),
                       st.integers(1, 16 * MiB)))
    s, w = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    unit = b * s
    if draw(st.booleans()):
        offset = draw(st.integers(0, 2**40))
    else:  # straddle a unit boundary
        offset = max(0, draw(st.integers(1, 2**40 // unit)) * unit - draw(st.integers(0, 64)))
    return offset, draw(st.integers(0, max_length)), b, s, w


def as_type(data: bytes, kind: str):
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    return memoryview(bytearray(data))


@PROPERTY
@given(layout=ranges(), data=st.data(), kind=st.sampled_from(["bytes", "bytearray", "memoryview"]))
def test_scatter_matches_reference_and_gather_inverts_it(layout, data, kind):
    length = layout[1]
    src = data.draw(st.binary(min_size=length, max_size=length))
    extra = data.draw(st.integers(0, 8))
    plan = plan_stripes(*layout)
    bufs = plan.scatter(as_type(src + b"\0" * extra, kind))  # a longer source is fine
    assert bufs == ref.scatter(*layout, src)
    assert [len(b) for b in bufs] == [e.length for e in plan.extents]
    dst = bytearray([SENTINEL]) * (length + extra)
    plan.gather([as_type(bytes(b), kind) for b in bufs], dst)
    assert dst[:length] == src
    assert dst[length:] == bytearray([SENTINEL]) * extra  # nothing past the range
    assert ref.gather(*layout, bufs) == src


@PROPERTY
@given(layout=ranges(), data=st.data())
def test_gathering_extent_by_extent_matches_the_reference(layout, data):
    """Each server's part copied on its own (as a read copies each as it arrives) fills the
    same bytes as the reference's gather of all, and nothing past the range."""
    length = layout[1]
    src = data.draw(st.binary(min_size=length, max_size=length))
    plan = plan_stripes(*layout)
    bufs = ref.scatter(*layout, src)
    dst = bytearray([SENTINEL]) * (length + 4)
    order = data.draw(st.permutations(list(zip(plan.extents, bufs))))
    for extent, buf in order:
        plan.gather_extent(extent.server, bytes(buf), dst)
    assert dst[:length] == ref.gather(*layout, bufs)
    assert dst[length:] == bytearray([SENTINEL]) * 4
    if plan.extents:
        short = plan.extents[0]
        with pytest.raises(NativeError) as failure:
            plan.gather_extent(short.server, bytes(short.length - 1), dst)
        assert failure.value.code == EINVAL
    with pytest.raises(NativeError):
        plan.gather_extent(plan.width, b"", dst)  # no such server


def test_numpy_buffers_pass_without_copies():
    np = pytest.importorskip("numpy")
    plan = plan_stripes(3 * 4096 - 100, 8 * 4096, 4096, 1, 4)
    src = np.arange(plan.length // 8, dtype=np.float64)
    bufs = plan.scatter(src)
    assert bufs == ref.scatter(3 * 4096 - 100, 8 * 4096, 4096, 1, 4, src.tobytes())
    dst = np.zeros_like(src)
    plan.gather([np.frombuffer(b, dtype=np.uint8) for b in bufs], dst)
    assert np.array_equal(dst, src)
    with pytest.raises((BufferError, ValueError)):  # non-contiguous: refused, never copied
        plan.gather(bufs, np.zeros(2 * plan.length, dtype=np.uint8)[::2])


@PROPERTY
@given(ranges(max_length=512).filter(lambda r: r[1] > 0), st.integers(1, 4))
def test_wrapper_rejects_short_or_wrong_buffers_before_writing(layout, short):
    plan = plan_stripes(*layout)
    length = plan.length
    short = min(short, length)
    src = bytes(range(256)) * (length // 256 + 1)
    with pytest.raises(NativeError) as err:
        plan.scatter(src[:length - short])
    assert err.value.code == EINVAL
    bufs = plan.scatter(src)
    dst = bytearray([SENTINEL]) * length
    for sources, code in ((bufs[:-1], EINVAL), (bufs + [b""], EINVAL),
                          (bufs[:-1] + [bufs[-1][:-1]], EINVAL)):
        with pytest.raises(NativeError) as err:
            plan.gather(sources, dst)
        assert err.value.code == code
    with pytest.raises(NativeError) as err:
        plan.gather(bufs, memoryview(dst)[:length - short])
    assert err.value.code == ENOSPC
    assert dst == bytearray([SENTINEL]) * length
    with pytest.raises(BufferError):  # read-only destination
        plan.gather(bufs, bytes(length))
    with pytest.raises(TypeError):
        plan.scatter(12)


class CCall:
    """A direct pfs_scatter/pfs_gather call on a plan, with every argument open to damage. Each
    buffer is allocated with guard bytes past its declared length, to see any stray write."""

    GUARD = 16

    def __init__(self, plan):
        self.plan = plan
        self.offset = plan.offset
        self.caller = ffi.new("unsigned char[]", plan.length + self.GUARD)
        self.caller_len = plan.length
        segs = plan.c_segments()
        self.segs = ffi.new("pfs_segment[]", len(segs))
        ffi.memmove(self.segs, segs, ffi.sizeof(segs))
        self.local_start = ffi.new("uint64_t[]", list(plan.c_local_start))
        self.width = plan.width
        self.spans = ffi.new("pfs_span[]", plan.width)
        self.server_bufs = {}
        for e in plan.extents:
            buf = ffi.new("unsigned char[]", e.length + self.GUARD)
            self.server_bufs[e.server] = buf
            self.spans[e.server].data = buf
            self.spans[e.server].len = e.length

    def fill(self, value):
        for buf in [self.caller, *self.server_bufs.values()]:
            ffi.memmove(buf, bytes([value]) * len(buf), len(buf))

    def snapshot(self):
        return [bytes(ffi.buffer(buf)) for buf in [self.caller, *self.server_bufs.values()]]

    def scatter(self):
        return lib.pfs_scatter(self.offset, self.caller, self.caller_len, self.segs,
                               len(self.segs), self.local_start, self.spans, self.width)

    def gather(self):
        return lib.pfs_gather(self.offset, self.caller, self.caller_len, self.segs,
                              len(self.segs), self.local_start, self.spans, self.width)


DAMAGES = ["short_caller", "short_server", "null_server", "server_out_of_range",
           "file_offset_before_range", "local_before_extent", "segment_too_long", "width_zero",
           "width_too_big"]


def damage(call: CCall, kind: str, seg: int, by: int) -> dict:
    """Breaks one argument; returns the code each direction must report."""
    s = call.segs[seg]
    if kind == "short_caller":
        call.caller_len -= by
        return {"scatter": EINVAL, "gather": ENOSPC}
    if kind == "short_server":
        call.spans[s.server].len -= min(by, call.spans[s.server].len)
        return {"scatter": ENOSPC, "gather": EINVAL}
    if kind == "null_server":
        call.spans[s.server].data = ffi.NULL
        return {"scatter": ENOSPC, "gather": EINVAL}
    if kind == "server_out_of_range":
        s.server = min(call.width + by, 2**32 - 1)
        return {"scatter": EINVAL, "gather": EINVAL}
    if kind == "file_offset_before_range":
        call.offset += by
        return {"scatter": EINVAL, "gather": EINVAL}
    if kind == "local_before_extent":
        call.local_start[s.server] = s.local_offset + by
        return {"scatter": EINVAL, "gather": EINVAL}
    if kind == "segment_too_long":
        s.length += call.caller_len + by  # longer than the whole caller buffer
        return {"scatter": EINVAL, "gather": ENOSPC}
    if kind == "width_zero":
        call.width = 0
        return {"scatter": EINVAL, "gather": EINVAL}
    call.width = 1025
    return {"scatter": ERANGE, "gather": ERANGE}


@PROPERTY
@given(layout=ranges(max_length=1024).filter(lambda r: r[1] > 0), kind=st.sampled_from(DAMAGES),
       data=st.data(), by=st.integers(1, 2**63))
def test_c_rejects_bad_buffers_without_writing(layout, kind, data, by):
    plan = plan_stripes(*layout)
    seg = data.draw(st.integers(0, len(plan.c_segments()) - 1))
    for direction in ("scatter", "gather"):
        call = CCall(plan)
        by_ = min(by, plan.length) if kind == "short_caller" else by
        expected = damage(call, kind, seg, by_)[direction]
        call.fill(SENTINEL)
        before = call.snapshot()
        rc = getattr(call, direction)()
        assert rc == expected
        assert call.snapshot() == before


@PROPERTY
@given(ranges(max_length=1024))
def test_c_copies_stay_inside_declared_lengths(layout):
    call = CCall(plan_stripes(*layout))
    call.fill(SENTINEL)
    ffi.memmove(call.caller, bytes(range(256)) * 4 + b"\0" * 4, call.caller_len)
    assert call.scatter() == 0
    assert call.gather() == 0
    for buf in [call.caller, *call.server_bufs.values()]:
        assert bytes(ffi.buffer(buf)[len(buf) - CCall.GUARD:]) == bytes([SENTINEL]) * CCall.GUARD


def test_threads_gathering_extents_of_a_fresh_plan_at_once_fill_the_right_bytes():
    """A striped read gathers each server's extent on its own thread, the first uses of the
    plan's segment array racing: every byte lands where it belongs (an array built by a racing
    thread and dropped must not leave another thread copying segments out of freed memory)."""
    width, unit = 8, 1  # many segments: the array takes a while to build, the race is likely
    src = bytes(range(256)) * 256
    for trial in range(100):
        layout = (trial, len(src) - trial, 1, unit, width)
        sources = plan_stripes(*layout).scatter(src[trial:])
        plan = plan_stripes(*layout)  # fresh: its segment array not built yet
        dst = bytearray(plan.length)
        barrier = threading.Barrier(len(plan.extents))
        failures = []

        def gather(extent, source):
            barrier.wait()
            try:
                plan.gather_extent(extent.server, source, dst)
            except NativeError as e:
                failures.append(e)
        threads = [threading.Thread(target=gather, args=(e, s))
                   for e, s in zip(plan.extents, sources)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures and dst == src[trial:], f"trial {trial}: {failures}"
