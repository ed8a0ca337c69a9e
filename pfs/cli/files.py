"""The commands that copy or read file contents: put, get, cp, cat, head, tail and checksum.

Invariant: what a copy writes appears whole or not at all: in PFS through copying.py's
temporary renamed into place, locally through a local temporary renamed into place, so an
interrupted `get` leaves an existing local file as it was. "-" is stdin (put) or stdout (get).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Callable

from pfs._native import crc32c
from pfs.client import PFS_READ, Client
from pfs.client.namespace import walk
from pfs.metadata import Metadata
from pfs.protocol import errnos
from pfs.protocol.paths import base, is_temporary, join, temporary_name

from .arguments import (
    add_command,
    at_least_one,
    byte_count,
    json_flag,
    pfs_path,
    progress_flags,
)
from .connection import existing, session
from .console import COPY_CHUNK, Console, print_json, shown
from .copying import Copier, Source, local_source, local_tree, pfs_source, pfs_tree
from .globs import HELP, expand_all


# --- into PFS: put and cp ---------------------------------------------------------------------
def cmd_put(args: argparse.Namespace, console: Console) -> int:
    if args.local == "-" and args.recursive:
        raise errnos.error(errno.EINVAL, "-r copies a local directory; standard input is not one")
    if args.recursive and os.path.isdir(args.local):
        return _put_tree(args, console)
    if args.local == "-":
        source = contextlib.nullcontext(Source(sys.stdin.buffer, None, "stdin",
                                               args.stripe_width, args.replicas or 0))
        name = None
    else:
        source = local_source(args.local, args)
        name = os.path.basename(os.path.normpath(args.local))
    with source as opened, session() as client:  # a missing local file: before the session
        summary = Copier(client, console, args).copy_one(opened, name)
    console.done(summary)
    return 0


def _put_tree(args: argparse.Namespace, console: Console) -> int:
    local = args.local
    name = os.path.basename(os.path.normpath(os.path.abspath(local)))
    if os.path.basename(local.rstrip(os.sep)) in (".", "") or not name:
        name = ""  # like cp -r: the contents of DIR/. (or /) go into the destination itself
    with session() as client:
        target, files, size = Copier(client, console, args).copy_tree(
            local_tree(local, console),
            lambda rel: local_source(os.path.join(local, rel), args), name)
    console.done(f"{local} -> {shown(target)} ({files} files, {size} bytes)")
    return 0


def _within(path: str, top: str) -> bool:
    """Whether `path` is `top` or below it."""
    return not top or path == top or path.startswith(top + "/")


def cmd_cp(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        src, meta = existing(client, args.src)
        copier = Copier(client, console, args)
        if not meta.is_dir:
            with pfs_source(client, src, args) as opened:
                summary = copier.copy_one(opened, base(src))
        elif not args.recursive:
            raise errnos.error(errno.EISDIR, f"{shown(src)} is a directory (use -r to copy a "
                                             "tree)")
        elif _within(pfs_path(args.path)[0], src):
            raise errnos.error(errno.EINVAL, f"cannot copy {shown(src)} into itself "
                                             f"({shown(pfs_path(args.path)[0])})")
        else:
            target, files, size = copier.copy_tree(
                pfs_tree(client, src), lambda rel: pfs_source(client, join(src, rel), args),
                base(src))
            summary = f"{shown(src)} -> {shown(target)} ({files} files, {size} bytes)"
    console.done(summary)
    return 0


# --- out of PFS: get, cat, head, tail and checksum ---------------------------------------------
def _read_all(client: Client, console: Console, path: str, size: int,
              write: Callable[[memoryview], object], progress: bool = True,
              start: int = 0, end: int | None = None) -> int:
    """Reads the PFS file `path` from `start` to `end` (None: its end) into `write`; the bytes
    read. `size`, as stat said, is only for the progress count: the file may change
    meanwhile."""
    fd = client.open(path, PFS_READ)
    try:
        buf, offset = bytearray(COPY_CHUNK), start
        if progress:
            console.progress(0, size)
        while n := client.read(fd, buf, len(buf) if end is None else min(len(buf), end - offset),
                               offset):
            with console.local_io():
                write(memoryview(buf)[:n])
            offset += n
            if progress:
                console.progress(offset - start, size)
        console.progress_end()
    finally:
        with contextlib.suppress(OSError):
            client.close(fd)
    return offset - start


def _refuse_local(local: str, force: bool) -> None:
    """A local file is replaced only with --force, as put, cp and mv replace PFS files."""
    if not force and os.path.lexists(local):
        raise errnos.error(errno.EEXIST, f"local file {local} exists (use --force to replace it)")


def _local_writer(f, local: str) -> Callable[[memoryview], object]:
    """`f.write`, its failures (a full disk, say) naming the local file being written."""
    def write(data: memoryview) -> object:
        try:
            return f.write(data)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise errnos.error(e.errno or errno.EIO, f"cannot write local file {local}: "
                                                     f"{e.strerror or e}") from None
    return write


def _get_file(client: Client, console: Console, path: str, size: int, local: str,
              force: bool) -> int:
    """Copies a PFS file (of `size` bytes, for the progress count) to a local file through a
    local temporary renamed into place; an existing one is replaced only with `force`."""
    _refuse_local(local, force)
    directory, name = os.path.split(local)
    tmp = os.path.join(directory, temporary_name(name))
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        raise errnos.error(errno.ENOENT, f"no such local directory: {directory or '.'}") from None
    except OSError as e:
        raise errnos.error(e.errno or errno.EIO, f"cannot write in {directory or '.'}: "
                                                 f"{e.strerror or e}") from None
    try:
        with open(out, "wb") as f:
            copied = _read_all(client, console, path, size, _local_writer(f, local))
        _refuse_local(local, force)  # made meanwhile?
        try:
            os.replace(tmp, local)
        except OSError as e:
            raise errnos.error(e.errno or errno.EIO, f"cannot write local file {local}: "
                                                     f"{e.strerror or e}") from None
        return copied
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _get_tree(client: Client, console: Console, path: str, local: str,
              force: bool) -> tuple[int, int]:
    """Copies the PFS tree `path` to the local directory `local`; an existing one is merged
    into (its files of the same names replaced) only with `force`. (files, bytes) copied."""
    if not force and os.path.lexists(local):
        raise errnos.error(errno.EEXIST, f"local {local} exists (use --force to copy into it, "
                                         "replacing files of the same names)")
    files = size = 0
    for here, entries in walk(client, path):
        rel = here[len(path):].lstrip("/")
        where = os.path.join(local, *rel.split("/")) if rel else local
        try:
            os.mkdir(where)
        except FileExistsError:
            if not os.path.isdir(where):
                raise errnos.error(errno.ENOTDIR, f"local {where} exists and is not a "
                                                  "directory") from None
        except OSError as e:
            raise errnos.error(e.errno or errno.EIO, f"cannot make local directory "
                                                     f"{where}: {e.strerror or e}") from None
        for m in entries:
            console.checkpoint()
            if m.symlink_target is not None or m.special is not None:
                console.warn(f"skipping {shown(m.filename)}: a symbolic link or special file "
                             "(PFS never follows links; special files hold no data)")
            elif not m.is_dir and not is_temporary(base(m.filename)):
                size += _get_file(client, console, m.filename, m.file_size,
                                  os.path.join(where, base(m.filename)), force)
                files += 1
    return files, size


def _to_stdout(client: Client, console: Console, path: str, meta: Metadata,
               progress: bool = True, start: int = 0, end: int | None = None) -> None:
    """Writes the PFS file `path` (from `start` to `end`) to standard output."""
    if meta.is_dir:
        raise errnos.error(errno.EISDIR, f"{shown(path)} is a directory")
    _read_all(client, console, path, meta.file_size, sys.stdout.buffer.write, progress,
              start, end)
    sys.stdout.buffer.flush()


def cmd_get(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        path, meta = existing(client, args.path)
        if meta.is_dir and not args.recursive:
            raise errnos.error(errno.EISDIR, f"{shown(path)} is a directory (use -r to copy "
                                             "a tree)")
        if args.local == "-":
            _to_stdout(client, console, path, meta)
            return 0
        local = args.local
        if os.path.isdir(local) and base(path):
            local = os.path.join(local, base(path))
        if not meta.is_dir:
            copied = _get_file(client, console, path, meta.file_size, local, args.force)
            console.done(f"{shown(path)} -> {local} ({copied} bytes)")
            return 0
        files, size = _get_tree(client, console, path, local, args.force)
    console.done(f"{shown(path)} -> {local} ({files} files, {size} bytes)")
    return 0


def cmd_cat(args: argparse.Namespace, console: Console) -> int:
    paths, status = expand_all(console, args.paths)
    with session() as client:
        def cat(arg: str) -> None:
            _to_stdout(client, console, *existing(client, arg), progress=False)
        return status | console.each(paths, cat)


def cmd_head(args: argparse.Namespace, console: Console) -> int:
    with session() as client:
        path, meta = existing(client, args.path)
        start = max(0, meta.file_size - args.bytes) if args.from_end else 0
        _to_stdout(client, console, path, meta, False, start, start + args.bytes)
    return 0


def cmd_checksum(args: argparse.Namespace, console: Console) -> int:
    paths, status = expand_all(console, args.paths)
    found = []
    with session() as client:
        def checksum(arg: str) -> None:
            path, meta = existing(client, arg)
            if meta.is_dir:
                raise errnos.error(errno.EISDIR, f"{shown(path)} is a directory")
            fd = client.open(path, PFS_READ)
            try:
                size, crc = client.stored_checksum(fd)
            finally:
                client.close(fd)
            if crc is None:  # not from the stored checksums: from the bytes
                crc = 0

                def add(data: memoryview) -> None:
                    nonlocal crc
                    crc = crc32c(data, crc)
                size = _read_all(client, console, path, meta.file_size, add)
            found.append({"path": "/" + path, "size": size, "crc32c": f"{crc:08x}"})
            if not args.json:
                print(f"{shown(path)}\tCRC32C\t{crc:08x}")
        status |= console.each(paths, checksum)
    if args.json:
        print_json(found)
    return status


# --- the command line -------------------------------------------------------------------------
def _copying_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The options of the commands that copy files into PFS (put, cp)."""
    p.add_argument("-r", "--recursive", action="store_true",
                   help=f"copy a {what} directory and everything in it (default: off)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing file; with -r, copy into an existing directory "
                        "(default: off, an existing target is an error)")
    p.add_argument("-p", "--parents", action="store_true",
                   help="create missing parent directories of the destination (default: "
                        "off, they must exist)")
    p.add_argument("--stripe-width", type=at_least_one(int), default=None, metavar="N",
                   help="fileservers each new file is striped over (default " +
                        ("that of the file copied)" if what == "PFS" else
                         "as many as are online, each copy on its own)"))
    p.add_argument("--replicas", type=at_least_one(int), default=None, metavar="N",
                   help="copies of each stripe unit of each new file, on distinct "
                        "fileservers (default " + ("that of the file copied)" if what == "PFS"
                                                   else "the cluster's: pfs up --replicas)"))
    progress_flags(p)


