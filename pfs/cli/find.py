"""`pfs find`: the files and directories of trees that match tests on name, size and type, as
`lfs find DIR -name PAT -size +N` and `find(1)` select them.

Invariant: find opens no session and walks each tree a directory page at a time without
recursion (walk.descend), so it works while the cluster is short of fileservers and on trees of
any depth; it prints each match as soon as its directory is listed, in depth-first name order,
a starting PATH first.
"""
from __future__ import annotations

import argparse
import fnmatch
import re

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol.paths import base

from .arguments import add_command, pfs_path, size_test
from .connection import stat
from .console import Console, shown
from .globs import HELP, expand_all
from .walk import descend


def _selects(args: argparse.Namespace, meta: pb.FileMeta) -> bool:
    """Whether an entry passes every test given (-name, -size, -type)."""
    if args.type and args.type != ("d" if meta.is_dir else "f"):
        return False
    if args.name and not fnmatch.fnmatchcase(base(meta.path), args.name):
        return False
    if args.size:
        if meta.is_dir:  # a directory has no size of its own
            return False
        sign, limit = args.size
        return meta.size > limit if sign > 0 else meta.size < limit if sign < 0 else \
            meta.size == limit
    return True


def cmd_find(args: argparse.Namespace, console: Console) -> int:
    def find(arg: str) -> None:
        top = stat(pfs_path(arg)[0])
        if _selects(args, top):
            print(shown(top.path))
        if not top.is_dir:
            return
        for _, listed in descend(top.path, lambda m: True):
            console.checkpoint()
            for m in listed:
                if _selects(args, m):
                    print(shown(m.path))
    paths, status = expand_all(console, args.paths or [""])
    return status | console.each(paths, find)


def register(sub) -> None:
    """find."""
    p = add_command(sub, "find", "list the files and directories of trees that match tests",
                    """\
Walk the tree at each PATH (default: the root) and print every file and directory that
passes all the tests given (none: everything), one pfs:/ path a line, depth first in name
order. Hidden names and unfinished temporaries (.NAME.pfs-tmp-*) are included, as find(1)
includes them. Does not need a session.

  pfs find logs -name '*.csv' -size +1M      # CSV files over 1 MiB below logs
  pfs find -type d -name 'run-*'             # directories called run-... anywhere

""" + HELP, cmd_find)
    # find's tests read as find(1)'s (-size -5M included: not an option, a value).
    p._negative_number_matcher = re.compile(r"^-\d+[kKMGT]?$")
    p.add_argument("paths", metavar="PATH", nargs="*",
                   help="directory (or file) to search (default: the root)")
    p.add_argument("-name", "--name", metavar="PATTERN",
                   help="the name (not the path) matches PATTERN: *, ? and [...], quoted "
                        "(default: any name)")
    p.add_argument("-size", "--size", type=size_test, metavar="[+|-]N[k|M|G|T]",
                   help="a file of more (+N) or less (-N) than N bytes, or exactly N; k, M, "
                        "G and T are binary units (default: any size; directories never "
                        "match)")
    p.add_argument("-type", "--type", choices=("f", "d"),
                   help="f: files only, d: directories only (default: both)")
