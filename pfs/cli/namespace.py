"""The commands on names: ls, du and stat (which only look, with no session) and mkdir, rm and
mv (which change the tree, in a session).

Invariant: the looking commands open no session, so they work while the cluster is short of
fileservers; a command given several PATHs reports a failure on one and still does the others
(exit status 1).
"""
from __future__ import annotations

import argparse
import datetime
import errno
from typing import Iterator

from pfs._proto import metaserver_pb2 as pb
from pfs.protocol import errnos
from pfs.protocol.paths import base, join, parent

from .arguments import add_command, json_flag, pfs_path
from .cluster import recipe_servers
from .connection import existing, lookup, session, stat
from .console import Console, print_json, shown, size_text, when
from .globs import HELP, expand_all
from .walk import descend, entries, makedirs, remove_tree


# --- looking ----------------------------------------------------------------------------------
def _meta_line(name: str, meta: pb.FileMeta, human_sizes: bool) -> str:
    if meta.is_dir:
        return f"{'-':>14}  {when(meta.mtime)}  w={'-':<3} {name}/"
    return (f"{size_text(meta.size, human_sizes):>14}  {when(meta.mtime)}  "
            f"w={meta.recipe.stripe_width:<3} {name}")


def _json_entry(meta: pb.FileMeta) -> dict[str, object]:
    """An entry as `--json` shows it; sizes in bytes, times in POSIX seconds."""
    entry: dict[str, object] = {"path": "/" + meta.path, "name": base(meta.path),
                                "type": "directory" if meta.is_dir else "file",
                                "ctime": meta.ctime, "mtime": meta.mtime}
    if not meta.is_dir:
        entry.update(size=meta.size, stripe_width=meta.recipe.stripe_width)
    return entry


def _listings(arg: str, show_all: bool, recursive: bool
              ) -> Iterator[tuple[str, list[tuple[str, pb.FileMeta]], bool]]:
    """The listings of one PATH of `pfs ls`: (canonical path, its entries as (name, metadata),
    whether it is a directory); a file lists itself, by its path. With `recursive`, every
    directory below follows, depth first (hidden ones only with `show_all`)."""
    path, must_be_dir = pfs_path(arg)

    def shown_entry(m: pb.FileMeta) -> bool:
        return show_all or not base(m.path).startswith(".")
    try:
        for here, listed in descend(path, shown_entry if recursive else lambda m: False):
            yield here, [(base(m.path), m) for m in listed if shown_entry(m)], True
    except NotADirectoryError:
        meta = stat(path)
        if meta.is_dir or must_be_dir:
            raise
        yield path, [(meta.path, meta)], False


def cmd_ls(args: argparse.Namespace, console: Console) -> int:
    paths, status = expand_all(console, args.paths or [""])
    headings = len(paths) > 1 or args.recursive  # each directory under its name
    found: list[dict[str, object]] = []
    listed, printed = [], False

    def ls(arg: str) -> None:
        nonlocal printed
        for path, listing, is_dir in _listings(arg, args.all, args.recursive):
            listed.append(path)
            if args.json:
                found.extend(_json_entry(meta) for _, meta in listing)
                continue
            if is_dir and headings:
                print(f"\n{shown(path)}:" if printed else f"{shown(path)}:")
            for name, meta in listing:
                print(_meta_line(name, meta, args.human) if args.long
                      else name + ("/" if meta.is_dir else ""))
            printed = True
    status |= console.each(paths, ls)
    if args.json and listed:
        print_json(found)
    return status


def cmd_stat(args: argparse.Namespace, console: Console) -> int:
    path, _ = pfs_path(args.path)
    meta = stat(path)
    lines = [f"path:          /{meta.path}",
             f"type:          {'directory' if meta.is_dir else 'file'}"]
    if not meta.is_dir:
        lines.append(f"size:          {meta.size}")
    lines += [f"ctime:         {datetime.datetime.fromtimestamp(meta.ctime)}",
              f"mtime:         {datetime.datetime.fromtimestamp(meta.mtime)}"]
    if not meta.is_dir:
        r = meta.recipe
        lines += [f"block size:    {r.block_size}", f"stripe blocks: {r.stripe_blocks}",
                  f"stripe width:  {r.stripe_width}", f"replicas:      {r.replicas or 1}",
                  f"fileservers:   {recipe_servers(r.servers, 'stat')}"
                  + ("  (copy k of column c: entry k * width + c)" if r.replicas > 1 else "")]
    print("\n".join(lines))
    return 0


