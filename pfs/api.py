"""The module-level C-like API: one process-wide client, made by pfs_initialize()."""
from __future__ import annotations

import errno
import threading
from typing import Any

from . import errors
from .client import Client
from .metadata import ExecStat, Metadata

_lock = threading.Lock()
_client: Client | None = None


def _current() -> Client | None:
    return _client


def _not_initialized() -> int:
    errors.set_last_error(errors.error(errno.ENOTCONN, "not initialized: call pfs_initialize() "
                                                       "first"))
    return -1


def pfs_initialize() -> int:
    """Starts this process's session (PFS_METASERVER, PFS_CACHE_BLOCKS); the client id, or -1."""
    global _client
    with _lock:
        if _client is None:
            _client = Client()
        return _client.pfs_initialize()


def pfs_create(name: str, stripe_width: int) -> int:
    c = _current()
    return c.pfs_create(name, stripe_width) if c else _not_initialized()


def pfs_open(name: str, mode: int) -> int:
    c = _current()
    return c.pfs_open(name, mode) if c else _not_initialized()


def pfs_read(fd: int, buf: Any, num_bytes: int, offset: int) -> int:
    c = _current()
    return c.pfs_read(fd, buf, num_bytes, offset) if c else _not_initialized()


def pfs_write(fd: int, buf: Any, num_bytes: int, offset: int) -> int:
    c = _current()
    return c.pfs_write(fd, buf, num_bytes, offset) if c else _not_initialized()


def pfs_close(fd: int) -> int:
    c = _current()
    return c.pfs_close(fd) if c else _not_initialized()


def pfs_delete(name: str) -> int:
    c = _current()
    return c.pfs_delete(name) if c else _not_initialized()


def pfs_fstat(fd: int, meta: Metadata) -> int:
    c = _current()
    return c.pfs_fstat(fd, meta) if c else _not_initialized()


def pfs_execstat(stats: ExecStat) -> int:
    c = _current()
    return c.pfs_execstat(stats) if c else _not_initialized()


def pfs_fsync(fd: int) -> int:
    c = _current()
    return c.pfs_fsync(fd) if c else _not_initialized()


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