def _register_put(sub) -> None:
    p = add_command(sub, "put", "copy a local file (or tree, -r) into PFS", """\
Copy LOCAL into PFS as PATH. As with cp: when PATH is an existing directory the copy goes
into it, under LOCAL's name.

The copy is atomic: it is written as .NAME.pfs-tmp-<random> next to the target and renamed
into place, so an interrupted or failed put leaves nothing under the target name (nor any
temporary). An existing file is replaced only with --force. Missing parent directories are
an error unless --parents is given (as with cp and scp: a mistyped directory is not created).

With -r, a local directory is copied as a tree (like cp -r). A tree that does not exist yet
appears at once, whole: it is built under a temporary directory and renamed into place.
With --force onto an existing directory, the tree is merged into it, each file replaced
atomically. Symbolic links to directories and special files are skipped with a warning.

LOCAL "-" is standard input: pfs put - PATH.""", cmd_put, graceful=True)
    p.add_argument("local", metavar="LOCAL", help='local file or directory; "-" for stdin')
    p.add_argument("path", metavar="PATH", help="PFS destination file or directory")
    _copying_flags(p, "local")


def _register_get(sub) -> None:
    p = add_command(sub, "get", "copy a PFS file (or tree, -r) to a local file", """\
Copy the PFS file PATH to LOCAL. As with cp: when LOCAL is an existing directory the copy
goes into it, under PATH's name. An existing local file is replaced only with --force, as put
replaces PFS files. The file is written as a local temporary renamed into place, so an
interrupted get leaves an existing local file as it was.

With -r, a PFS directory is copied as a tree (like cp -r); with --force onto an existing
local directory it is merged into it, replacing files of the same names. Unfinished
temporaries of other puts and writers (.NAME.pfs-tmp-*) are not copied.

LOCAL "-" is standard output: pfs get PATH - | ...""", cmd_get, graceful=True)
    p.add_argument("path", metavar="PATH", help="PFS file or directory")
    p.add_argument("local", metavar="LOCAL", help='local destination; "-" for stdout')
    p.add_argument("-r", "--recursive", action="store_true",
                   help="copy a PFS directory and everything in it (default: off)")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing local file; with -r, copy into an existing local "
                        "directory (default: off, an existing target is an error)")
    progress_flags(p)