def _usage(top: str, console: Console) -> list[tuple[str, int]]:
    """(directory, bytes of the files in and below it) for every directory of the tree at
    `top`, each after those below it and `top` last, as du lists them; for a file, [(its path,
    its size)]. Walked depth first without recursion: trees may be deeper than Python's stack."""
    meta = stat(top)
    if not meta.is_dir:
        return [(top, meta.size)]
    totals: dict[str, int] = {}
    order: list[str] = []  # every directory after everything below it
    pending = [(top, False)]
    while pending:
        here, below_done = pending.pop()
        if below_done:
            order.append(here)
            continue
        pending.append((here, True))
        totals[here] = 0
        below = []
        for m in entries(here):
            console.checkpoint()
            if m.is_dir:
                below.append(m.path)
            else:
                totals[here] += m.size
        pending.extend((d, False) for d in reversed(below))
    for here in order[:-1]:  # a directory's total is complete before its parent's is used
        totals[parent(here)] += totals[here]
    return [(d, totals[d]) for d in order]


def cmd_du(args: argparse.Namespace, console: Console) -> int:
    def du(arg: str) -> None:
        sizes = _usage(pfs_path(arg)[0], console)
        for where, size in sizes[-1:] if args.summarize else sizes:
            print(f"{size_text(size, args.human)}\t{shown(where)}")
    paths, status = expand_all(console, args.paths or [""])
    return status | console.each(paths, du)


