"""Stripe plans: where the bytes [offset, offset + length) of a file live on its servers (docs/design.md,
computed by csrc/stripe.c). Each touched server holds one contiguous extent of the range."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from pfs._native import check, unsigned
from pfs._native import scatter as _scatter
from pfs._native._core import ffi, lib


class Extent(NamedTuple):
    """The part of a range on one server: `length` bytes from `local_offset` in its object."""

    server: int
    local_offset: int
    length: int


class Segment(NamedTuple):
    """The part of a range inside one stripe unit."""

    server: int
    local_offset: int
    file_offset: int
    length: int


class StripePlan:
    """The layout of one file range; made by `plan_stripes`.

    `extents` lists the touched servers in server order. The C arrays (`c_local_start`, and the
    segment array from `c_segments()`) are what scatter/gather hand to C.
    """

    __slots__ = ("offset", "length", "block_size", "stripe_blocks", "width", "extents",
                 "c_local_start", "_c_segments")

    def __init__(self, offset: int, length: int, block_size: int, stripe_blocks: int,
                 width: int) -> None:
        self.offset = unsigned(offset, "offset")
        self.length = unsigned(length, "length")
        self.block_size = unsigned(block_size, "block_size")
        self.stripe_blocks = unsigned(stripe_blocks, "stripe_blocks")
        self.width = unsigned(width, "width", 2**32 - 1)
        # C validates the whole layout here, before anything else runs. The arrays are capped at
        # the widest layout C accepts, so a huge width is C's ERANGE, not a huge allocation.
        cap = min(self.width, lib.PFS_MAX_WIDTH)
        start, size = ffi.new("uint64_t[]", cap), ffi.new("uint64_t[]", cap)
        check(lib.pfs_stripe_extents(self.offset, self.length, self.block_size,
                                     self.stripe_blocks, self.width, start, size, cap),
              "stripe extents")
        self.c_local_start = start
        self.extents = [Extent(s, start[s], size[s]) for s in range(self.width) if size[s]]
        self._c_segments: Any = None

    def c_segments(self) -> Any:
        """The plan's `pfs_segment[]` in file order, built on first use: a plan used only for its
        extents never allocates one segment per stripe unit."""
        if self._c_segments is None:
            n = ffi.new("size_t *")
            check(lib.pfs_stripe_count(self.offset, self.length, self.block_size,
                                       self.stripe_blocks, n), "stripe count")
            segs = ffi.new("pfs_segment[]", n[0])
            check(lib.pfs_stripe_segments(self.offset, self.length, self.block_size,
                                          self.stripe_blocks, self.width, segs, n[0], n),
                  "stripe segments")
            # Threads racing here build equal arrays; whichever is stored last is as good, as
            # long as each caller keeps the one it got alive while it uses the array's items
            # (an item does not keep its array alive).
            self._c_segments = segs
        return self._c_segments

    def segments(self) -> list[Segment]:
        """The segments as tuples, in file order."""
        return [Segment(s.server, s.local_offset, s.file_offset, s.length)
                for s in self.c_segments()]

    def scatter(self, src: Any) -> list[bytearray]:
        """Splits `src` (>= length bytes, file offset `offset` first) into one new bytearray per
        extent, each exactly extent.length long."""
        return _scatter.scatter(self, src)

    def gather(self, sources: Sequence[Any], dst: Any) -> None:
        """Fills dst[0:length] from `sources`, one buffer per extent holding that extent."""
        _scatter.gather(self, sources, dst)

    def gather_extent(self, server: int, source: Any, dst: Any) -> None:
        """Fills the bytes of dst[0:length] that `server` holds from `source`, its extent (so
        that each extent can be copied out as soon as it arrives, by the thread that fetched
        it: the servers' parts of dst are disjoint)."""
        _scatter.gather_extent(self, server, source, dst)

    def __repr__(self) -> str:
        return (f"StripePlan(offset={self.offset}, length={self.length}, "
                f"block_size={self.block_size}, stripe_blocks={self.stripe_blocks}, "
                f"width={self.width}, extents={self.extents})")


def plan_stripes(offset: int, length: int, block_size: int, stripe_blocks: int,
                 width: int) -> StripePlan:
    """The plan of file bytes [offset, offset + length) for layout (block_size, stripe_blocks,
    width). NativeError: EINVAL for a zero size, ERANGE for a width above 1024 or a uint64
    overflow."""
    return StripePlan(offset, length, block_size, stripe_blocks, width)
