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
import importlib as _importlib
import importlib.util as _util

if _util.find_spec("pfs._proto.metaserver_pb2") is None or _util.find_spec("pfs._native._core") is None:
    raise ImportError(
        f"PFS is not built in {__path__[0]}: this looks like its source checkout, whose protocol "
        "modules and C core are made when the package is built. Install it (pip install .) and "
        "run Python from another directory, or build it in place with pip install -e .")

from .metadata import ExecStat, Metadata, Recipe

__version__ = "0.1.0"

# The client loads on first use of a name below, not on `import pfs`: a server imports
# `pfs.protocol` (which runs this file) and must not load the client's cache, data path and
# session machinery with it (tests/test_layout.py).
_PUBLIC = {
    **{name: "pfs.api" for name in (
        "pfs_close", "pfs_create", "pfs_delete", "pfs_execstat", "pfs_finish", "pfs_fstat",
        "pfs_fsync", "pfs_ftruncate", "pfs_initialize", "pfs_mkdir", "pfs_open", "pfs_read",
        "pfs_rename", "pfs_rmdir", "pfs_write")},
    "PFS_READ": "pfs.client", "PFS_READ_WRITE": "pfs.client", "Client": "pfs.client",
    "pfs_last_error": "pfs.client.lasterror",
    "open": "pfs.fileio",
}
#: Modules reachable as attributes after `import pfs` alone, as they were when it loaded them.
_MODULES = ("api", "client", "fileio")

__all__ = sorted([*_PUBLIC, "ExecStat", "Metadata", "Recipe"])


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    elif name in _MODULES:
        value = _importlib.import_module(f"pfs.{name}")
    else:
        raise AttributeError(f"module 'pfs' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_MODULES})
