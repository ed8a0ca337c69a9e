"""CRC32C checksums (csrc/crc32c.c): of a whole buffer, and of a buffer's pieces cut at the
storage path's unit boundaries, computed or verified for every piece in one C call (the GIL
released) with the CRCs in a uint32 array, so that no Python runs per unit.

Pieces: byte 0 of the buffer lies `first_offset` bytes into a unit of `unit` bytes; the buffer is
cut at every unit boundary, so the first and last pieces may be partial (csrc/crc32c.h)."""
from __future__ import annotations

from array import array
from typing import Any

from pfs._native import EINVAL, ERANGE, NativeError, as_bytes, check, unsigned
from pfs._native._core import ffi, lib

U32_MAX = 2**32 - 1
# "sse4.2" or "slicing-by-8": what crc32c uses on this CPU.
IMPLEMENTATION: str = ffi.string(lib.pfs_crc32c_implementation()).decode()

_U32_ARRAY = ffi.typeof("uint32_t[]")
_U32_FORMATS = ("I", "=I", "@I")  # native unsigned 32-bit items: array('I'), numpy.uint32


def _crc(fn: Any, data: Any, crc: Any) -> int:
    view = as_bytes(data, "data")
    if crc.__class__ is not int or crc >> 32:  # a 4 KiB CRC costs less than unsigned()
        crc = unsigned(crc, "crc", U32_MAX)
    return check(fn(crc, view, len(view)), "crc32c")


def crc32c(data: Any, crc: int = 0) -> int:
    """The CRC32C of `data` (any contiguous buffer), continuing `crc`, the CRC of the bytes before
    it (0 to start): crc32c(b, crc32c(a)) == crc32c(a + b)."""
    return _crc(lib.pfs_crc32c, data, crc)


def crc32c_sw(data: Any, crc: int = 0) -> int:
    """crc32c by the portable slicing-by-8 tables whatever the CPU: for tests and benchmarks."""
    return _crc(lib.pfs_crc32c_sw, data, crc)


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """crc32c(a + b) from crc1 = crc32c(a), crc2 = crc32c(b) and len2 = len(b)."""
    return lib.pfs_crc32c_combine(unsigned(crc1, "crc1", U32_MAX),
                                  unsigned(crc2, "crc2", U32_MAX), unsigned(len2, "len2"))


def _pieces(length: int, unit: Any, first_offset: Any) -> tuple[int, int, int]:
    """unit and first_offset as ints, checked, and the number of pieces of `length` bytes."""
    unit, first_offset = unsigned(unit, "unit"), unsigned(first_offset, "first_offset")
    if unit == 0:
        raise NativeError(EINVAL, "unit is 0")
    if first_offset >= unit:
        raise NativeError(ERANGE, f"first_offset={first_offset} is not inside a unit of {unit}")
    return unit, first_offset, 0 if length == 0 else (first_offset + length - 1) // unit + 1


def unit_count(length: int, unit: int, first_offset: int = 0) -> int:
    """The number of pieces of a buffer of `length` bytes. NativeError: EINVAL for a unit of 0,
    ERANGE for first_offset >= unit."""
    return _pieces(unsigned(length, "length"), unit, first_offset)[2]


def unit_crcs(data: Any, unit: int, first_offset: int = 0) -> array:
    """The CRC32C of each piece of `data`, in order, as an array('I') of unit_count entries."""
    view = as_bytes(data, "data")
    unit, first_offset, count = _pieces(len(view), unit, first_offset)
    out = array("I", bytes(4 * count))
    check(lib.pfs_crc32c_units(view, len(view), unit, first_offset,
                               ffi.from_buffer(_U32_ARRAY, out, True), count), "crc32c units")
    return out


def verify_units(data: Any, unit: int, first_offset: int, expected: Any) -> int:
    """The index of the first piece of `data` whose CRC32C is not its entry in `expected`, or -1
    when all match. expected: a contiguous array of uint32 (array('I'), numpy.uint32) with exactly
    one entry per piece; TypeError for other items, NativeError EINVAL for another count."""
    view = as_bytes(data, "data")
    unit, first_offset, count = _pieces(len(view), unit, first_offset)
    try:
        items = memoryview(expected)
    except TypeError:
        raise TypeError(f"expected must be an array of uint32, not "
                        f"{type(expected).__name__}") from None
    if items.itemsize != 4 or items.format not in _U32_FORMATS:
        raise TypeError(f"expected must be an array of uint32, not items of format "
                        f"{items.format!r}")
    if items.nbytes // 4 != count:
        raise NativeError(EINVAL, f"{items.nbytes // 4} expected CRCs for {count} pieces")
    good = check(lib.pfs_crc32c_verify(view, len(view), unit, first_offset,
                                       ffi.from_buffer(_U32_ARRAY, expected), count),
                 "crc32c verify")
    return -1 if good == count else good