# --- changing the tree ------------------------------------------------------------------------
def cmd_mkdir(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        def make(arg: str) -> None:
            path, _ = pfs_path(arg)
            if args.parents:
                makedirs(client, path)
            else:
                client.mkdir(path)
        return console.each(args.paths, make)


def cmd_rm(args: argparse.Namespace, console: Console) -> int:
    paths, status = expand_all(console, args.paths, none_ok=args.force)
    with session() as client:
        def remove(arg: str) -> None:
            path, must_be_dir = pfs_path(arg)
            meta = lookup(client, path)
            if meta is None:
                if args.force:
                    return
                raise errnos.error(errno.ENOENT, f"no such file or directory: {shown(path)}")
            if not meta.is_dir:
                if must_be_dir:
                    raise errnos.error(errno.ENOTDIR, f"{shown(path)} is not a directory")
                client.delete(path)
            elif not args.recursive:
                raise errnos.error(errno.EISDIR, f"{shown(path)} is a directory (use -r to "
                                                 "remove it and everything in it)")
            elif not path:
                raise errnos.error(errno.EBUSY, "refusing to remove the root directory")
            else:
                remove_tree(client, path, console.checkpoint)
        return status | console.each(paths, remove)


def cmd_touch(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        def touch(arg: str) -> None:
            path, must_be_dir = pfs_path(arg)
            if lookup(client, path) is not None:
                return
            if must_be_dir:
                raise errnos.error(errno.ENOENT, f"no such directory: {shown(path)}")
            try:
                client.create(path)  # striped as its directory says
            except FileExistsError:  # made meanwhile: it exists, all that touch promises
                pass
        return console.each(args.paths, touch)


def cmd_mv(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        src, _ = existing(client, args.src)
        dst, into = pfs_path(args.dst)
        there = lookup(client, dst)
        if there is not None and there.is_dir and dst != src:
            dst = join(dst, base(src))  # as mv: into an existing directory
            there = lookup(client, dst)
        elif into and there is None:
            raise errnos.error(errno.ENOENT, f"no such directory: {shown(dst)}")
        if dst == src:
            raise errnos.error(errno.EINVAL, f"{shown(src)} and {shown(dst)} are the same")
        if there is not None and not there.is_dir and not args.force:
            raise errnos.error(errno.EEXIST, f"{shown(dst)} exists (use --force to replace it)")
        client.rename(src, dst)
    return 0


# --- the command line -------------------------------------------------------------------------
def _register_looking(sub) -> None:
    p = add_command(sub, "ls", "list a directory", """\
List the entries of a PFS directory (default: the root), one per line, directories with a
trailing "/"; names starting with "." are shown only with -a. Listing a file shows that file.
With -R, every directory below follows, depth first, each under its name. Does not need a
session: works while the cluster is short of fileservers.

""" + HELP + """

--json prints one JSON array of the entries of every PATH: each with "path", "name", "type"
("file" or "directory"), "ctime" and "mtime" (POSIX seconds), and for a file "size" (bytes)
and "stripe_width".""", cmd_ls, human_flag=True)
    p.add_argument("paths", metavar="PATH", nargs="*",
                   help="directory (or file) to list; several are listed one after the other, "
                        "each under a heading (default: the root)")
    p.add_argument("-l", "--long", action="store_true",
                   help="also show size in bytes, modification time and stripe width "
                        "(w=N; directories show -) (default: names only)")
    p.add_argument("-a", "--all", action="store_true",
                   help='also show names starting with "." (default: hidden)')
    p.add_argument("-R", "--recursive", action="store_true",
                   help="list every directory below too, depth first (default: off)")
    json_flag(p, "the entries")

    p = add_command(sub, "du", "show the bytes stored under directories", """\
Show the bytes in the files of each directory of the tree at PATH (default: the root),
counting everything below it, deepest first, as du does; with -s only PATH's own total.
Sizes are the files' sizes, in bytes unless -h. Does not need a session.

""" + HELP, cmd_du,
                    human_flag=True)
    p.add_argument("paths", metavar="PATH", nargs="*",
                   help="directory (or file) to measure (default: the root)")
    p.add_argument("-s", "--summarize", action="store_true",
                   help="only the total of each PATH (default: every directory)")

    p = add_command(sub, "stat", "show a file's or directory's metadata", """\
Show the metadata of a PFS file or directory: for a file its size (including bytes other
clients have written but not yet closed), times and striping.""", cmd_stat)
    p.add_argument("path", metavar="PATH", help="PFS file or directory")


def _register_changing(sub) -> None:
    p = add_command(sub, "mkdir", "create directories", """\
Create PFS directories. Without -p the parent must exist and the directory must not.""",
                    cmd_mkdir, graceful=True)
    p.add_argument("paths", metavar="PATH", nargs="+", help="directory to create")
    p.add_argument("-p", "--parents", action="store_true",
                   help="create missing parents too, and accept existing directories "
                        "(default: off)")

    p = add_command(sub, "touch", "create empty files", """\
Create each PATH that does not exist as an empty file, striped as put stripes new files (its
parent directory must exist). A PATH that exists, file or directory, is left as it is:
touch does not change its times, since PFS sets a file's mtime only when it is closed after
a write (SPEC: mtime is the last close that followed a write).""", cmd_touch, graceful=True)
    p.add_argument("paths", metavar="PATH", nargs="+", help="file to create")

    p = add_command(sub, "mv", "move or rename a file or directory", """\
Move (rename) SRC to DST, atomically, as mv does: when DST is an existing directory, SRC
moves into it under its own name. An existing file at DST is replaced only with --force.
A directory may replace an empty directory. Files open in any client cannot be moved or
replaced.""", cmd_mv, graceful=True)
    p.add_argument("src", metavar="SRC", help="PFS file or directory to move")
    p.add_argument("dst", metavar="DST", help="new path, or an existing directory to move into")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing file at DST (default: off, it is an error)")

    p = add_command(sub, "rm", "delete files (and trees, -r)", """\
Delete PFS files. A directory needs -r, which removes it and everything in it: the files of
each directory first, then the directories, bottom up. The root cannot be removed. A failure
on one PATH is reported and the others are still removed (exit status 1). Files open in any
client cannot be deleted.

""" + HELP + " With -f, a pattern that matches nothing is no error.", cmd_rm, graceful=True)
    p.add_argument("paths", metavar="PATH", nargs="+", help="file or directory to delete")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="remove directories and their contents (default: off)")
    p.add_argument("-f", "--force", action="store_true",
                   help="a PATH that does not exist is no error (default: off, it is one)")


def register(sub) -> None:
    """ls, du, stat, mkdir, mv, rm."""
    _register_looking(sub)
    _register_changing(sub)
