"""Wildcards in PFS paths, as a shell expands them in local ones: `logs/*.csv`, `runs/2026-*/out`,
`tmp/*`; `*`, `?` and `[...]` (fnmatch's syntax, `[*]` for a literal `*`) in any component.

Invariant: a pattern is matched against the listings of the directories it can reach, one
component at a time, never by walking the tree; a name starting with "." is matched only by a
pattern component that starts with "." too (as shells do); the matches are in name order, and a
pattern that matches nothing is an error (ENOENT) that names it. A path without wildcards is
passed on as it was written, for the command to judge.
"""
from __future__ import annotations

import errno
import fnmatch
import re

from pfs.protocol import errnos
from pfs.protocol.paths import base, join

from .arguments import pfs_path
from .connection import stat
from .console import Console
from .walk import entries

_WILDCARD = re.compile(r"[*?[]")

#: What the help of a command that takes patterns says of them.
HELP = """PATHs may hold wildcards, *, ? and [...] in any component, quoted so that the shell
leaves them to pfs: pfs ls 'logs/*.csv'. Names starting with "." match only a pattern
that starts with "." too."""


def _matches(directory: str, pattern: str) -> list[str]:
    """The paths of the entries of `directory` whose names match `pattern` (none when it is not
    a directory)."""
    try:
        listed = list(entries(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [m.path for m in listed if fnmatch.fnmatchcase(base(m.path), pattern)
            and (pattern.startswith(".") or not base(m.path).startswith("."))]


def _exists(path: str) -> bool:
    try:
        stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def expand(arg: str, none_ok: bool = False) -> list[str]:
    """The paths the command-line path `arg` names: itself when it has no wildcard, else every
    match, each written so that pfs_path reads it back (a trailing "/" kept). No match is an
    error unless `none_ok` (rm -f)."""
    path, must_be_dir = pfs_path(arg)
    if not _WILDCARD.search(path):
        return [arg]
    found, expanded = [""], False
    for part in path.split("/"):
        if _WILDCARD.search(part):
            found, expanded = [m for f in found for m in _matches(f, part)], True
        elif expanded:  # below a wildcard: only where it is there
            found = [join(f, part) for f in found if _exists(join(f, part))]
        else:
            found = [join(f, part) for f in found]
    if not found and not none_ok:
        raise errnos.error(errno.ENOENT, f"no match for {arg}")
    return ["/" + f + "/" * must_be_dir for f in found]


def expand_all(console: Console, args: list[str], none_ok: bool = False
               ) -> tuple[list[str], int]:
    """The paths of all `args`, patterns expanded, in the order given; and 1 if a pattern
    matched nothing (reported, as a command reports a PATH it cannot do) unless `none_ok`."""
    found: list[str] = []
    status = console.each(args, lambda arg: found.extend(expand(arg, none_ok)))
    return found, status
