"""PFS: a distributed parallel file system for Python.

The C-like API (every call returns an int, -1 on failure, see pfs_last_error()):

    import pfs
    pfs.pfs_initialize()
    pfs.pfs_create("data", 4)
    fd = pfs.pfs_open("data", pfs.PFS_READ_WRITE)
    buf = bytearray(1 << 20)
    n = pfs.pfs_read(fd, buf, len(buf), 0)

`pfs.Client` offers the same on an object (several per process, thread-safe), and
`pfs.open(name, "rb")` a standard Python file object.
"""
import importlib.util as _util

if _util.find_spec("pfs._proto.metaserver_pb2") is None or _util.find_spec("pfs._native._core") is None:
    raise ImportError(
        f"PFS is not built in {__path__[0]}: this looks like its source checkout, whose protocol "
        "modules and C core are made when the package is built. Install it (pip install .) and "
        "run Python from another directory, or build it in place with pip install -e .")

from .api import (pfs_close, pfs_create, pfs_delete, pfs_execstat, pfs_finish, pfs_fstat,
                  pfs_fsync, pfs_ftruncate, pfs_initialize, pfs_mkdir, pfs_open, pfs_read,
                  pfs_rename, pfs_rmdir, pfs_write)
from .client import PFS_READ, PFS_READ_WRITE, Client
from .errors import pfs_last_error
from .fileio import open
from .metadata import ExecStat, Metadata, Recipe

__version__ = "0.1.0"

__all__ = [
    "PFS_READ", "PFS_READ_WRITE", "Client", "ExecStat", "Metadata", "Recipe",
    "pfs_close", "pfs_create", "pfs_delete", "pfs_execstat", "pfs_finish", "pfs_fstat",
    "pfs_fsync", "pfs_ftruncate", "pfs_initialize", "pfs_last_error", "pfs_mkdir", "pfs_open",
    "pfs_read", "pfs_rename", "pfs_rmdir", "pfs_write", "open",
]
