"""Every PFS failure is an OSError with an errno (FileNotFoundError for ENOENT, and so on).

This is the one place where gRPC statuses become errnos, and where the C-like API keeps each
thread's last error.
"""
from __future__ import annotations

import errno
import threading

import grpc

_STATUS_ERRNO = {
    grpc.StatusCode.NOT_FOUND: errno.ENOENT,
    grpc.StatusCode.ALREADY_EXISTS: errno.EEXIST,
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.OUT_OF_RANGE: errno.EINVAL,
    grpc.StatusCode.FAILED_PRECONDITION: errno.EBUSY,
    grpc.StatusCode.UNAUTHENTICATED: errno.EACCES,
    grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
    grpc.StatusCode.UNAVAILABLE: errno.EHOSTDOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED: errno.ETIMEDOUT,
    grpc.StatusCode.ABORTED: errno.ENOTCONN,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errno.ENOSPC,
}

_last = threading.local()


def error(code: int, message: str) -> OSError:
    """The OSError subclass Python itself uses for `code` (OSError picks it)."""
    return OSError(code, message)


#: The trailing metadata entry in which the metaserver sends a failure's exact errno.
ERRNO_HEADER = "pfs-errno"


def from_rpc(e: grpc.RpcError, what: str) -> OSError:
    """An OSError for a failed call, naming what was being done and the server's reason."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"{details} (is the server running? check `pfs status`)"
    sent = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
    number = sent.get(ERRNO_HEADER, "")
    return error(int(number) if number.isdigit() else _STATUS_ERRNO.get(code, errno.EIO),
                 f"{what}: {details}")


def set_last_error(e: OSError | None) -> None:
    _last.error = e


def pfs_last_error() -> OSError | None:
    """The failure of this thread's most recent PFS call that returned -1 (None if none)."""
    return getattr(_last, "error", None)
