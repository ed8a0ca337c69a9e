"""The errno convention between every PFS process: a failure is an OSError with an errno.

A server that knows a failure's exact errno sends it in the call's trailing metadata
(ERRNO_HEADER); otherwise the gRPC status says it (_STATUS_ERRNO). `from_rpc` is the one place
where a failed call becomes an OSError, on every side.
"""
from __future__ import annotations

import errno

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

#: The trailing metadata entry in which a server sends a failure's exact errno.
ERRNO_HEADER = "pfs-errno"


def error(code: int, message: str) -> OSError:
    """The OSError subclass Python itself uses for `code` (OSError picks it)."""
    return OSError(code, message)


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
