"""What a path is: the one rule shared by the client and the metaserver, and how a client's
strings are quoted back.

A path is `/`-separated components from the root; the leading `/` is optional (`a/b` is `/a/b`)
and the root itself is `""` or `/`. Each component is 1-255 bytes of UTF-8 without NUL, and not
`.` or `..`; empty components (`a//b`, a trailing `/`) are invalid; a path is at most 4096
bytes. The canonical form has no leading `/`: `a/b`, and `""` for the root.
"""
from __future__ import annotations

import errno

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
#: Characters of a client's string quoted back in a message or log line.
QUOTE_CHARS = 60


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
