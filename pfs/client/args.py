"""Argument checking of the C-like API: every argument is checked here before anything is done
with it, and a bad one is OSError(EINVAL) (or EBADF) naming it, never another exception.

`c_like` makes a raising method into its C-like form: its int result, or -1 with the error
recorded for `pfs_last_error()` (lasterror.py). Nothing else in the client touches the last error.
"""
from __future__ import annotations

import errno
import functools
import os
from typing import Any, Callable

from pfs.protocol.errnos import error

from . import lasterror

PFS_READ = 1
PFS_READ_WRITE = 2
#: The widest stripe the protocol can name (the metaserver allows its fileservers' number).
MAX_STRIPE_WIDTH = (1 << 32) - 1


def c_like(method: Callable[..., Any]) -> Callable[..., int]:
    """The C-like form of a raising method: its int result, or -1 with the error recorded."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            result = method(*args, **kwargs)
        except OSError as e:
            lasterror.set_last_error(e)
            return -1
        return 0 if result is None else result
    return wrapper


def int_arg(value: Any, what: str) -> int:
    """`value` if it is an int (not a bool) and not negative; else EINVAL naming `what`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(errno.EINVAL, f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise error(errno.EINVAL, f"{what} must not be negative (got {value})")
    return value


def open_mode(mode: Any) -> int:
    """`mode` if it is PFS_READ or PFS_READ_WRITE; else EINVAL."""
    if type(mode) is not int or mode not in (PFS_READ, PFS_READ_WRITE):
        raise error(errno.EINVAL, f"mode must be PFS_READ (1) or PFS_READ_WRITE (2), "
                                  f"not {mode!r}")
    return mode


def stripe_width(width: Any, replicas: Any) -> None:
    """EINVAL unless 1 <= width and replicas <= MAX_STRIPE_WIDTH, width None standing for the
    directory's layout (the metaserver checks them against its fileservers)."""
    if width is not None and not 1 <= int_arg(width, "stripe_width") <= MAX_STRIPE_WIDTH:
        raise error(errno.EINVAL, f"stripe_width must be between 1 and the number "
                                  f"of fileservers, not {width}")
    if int_arg(replicas, "replicas") > MAX_STRIPE_WIDTH:
        raise error(errno.EINVAL, f"replicas must be at most the number of "
                                  f"fileservers, not {replicas}")


def setting(name: str, kind: type, default):
    """A number from the environment; EINVAL, saying so, when it is not one."""
    text = os.environ.get(name)
    try:
        return default if text is None else kind(text)
    except ValueError:
        raise error(errno.EINVAL, f"{name} must be a number, not {text!r}") from None


def buffer(buf: Any, num_bytes: int, writable: bool) -> memoryview:
    """The first num_bytes of the caller's buffer as bytes, without copying."""
    try:
        view = memoryview(buf)
    except TypeError:
        raise error(errno.EINVAL, f"buf must support the buffer protocol "
                                  f"(bytearray, memoryview, numpy array), not "
                                  f"{type(buf).__name__}") from None
    if writable and view.readonly:
        raise error(errno.EINVAL, "buf is read-only; pass a bytearray or writable array")
    if not view.c_contiguous:
        raise error(errno.EINVAL, "buf must be C-contiguous")
    view = view.cast("B")
    if len(view) < num_bytes:
        raise error(errno.EINVAL, f"buf holds {len(view)} bytes, fewer than num_bytes "
                                  f"({num_bytes})")
    return view[:num_bytes]
