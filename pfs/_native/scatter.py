"""Scatter/gather of a caller buffer to and from per-server extent buffers, following a
StripePlan (csrc/scatter.c does the copying, with the GIL released)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from pfs._native import EINVAL, ENOSPC, NativeError, check
from pfs._native._core import ffi, lib

if TYPE_CHECKING:
    from pfs._native.stripe import StripePlan


def _as_bytes(buf: Any, writable: bool) -> Any:
    """A `unsigned char[]` view of any buffer-protocol object, without copying. cffi raises
    TypeError for a non-buffer, BufferError for a read-only one when writable is asked, and
    BufferError or ValueError for a non-contiguous one."""
    return ffi.from_buffer("unsigned char[]", buf, require_writable=writable)


def _spans(plan: StripePlan, buffers: Sequence[Any], writable: bool,
           short_code: int) -> tuple[Any, list[Any]]:
    """A `pfs_span[width]` over the per-extent buffers, indexed by server, and the views it points
    into (the caller keeps those alive through the C call)."""
    if len(buffers) != len(plan.extents):
        raise NativeError(EINVAL, f"{len(buffers)} buffers for {len(plan.extents)} extents")
    spans = ffi.new("pfs_span[]", plan.width)
    views = []
    for ext, buf in zip(plan.extents, buffers):
        view = _as_bytes(buf, writable)
        if len(view) < ext.length:
            raise NativeError(short_code, f"server {ext.server} buffer of {len(view)} bytes "
                                          f"for an extent of {ext.length}")
        spans[ext.server].data = view
        spans[ext.server].len = len(view)
        views.append(view)
    return spans, views


def scatter(plan: StripePlan, src: Any) -> list[bytearray]:
    """Copies src[0:plan.length] into one new bytearray per plan extent (see StripePlan.scatter)."""
    view = _as_bytes(src, writable=False)
    if len(view) < plan.length:
        raise NativeError(EINVAL, f"source of {len(view)} bytes for a range of {plan.length}")
    outs = [bytearray(ext.length) for ext in plan.extents]
    # `views` must outlive the call: `spans` holds only raw pointers into them.
    spans, views = _spans(plan, outs, writable=True, short_code=ENOSPC)
    segs = plan.c_segments()
    check(lib.pfs_scatter(plan.offset, view, len(view), segs, len(segs), plan.c_local_start,
                          spans, plan.width), "scatter")
    return outs


def gather(plan: StripePlan, sources: Sequence[Any], dst: Any) -> None:
    """Fills dst[0:plan.length] from one buffer per plan extent (see StripePlan.gather)."""
    view = _destination(plan, dst)
    spans, views = _spans(plan, sources, writable=False, short_code=EINVAL)
    _gather(plan, view, plan.c_segments(), spans)


def gather_extent(plan: StripePlan, server: int, source: Any, dst: Any) -> None:
    """Fills the bytes of dst[0:plan.length] that server `server` holds from `source`, its
    extent (see StripePlan.gather_extent)."""
    out = _destination(plan, dst)
    extent = next((e for e in plan.extents if e.server == server), None)
    if extent is None:
        raise NativeError(EINVAL, f"server {server} holds no part of the range")
    view = _as_bytes(source, writable=False)
    if len(view) < extent.length:
        raise NativeError(EINVAL, f"server {server} buffer of {len(view)} bytes for an extent "
                                  f"of {extent.length}")
    spans = ffi.new("pfs_span[]", plan.width)  # the other servers' stay NULL: no segment of theirs
    spans[server].data, spans[server].len = view, len(view)
    # An item of a cffi array does not keep the array alive: `every` does, until the items are
    # copied (a thread racing on the plan's first use may replace the plan's array meanwhile).
    every = plan.c_segments()
    own = [s for s in every if s.server == server]
    segs = ffi.new("pfs_segment[]", len(own))
    for k, seg in enumerate(own):
        segs[k] = seg
    _gather(plan, out, segs, spans)


def _destination(plan: StripePlan, dst: Any) -> Any:
    view = _as_bytes(dst, writable=True)
    if len(view) < plan.length:
        raise NativeError(ENOSPC, f"destination of {len(view)} bytes for a range of "
                                  f"{plan.length}")
    return view


def _gather(plan: StripePlan, view: Any, segs: Any, spans: Any) -> None:
    check(lib.pfs_gather(plan.offset, view, len(view), segs, len(segs), plan.c_local_start,
                         spans, plan.width), "gather")
