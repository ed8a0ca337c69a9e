"""The C core of PFS (csrc/), wrapped: this package is the only Python code that touches cffi's
`ffi` and `lib`.

Errors: every C routine returns a status; `check` turns a negative one into `NativeError`, the
same way in every wrapper. The wrappers check argument types and ranges before calling C, and the
C code checks again.

The GIL: `_core` is an API-mode cffi extension, and cffi's generated wrapper for every function
brackets the C call with Py_BEGIN_ALLOW_THREADS / Py_END_ALLOW_THREADS (cffi/recompiler.py, the
function-call generator; cffi docs: "C function calls are done with the GIL released"). So
scatter and gather copy bytes, and the CRC32C routines read them, while other threads run Python.
Buffers handed over with `ffi.from_buffer` stay exported, so they cannot be resized or freed
during the call.
"""
from typing import Any

from pfs._native._core import ffi, lib

EINVAL: int = lib.PFS_EINVAL
ERANGE: int = lib.PFS_ERANGE
ENOSPC: int = lib.PFS_ENOSPC
ENOENT: int = lib.PFS_ENOENT
EEXIST: int = lib.PFS_EEXIST
EMISS: int = lib.PFS_EMISS

_NAMES = {EINVAL: "EINVAL", ERANGE: "ERANGE", ENOSPC: "ENOSPC", ENOENT: "ENOENT",
          EEXIST: "EEXIST", EMISS: "EMISS"}

U64_MAX = 2**64 - 1
U8_ARRAY = ffi.typeof("uint8_t[]")  # pre-parsed: hot paths convert a buffer on every call


class NativeError(ValueError):
    """A failure reported by the C core; `code` is its negative PFS_E* status."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: {_NAMES.get(code, 'unknown')} ({code})")
        self.code = code


def check(code: int, what: str) -> int:
    """Returns a C status that means success (>= 0); raises NativeError for a negative one."""
    if code < 0:
        raise NativeError(code, what)
    return code


def unsigned(value: Any, name: str, limit: int = U64_MAX) -> int:
    """`value` as an int in [0, limit] (the C parameter's range): TypeError if it is not an
    integer, NativeError(ERANGE) if it does not fit."""
    try:
        value = value.__index__()
    except AttributeError:
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}") from None
    if not 0 <= value <= limit:
        raise NativeError(ERANGE, f"{name}={value} is outside 0..{limit}")
    return value


def as_bytes(buf: Any, name: str, writable: bool = False) -> Any:
    """A `uint8_t[]` view of any contiguous buffer, without copying: TypeError for a non-buffer
    (naming the argument), BufferError for a read-only one when writable is asked."""
    try:
        return ffi.from_buffer(U8_ARRAY, buf, writable)
    except TypeError:
        raise TypeError(f"{name} must be a buffer, not {type(buf).__name__}") from None


# The wrappers import NativeError and the helpers above, so they are imported after them.
from pfs._native.blocktable import BlockTable  # noqa: E402
from pfs._native.fastread import FastReads  # noqa: E402
from pfs._native.checksum import (crc32c, crc32c_combine, unit_count, unit_crcs,  # noqa: E402
                                  verify_units)
from pfs._native.stripe import Extent, Segment, StripePlan, plan_stripes  # noqa: E402

__all__ = ["NativeError", "StripePlan", "Extent", "Segment", "plan_stripes", "BlockTable",
           "crc32c", "crc32c_combine", "unit_count", "unit_crcs", "verify_units",
           "FastReads", "EINVAL", "ERANGE", "ENOSPC", "ENOENT", "EEXIST", "EMISS"]
