"""The module-level C-like API: one process-wide client, made by pfs_initialize()."""
from __future__ import annotations

import errno
import functools
import threading

from .client import Client
from .client import lasterror
from .protocol import errnos as errors

_lock = threading.Lock()
_client: Client | None = None


def _not_initialized() -> int:
    lasterror.set_last_error(errors.error(errno.ENOTCONN, "not initialized: call pfs_initialize() "
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


pfs_create = _on_the_client("pfs_create")
pfs_open = _on_the_client("pfs_open")
pfs_read = _on_the_client("pfs_read")
pfs_write = _on_the_client("pfs_write")
pfs_close = _on_the_client("pfs_close")
pfs_delete = _on_the_client("pfs_delete")
pfs_mkdir = _on_the_client("pfs_mkdir")
pfs_rmdir = _on_the_client("pfs_rmdir")
pfs_rename = _on_the_client("pfs_rename")
pfs_ftruncate = _on_the_client("pfs_ftruncate")
pfs_fstat = _on_the_client("pfs_fstat")
pfs_execstat = _on_the_client("pfs_execstat")
pfs_fsync = _on_the_client("pfs_fsync")
