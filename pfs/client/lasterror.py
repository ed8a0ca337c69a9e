"""The C-like API's per-thread last error: every call that returns -1 records its OSError here
first, and `pfs_last_error()` returns it on the same thread until the next failure.
"""
from __future__ import annotations

import threading

_last = threading.local()


def set_last_error(e: OSError | None) -> None:
    # Kept without tracebacks: their frames would keep the failed call's Client (and its
    # session, streams and threads) alive for as long as the thread keeps its last error.
    seen = e
    while seen is not None and seen.__traceback__ is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    _last.error = e


def pfs_last_error() -> OSError | None:
    """The failure of this thread's most recent PFS call that returned -1 (None if none)."""
    return getattr(_last, "error", None)
