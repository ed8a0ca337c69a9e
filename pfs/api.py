"""The module-level C-like API: one process-wide client, made by pfs_initialize() and dropped
by a pfs_finish that succeeds; without it every call fails with -1 and ENOTCONN, never raises.
"""
from __future__ import annotations

import errno
import functools
import threading

from .client import Client, lasterror
from .protocol.errnos import error

_lock = threading.Lock()
_client: Client | None = None


def _not_initialized() -> int:
    lasterror.set_last_error(error(errno.ENOTCONN, "not initialized: call pfs_initialize() "
                                                   "first"))
    return -1


def _on_the_client(name: str):
    """The module-level form of Client.<name>: the same call on the process-wide client."""
    method = getattr(Client, name)

    @functools.wraps(method)
    def call(*args, **kwargs) -> int:
        client = _client
        return method(client, *args, **kwargs) if client else _not_initialized()
    return call


def pfs_initialize() -> int:
    """Starts this process's session (PFS_METASERVER, PFS_CACHE_BLOCKS); the client id, or -1."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client.pfs_initialize()


def pfs_finish(client_id: int) -> int:
    """Ends this process's session; pfs_initialize() may start a new one afterwards."""
    global _client
    with _lock:
        if _client is None:
            return _not_initialized()
        result = _client.pfs_finish(client_id)
        if result == 0:
            _client = None
        return result


#: The calls that are the process-wide client's methods of the same name.
_ON_THE_CLIENT = ("pfs_create", "pfs_open", "pfs_read", "pfs_write", "pfs_close", "pfs_delete",
                  "pfs_mkdir", "pfs_rmdir", "pfs_rename", "pfs_ftruncate", "pfs_fstat",
                  "pfs_execstat", "pfs_fsync")
globals().update({name: _on_the_client(name) for name in _ON_THE_CLIENT})