def _register_reading(sub) -> None:
    p = add_command(sub, "cat", "write PFS files to standard output", """\
Write the PFS files PATH..., one after the other, to standard output (as cat does). A
failure on one PATH is reported and the others are still written (exit status 1).

""" + HELP, cmd_cat)
    p.add_argument("paths", metavar="PATH", nargs="+", help="PFS file")

    for name, which in (("head", "first"), ("tail", "last")):
        p = add_command(sub, name, f"write the {which} bytes of a PFS file to standard output",
                        f"""\
Write the {which} N bytes of the PFS file PATH (all of it if it is shorter) to standard
output, as `{name} -c N` and `hdfs dfs -{name}` do; only those bytes are read.""", cmd_head)
        p.set_defaults(from_end=name == "tail")
        p.add_argument("path", metavar="PATH", help="PFS file")
        p.add_argument("-c", "--bytes", type=byte_count, default=1024, metavar="N",
                       help="bytes to write; k, M, G and T are binary units (default: 1024)")

    p = add_command(sub, "checksum", "show the CRC32C of PFS files", """\
Print the CRC32C (Castagnoli, as iSCSI, ext4 and `hdfs dfs -checksum` with
dfs.checksum.combine.mode=COMPOSITE_CRC use it) of each PFS file's bytes, one line each:
"pfs:/PATH<TAB>CRC32C<TAB>8 hex digits". Two files with the same contents have the same
checksum whatever their striping, and a local copy's can be compared (e.g. with Python's
crc32c package, or `pfs put` and `pfs checksum` of both).

The checksum is combined from the CRC32Cs the fileservers store beside every 4 KiB unit of
the file, as `hdfs dfs -checksum` combines its block checksums: no byte moves but those of a
last partial unit, so it takes a moment however large the file (it says what was written, and
does not check the bytes against it: `pfs scrub` does). A file whose stripe unit is not whole
4 KiB units (a cluster with small blocks), or with a unit that has no stored checksum, is read
instead, each unit checked as every read is.

""" + HELP + """

--json prints one JSON array: for each file "path", "size" (bytes) and "crc32c" (hex).""",
                    cmd_checksum)
    p.add_argument("paths", metavar="PATH", nargs="+", help="PFS file")
    json_flag(p, "the checksums")


def _register_cp(sub) -> None:
    p = add_command(sub, "cp", "copy a PFS file (or tree, -r) within PFS", """\
Copy the PFS file SRC to DST, as cp does: when DST is an existing directory the copy goes
into it, under SRC's name. Like put, the copy is atomic (a temporary renamed into place),
replaces an existing file only with --force and makes missing parents only with --parents.
The copy is striped as its source unless --stripe-width says otherwise.

With -r, a PFS directory is copied as a tree, as put -r copies a local one: a new tree
appears whole; onto an existing directory (with --force) it is merged, file by file.
Unfinished temporaries (.NAME.pfs-tmp-*) are not copied. To copy between PFS and local
files, use put and get.""", cmd_cp, graceful=True)
    p.add_argument("src", metavar="SRC", help="PFS file or directory to copy")
    p.add_argument("path", metavar="DST", help="PFS destination file or directory")
    _copying_flags(p, "PFS")


def register(sub) -> None:
    """put, get, cp, cat, head, tail, checksum."""
    _register_put(sub)
    _register_get(sub)
    _register_cp(sub)
    _register_reading(sub)
