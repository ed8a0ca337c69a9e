"""What a path is: the one rule shared by the client and the metaserver, and how a client's
strings are quoted back. A path is checked (`canonical`) before anything is done with it, on
both ends, and its canonical form is the only one sent or stored.

A path is `/`-separated components from the root; the leading `/` is optional (`a/b` is `/a/b`)
and the root itself is `""` or `/`. Each component is 1-255 bytes of UTF-8 without NUL, and not
`.` or `..`; empty components (`a//b`, a trailing `/`) are invalid; a path is at most 4096
bytes. The canonical form has no leading `/`: `a/b`, and `""` for the root.

A temporary name, of data written aside and renamed into place when complete (by `pfs put` and
`pfs get`, and by the fsspec filesystem's "wb" files), is `.NAME.pfs-tmp-<16 hex digits>`.
"""
from __future__ import annotations

import errno
import re
import secrets

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
#: Characters of a client's string quoted back in a message or log line.
QUOTE_CHARS = 60
#: Bytes of a name kept in its temporary name: the rest must fit in MAX_COMPONENT_BYTES.
TEMPORARY_NAME_BYTES = 200
#: The names temporary_name makes (DOTALL: a name may hold a newline).
_TEMPORARY = re.compile(r"\..*\.pfs-tmp-[0-9a-f]{16}", re.DOTALL)


def brief(text: object) -> str:
    """`text` quoted for a message, cut short: a client's long string must not make the error
    that quotes it too large to send."""
    quoted = repr(text)
    return quoted if len(quoted) <= QUOTE_CHARS else quoted[:QUOTE_CHARS - 4] + "...'"


def components(path: object) -> tuple[str, ...]:
    """The components of `path` (() for the root); OSError EINVAL or ENAMETOOLONG when it is
    not a valid path."""
    if not isinstance(path, str):
        raise OSError(errno.EINVAL, f"a path must be a str, not {type(path).__name__}")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise OSError(errno.EINVAL, f"path {brief(path)} is not valid UTF-8") from None
    if size > MAX_PATH_BYTES:
        raise OSError(errno.ENAMETOOLONG, f"a path is at most {MAX_PATH_BYTES} bytes of UTF-8 "
                                          f"(this one has {size})")
    if "\0" in path:
        raise OSError(errno.EINVAL, f"path {brief(path)} contains NUL")
    body = path[1:] if path.startswith("/") else path
    if not body:
        return ()
    parts = tuple(body.split("/"))
    for part in parts:
        if not part:
            raise OSError(errno.EINVAL, f"path {brief(path)} has an empty component "
                                        "('//' or a trailing '/')")
        if part in (".", ".."):
            raise OSError(errno.EINVAL, f"path {brief(path)}: '.' and '..' are not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise OSError(errno.ENAMETOOLONG, f"path {brief(path)}: a component is at most "
                                              f"{MAX_COMPONENT_BYTES} bytes of UTF-8")
    return parts


def canonical(path: object) -> str:
    """`path` in canonical form (`a/b`, `""` for the root); OSError when it is not valid."""
    return "/".join(components(path))


def parent(path: str) -> str:
    """The canonical parent of a canonical path (`""` for a child of the root)."""
    return path.rpartition("/")[0]


def base(path: str) -> str:
    """The last component of a path (`""` for the root)."""
    return path.rpartition("/")[2]


def join(directory: str, name: str) -> str:
    """`name` inside `directory`; either may be `""` (the root, or nothing to add)."""
    return f"{directory}/{name}" if directory and name else directory or name


def temporary_name(name: str) -> str:
    """A fresh temporary name for data that will be renamed to `name`: hidden by its leading
    dot (from `ls` and from pyarrow's and dask's dataset discovery), and within the bytes a
    component may have however long `name` is."""
    # A local name may carry undecodable bytes as surrogates: they are dropped, as is a
    # character cut in two.
    kept = name.encode("utf-8", "surrogateescape")[:TEMPORARY_NAME_BYTES].decode("utf-8",
                                                                                 "ignore")
    return f".{kept}.pfs-tmp-{secrets.token_hex(8)}"


def temporary_path(path: str) -> str:
    """A fresh temporary name next to the canonical `path` (see temporary_name)."""
    return join(parent(path), temporary_name(base(path)))


def is_temporary(name: str) -> bool:
    """Whether `name` is one that temporary_name makes."""
    return _TEMPORARY.fullmatch(name) is not None
