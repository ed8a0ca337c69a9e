"""The `pfs` user commands: put, get, cat, cp, ls, du, df, stat, mkdir, mv, rm, status, bench.
Errors say what to do.

PFS paths are `/`-separated from the root, the leading `/` optional (`a/b` is `/a/b`); a trailing
`/` is accepted on the command line and means "a directory". The URLs the command prints and
fsspec takes, `pfs:/a/b`, `pfs://a/b` and `pfs:///a/b`, are that path too. Local paths are the
operating system's; `-` is standard input (put) or standard output (get), never a file called "-".

What a user can count on:
- `put` is atomic: it writes `.NAME.pfs-tmp-<random>` next to the target and renames it into
  place, so the target name holds either nothing (or its old file) or the whole copy; the
  temporary is removed when the copy fails or is interrupted. It replaces an existing file only
  with --force, and creates missing parent directories only with --parents (as `cp` and `scp`,
  a typo in a directory name is an error, not a new directory).
- `put -r` of a tree that is not there yet is atomic as a whole: the tree is built under a
  temporary directory and renamed into place. Onto an existing directory (--force) it merges,
  each file replaced atomically.
- `get` writes a local temporary and renames it too, so an interrupted get leaves the old local
  file (if any) as it was. Like `cp`, it replaces a local file of the same name.
- `cp` copies within PFS the same way, through a temporary renamed into place.
- Every failure is one line "pfs CMD: message" and exit status 1; Ctrl-C is one line
  "pfs CMD: interrupted" and status 130.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime
import errno
import functools
import json
import os
import signal
import stat as stat_mod
import sys
from typing import BinaryIO, Callable, Iterable, Iterator, TypeVar

import grpc

from . import fileio
from .protocol import errnos as errors
from ._proto import metaserver_pb2 as pb
from ._proto import metaserver_pb2_grpc as pb_grpc
from .client import PFS_READ, PFS_READ_WRITE, Client, default_metaserver
from .metadata import Metadata
from ._proto import fileserver_pb2 as fs_pb
from ._proto import fileserver_pb2_grpc as fs_pb_grpc
from .protocol.paths import base, canonical, is_temporary, join, parent, temporary_name, temporary_path
from .protocol.transport import Credentials

#: Bytes moved per call by put/get: a multiple of the default stripe unit over 4 servers.
COPY_CHUNK = 8 << 20
#: The commands that, on Ctrl-C, finish the call in progress and clean up (see _CtrlC).
GRACEFUL = {"put", "get", "cp", "mkdir", "mv", "rm"}
#: Help text layout: descriptions and epilogs keep their line breaks.
HelpFormatter = argparse.RawDescriptionHelpFormatter


# --- output -----------------------------------------------------------------------------------
_progress_shown = False  # a progress line without its newline is on stderr
#: Progress of copies on stderr: "auto" (on a terminal, for copies of more than a few chunks),
#: "always" (--progress) or "never" (--quiet, which also drops the line that sums a copy up).
_progress_mode = "auto"


def _progress(done: int, total: int | None) -> None:
    """A running count of the bytes copied, on stderr; `total` is None when the size is not
    known in advance (standard input). On a terminal the count is rewritten in place; into a
    file or pipe (with --progress) each count is a line."""
    global _progress_shown
    terminal = sys.stderr.isatty()
    big = done > 4 * COPY_CHUNK or (total is not None and total > 4 * COPY_CHUNK)
    if _progress_mode == "never" or (_progress_mode == "auto" and not (terminal and big)):
        return
    of = f" / {human(total)}" if total is not None else ""
    if terminal:
        print(f"\r  {human(done)}{of}", end="", file=sys.stderr, flush=True)
        _progress_shown = True
    else:
        print(f"  {human(done)}{of}", file=sys.stderr, flush=True)


def _progress_line(text: str) -> None:
    """A progress line of a long command on a terminal, rewritten in place."""
    global _progress_shown
    if sys.stderr.isatty() and _progress_mode != "never":
        print(f"\r  {text}\033[K", end="", file=sys.stderr, flush=True)
        _progress_shown = True


def _progress_end() -> None:
    """Ends the progress line, if one is showing, so the next message starts a line."""
    global _progress_shown
    if _progress_shown:
        print(file=sys.stderr, flush=True)
        _progress_shown = False


def _done(message: str) -> None:
    """The line that sums up a copy (not with --quiet)."""
    if _progress_mode != "never":
        print(message)


def human(size: int) -> str:
    """A byte count as people read it: "512 B", "1.5 KiB", "3.0 GiB"."""
    if size < 1024:
        return f"{size} B"
    value, units = float(size), ("KiB", "MiB", "GiB", "TiB", "PiB")
    for unit in units:
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _warn(command: str, message: str) -> None:
    _progress_end()
    print(f"pfs {command}: {message}", file=sys.stderr, flush=True)


def _shown(path: str) -> str:
    """A canonical PFS path as messages show it."""
    return f"pfs:/{path}"


# --- Ctrl-C -------------------------------------------------------------------------------------
class _CtrlC:
    """SIGINT while a file command runs.

    A KeyboardInterrupt raised at an arbitrary point could leave a lock of gRPC (or of the
    client) held, and the cleanup that follows (removing put's temporary, closing files, ending
    the session) could then wait forever. So a graceful command stops at the next safe point:
    while it waits on local input or output (a slow stdin, say), at once; otherwise between two
    chunks, files or paths (`checkpoint`). A command that has nothing to clean up stops at once.
    A second Ctrl-C exits at once, whatever is going on."""

    def __init__(self, command: str, graceful: bool) -> None:
        self.command, self.graceful = command, graceful
        self.pending = False  # Ctrl-C was pressed
        self.delivered = False  # ... and the KeyboardInterrupt raised
        self.local_io = 0  # waiting on local input or output: safe to stop at once

    def __call__(self, signum, frame) -> None:
        if self.pending:
            os._exit(interrupted(self.command))
        self.pending = True
        if not self.graceful or self.local_io:
            self.delivered = True
            raise KeyboardInterrupt

    def checkpoint(self) -> None:
        if self.pending and not self.delivered:
            self.delivered = True
            raise KeyboardInterrupt


_ctrl_c: _CtrlC | None = None


def _command() -> str:
    """The command running, as messages name it."""
    return _ctrl_c.command if _ctrl_c is not None else "pfs"


def _checkpoint() -> None:
    """A safe point to stop at if Ctrl-C was pressed (KeyboardInterrupt)."""
    if _ctrl_c is not None:
        _ctrl_c.checkpoint()


@contextlib.contextmanager
def _local_io() -> Iterator[None]:
    """Around a wait on local input or output, where Ctrl-C stops the command at once."""
    if _ctrl_c is None:
        yield
        return
    _ctrl_c.checkpoint()
    _ctrl_c.local_io += 1
    try:
        yield
    finally:
        _ctrl_c.local_io -= 1


# --- paths and addresses ----------------------------------------------------------------------
def _pfs_path(arg: str) -> tuple[str, bool]:
    """A PFS path from the command line: canonical, and whether it ended with `/` (so it must
    be a directory). `pfs:/a/b`, `pfs://a/b` and `pfs:///a/b` are `a/b` (`pfs:x`, with no slash,
    is a name). OSError EINVAL when it is not a valid path."""
    if arg == "pfs:" or arg.startswith("pfs:/"):
        arg = arg[len("pfs:"):].lstrip("/")
    stripped = arg.rstrip("/")
    return canonical(stripped), stripped != arg and stripped != ""


def _address_problem(address: str) -> str | None:
    """What is wrong with a HOST:PORT to connect to, or None."""
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        return "is not HOST:PORT"
    if not (port.isdigit() and 0 < int(port) < 65536):
        return f"has the port {port!r}; a port is a number from 1 to 65535"
    return None


def address(text: str) -> str:
    """An argparse type: HOST:PORT to connect to."""
    problem = _address_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def port(text: str) -> int:
    """An argparse type: a port to listen on, 0 for any free one."""
    if not (text.isdigit() and int(text) < 65536):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a number from 0 (any free "
                                         "port) to 65535")
    return int(text)


def at_least_one(kind: type):
    """An argparse type: an int (or float) that is positive."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value
    parse.__name__ = kind.__name__  # what argparse names in its own messages
    return parse


def metaserver() -> str:
    """The metaserver's address, from PFS_METASERVER (or the default), checked."""
    where = default_metaserver()
    problem = _address_problem(where)
    if problem:
        raise errors.error(errno.EINVAL, f"PFS_METASERVER={where!r} {problem}")
    return where


def _existing(client: Client, arg: str) -> tuple[str, Metadata]:
    """A PFS path from the command line that must be there (a trailing `/`: as a directory),
    canonical, and its metadata."""
    path, must_be_dir = _pfs_path(arg)
    meta = client.stat(path)
    if must_be_dir and not meta.is_dir:
        raise errors.error(errno.ENOTDIR, f"{_shown(path)} is not a directory")
    return path, meta


def _lookup(client: Client, path: str) -> Metadata | None:
    """The metadata at `path`, or None when nothing is there."""
    try:
        return client.stat(path)
    except FileNotFoundError:
        return None


# --- sessions and session-free calls ----------------------------------------------------------
@contextlib.contextmanager
def _session() -> Iterator[Client]:
    """A client for one command, finished (files closed, tokens released) at the end."""
    client = Client(metaserver())
    client.initialize()
    try:
        yield client
    finally:
        client.finish(client.initialize())


def _call(method: str, request, what: str):
    """One call to the metaserver outside any session (tools that only look)."""
    with _metaserver_stub(what) as stub:
        return getattr(stub, method)(request, timeout=10)


@contextlib.contextmanager
def _metaserver_stub(what: str) -> Iterator[pb_grpc.MetaServerStub]:
    """The metaserver's stub, its failures turned into OSErrors that say what to do."""
    where = metaserver()
    try:
        with Credentials().channel(where) as channel:
            yield pb_grpc.MetaServerStub(channel)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            raise errors.error(errno.EHOSTDOWN, f"no metaserver answers at {where} "
                                                f"({e.details()}): is it running? `pfs up` "
                                                "starts a cluster; PFS_METASERVER says where it "
                                                "is") from None
        raise errors.from_rpc(e, f"{what} (metaserver {where})") from None
    except ValueError as e:  # a bad PFS_SECRET
        raise errors.error(errno.EINVAL, str(e)) from None


def _stat(path: str) -> pb.FileMeta:
    """The metadata at `path`, outside any session."""
    return _call("Stat", pb.StatRequest(path=path), f"stat {_shown(path)}").meta


# --- put and cp -------------------------------------------------------------------------------
@dataclasses.dataclass
class _Source:
    """What a copy into PFS reads: an open binary file, its size when known (for the progress
    count), how messages name it, the stripe width its copy gets, and whether it is a PFS file
    (read by PFS calls, which Ctrl-C must not cut short; a local file's reads it may)."""
    file: BinaryIO
    size: int | None
    shown: str
    width: int | None  # None: as wide as the cluster allows
    replicas: int  # 0: the cluster's default
    in_pfs: bool = False


def _open_local(local: str) -> BinaryIO:
    """A local file to copy from, its errors naming it."""
    try:
        f = open(local, "rb")
    except FileNotFoundError:
        raise errors.error(errno.ENOENT, f"no such local file: {local}") from None
    except IsADirectoryError:
        raise errors.error(errno.EISDIR, f"{local} is a directory (use -r to copy a tree)") \
            from None
    except OSError as e:
        raise errors.error(e.errno or errno.EIO, f"cannot read local file {local}: "
                                                 f"{e.strerror or e}") from None
    if stat_mod.S_ISDIR(os.fstat(f.fileno()).st_mode):  # opening a directory may succeed
        f.close()
        raise errors.error(errno.EISDIR, f"{local} is a directory (use -r to copy a tree)")
    return f


@contextlib.contextmanager
def _local_source(local: str, args: argparse.Namespace) -> Iterator[_Source]:
    with _open_local(local) as f:
        st = os.fstat(f.fileno())
        yield _Source(f, st.st_size if stat_mod.S_ISREG(st.st_mode) else None, local,
                      args.stripe_width, args.replicas or 0)


@contextlib.contextmanager
def _pfs_source(client: Client, path: str, args: argparse.Namespace) -> Iterator[_Source]:
    """The PFS file `path` to copy from; its copy is striped and replicated as it is unless
    the options say otherwise."""
    meta = client.stat(path)
    with fileio.open(path, "rb", client=client, buffering=0) as f:
        yield _Source(f, meta.file_size, _shown(path), args.stripe_width or
                      meta.recipe.stripe_width, args.replicas or meta.recipe.replicas,
                      in_pfs=True)


def _write_all(client: Client, fd: int, source: _Source) -> int:
    """Copies `source` to the open PFS file `fd` from offset 0; the bytes copied."""
    buf, offset = bytearray(COPY_CHUNK), 0
    view = memoryview(buf)
    while True:
        if source.in_pfs:  # PFS calls: Ctrl-C stops the copy between two of them
            _checkpoint()
            n = source.file.readinto(view)
        else:
            try:
                with _local_io():
                    n = source.file.readinto(view)
            except OSError as e:
                raise errors.error(e.errno or errno.EIO, f"cannot read {source.shown}: "
                                                         f"{e.strerror or e}") from None
        if not n:
            return offset
        offset += client.write(fd, view, n, offset)
        _progress(offset, source.size)


def _discard(client: Client, tmp: str, fd: int | None) -> None:
    """Best effort: removes a temporary file of a copy that failed or was interrupted (its
    cached bytes are dropped first, not written back)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            client.ftruncate(fd, 0)
        with contextlib.suppress(OSError):
            client.close(fd)
    try:
        client.delete(tmp)
    except FileNotFoundError:
        pass
    except OSError as e:
        _warn(_command(), f"could not remove the temporary {_shown(tmp)} "
                          f"({e.strerror or e}); remove it with `pfs rm {tmp}`")


def _copy_file_in(client: Client, source: _Source, path: str) -> int:
    """Writes `source` to a new file `path` (which must not exist) and closes it; the bytes
    copied. On failure the file is removed (callers pass a temporary name)."""
    client.create(path, source.width or client.layout().widest(source.replicas),
                  source.replicas)
    fd = None
    try:
        fd = client.open(path, PFS_READ_WRITE)
        copied = _write_all(client, fd, source)
        client.fsync(fd)  # on the fileservers' disks before it takes the target's name
        client.close(fd)
        fd = None
        _progress_end()
        return copied
    except BaseException:
        _discard(client, path, fd)
        raise


def _refuse_existing(meta: Metadata | None, path: str, force: bool) -> None:
    if meta is None:
        return
    if meta.is_dir:
        raise errors.error(errno.EISDIR, f"{_shown(path)} is a directory")
    if not force:
        raise errors.error(errno.EEXIST, f"{_shown(path)} exists (use --force to replace it)")


def _put_one(client: Client, source: _Source, target: str, force: bool) -> int:
    """Copies `source` to `target` atomically: a temporary next to it, renamed into place."""
    tmp = temporary_path(target)
    copied = _copy_file_in(client, source, tmp)
    try:
        _refuse_existing(_lookup(client, target), target, force)  # made meanwhile?
        _checkpoint()
        client.rename(tmp, target)
    except BaseException:
        _discard(client, tmp, None)
        raise
    return copied


def _ensure_parent(client: Client, path: str, make: bool) -> None:
    """The parent directory of `path` exists (made with --parents), or a clear error."""
    up = parent(path)
    meta = _lookup(client, up)
    if meta is not None and meta.is_dir:
        return
    if meta is not None:
        raise errors.error(errno.ENOTDIR, f"{_shown(up)} is not a directory")
    if not make:
        raise errors.error(errno.ENOENT, f"no such directory: {_shown(up)} (create it with "
                                         f"`pfs mkdir -p {up}`, or use --parents)")
    _makedirs(client, up)


def _makedirs(client: Client, path: str) -> None:
    """mkdir -p: `path` and its missing parents; a file in the way is an error (ENOTDIR).
    fileio.makedirs accepts a file at `path` itself, so that one is checked here."""
    fileio.makedirs(client, path)
    if path and not client.stat(path).is_dir:
        raise errors.error(errno.ENOTDIR, f"{_shown(path)} exists and is not a directory")


def _destination(client: Client, arg: str, name: str | None) -> tuple[str, Metadata | None]:
    """Where a copy of something called `name` goes given the destination `arg`, as with cp:
    into `arg` when it is a directory, else `arg` itself. With its metadata (None if absent)."""
    target, must_be_dir = _pfs_path(arg)
    meta = _lookup(client, target)
    if meta is not None and meta.is_dir and name:
        target = join(target, name)
        return target, _lookup(client, target)
    if meta is not None and meta.is_dir:
        raise errors.error(errno.EISDIR, f"{_shown(target)} is a directory: give the name to "
                                         f"write, e.g. {join(target, 'NAME')}")
    if must_be_dir:
        raise errors.error(errno.ENOTDIR if meta else errno.ENOENT,
                           f"no such directory: {_shown(target)}")
    return target, meta


def _copy_one(client: Client, source: _Source, name: str | None,
              args: argparse.Namespace) -> str:
    """Copies one file called `name` (None: it has none, as standard input) to the destination
    args.path, as cp does; the line that sums the copy up."""
    target, meta = _destination(client, args.path, name)
    if not target:
        raise errors.error(errno.EISDIR, "the root is a directory")
    if source.in_pfs and source.shown == _shown(target):
        raise errors.error(errno.EINVAL, f"{source.shown} is both source and destination")
    _refuse_existing(meta, target, args.force)
    _ensure_parent(client, target, args.parents)
    copied = _put_one(client, source, target, args.force)
    return f"{source.shown} -> {_shown(target)} ({copied} bytes)"


def cmd_put(args: argparse.Namespace) -> int:
    if args.local == "-" and args.recursive:
        raise errors.error(errno.EINVAL, "-r copies a local directory; standard input is not one")
    if args.recursive and os.path.isdir(args.local):
        return _put_tree(args)
    if args.local == "-":
        source = contextlib.nullcontext(_Source(sys.stdin.buffer, None, "stdin",
                                                args.stripe_width, args.replicas or 0))
        name = None
    else:
        source = _local_source(args.local, args)
        name = os.path.basename(os.path.normpath(args.local))
    with source as opened, _session() as client:  # a missing local file: before the session
        summary = _copy_one(client, opened, name, args)
    _done(summary)
    return 0


def _local_tree(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(relative directory, subdirectories, regular files) of a local tree, top first, sorted;
    what cannot be copied (symbolic links to directories, devices, pipes) is skipped with a
    warning, and an unreadable directory is an error."""
    def fail(e: OSError) -> None:
        raise errors.error(e.errno or errno.EIO, f"cannot read local directory {e.filename}: "
                                                 f"{e.strerror or e}")
    for here, dirs, files in os.walk(top, onerror=fail):
        rel = os.path.relpath(here, top)
        rel = "" if rel == "." else rel.replace(os.sep, "/")
        kept_dirs = []
        for d in sorted(dirs):
            if os.path.islink(os.path.join(here, d)):
                _warn("put", f"skipping {os.path.join(here, d)}: a symbolic link to a directory")
            else:
                kept_dirs.append(d)
        dirs[:] = kept_dirs
        kept_files = []
        for f in sorted(files):
            full = os.path.join(here, f)
            if os.path.isfile(full):
                kept_files.append(f)
            else:
                _warn("put", f"skipping {full}: not a regular file")
        yield rel, kept_dirs, kept_files


def _pfs_walk(client: Client, top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """(relative directory, subdirectories, files) of a PFS tree, top first; the unfinished
    temporaries of other copies and writers (.NAME.pfs-tmp-*) are left out."""
    for here, entries in _pfs_tree(client, top):
        kept = [m for m in entries if not is_temporary(base(m.filename))]
        yield (here[len(top):].lstrip("/"), [base(m.filename) for m in kept if m.is_dir],
               [base(m.filename) for m in kept if not m.is_dir])


def _copy_tree_in(client: Client, tree: Iterable[tuple[str, list[str], list[str]]],
                  source_of: Callable[[str], contextlib.AbstractContextManager[_Source]],
                  top: str, merge: bool) -> tuple[int, int]:
    """Copies a `tree` ((relative directory, subdirectories, files), top first) into the PFS
    directory `top`, opening each file by its relative path with `source_of`; (files, bytes)
    copied. Merging into a directory others see, each file is replaced atomically; a tree being
    built aside is not seen yet, so its files are written in place."""
    files = size = 0
    for rel, dirs, names in tree:
        here = join(top, rel)
        for d in dirs:
            _checkpoint()
            directory = join(here, d)
            try:
                client.mkdir(directory)
            except FileExistsError:  # merging: a directory of the same name is merged into
                if not client.stat(directory).is_dir:
                    raise errors.error(errno.ENOTDIR, f"{_shown(directory)} is a file, not a "
                                                      "directory") from None
        for n in names:
            _checkpoint()
            dest = join(here, n)
            with source_of(join(rel, n)) as source:
                if merge:
                    # A directory in the way: refused now, rather than after the copy.
                    _refuse_existing(_lookup(client, dest), dest, True)
                    size += _put_one(client, source, dest, True)
                else:
                    size += _copy_file_in(client, source, dest)
            files += 1
    return files, size


def _copy_tree(client: Client, tree: Iterable[tuple[str, list[str], list[str]]],
               source_of: Callable[[str], contextlib.AbstractContextManager[_Source]],
               name: str, args: argparse.Namespace) -> tuple[str, int, int]:
    """Copies a tree (see _copy_tree_in) called `name` to the destination args.path as cp -r
    does: into it when it is a directory, else as it (`name` "": the tree's contents go into
    args.path itself). A tree that is not there yet appears whole: it is built aside and
    renamed into place. An existing one is merged into, file by file, only with args.force.
    (target, files, bytes) copied."""
    if name:
        target, meta = _destination(client, args.path, name)
    else:
        target = _pfs_path(args.path)[0]
        meta = _lookup(client, target)
    if meta is not None and not meta.is_dir:
        raise errors.error(errno.ENOTDIR, f"{_shown(target)} is a file, not a directory")
    if meta is not None and not args.force:
        raise errors.error(errno.EEXIST, f"{_shown(target)} exists (use --force to copy "
                                         "into it, replacing files of the same names)")
    if meta is not None:
        return (target, *_copy_tree_in(client, tree, source_of, target, merge=True))
    if not target:
        raise errors.error(errno.EINVAL, "the root directory exists")
    _ensure_parent(client, target, args.parents)
    tmp = temporary_path(target)
    client.mkdir(tmp)
    try:
        files, size = _copy_tree_in(client, tree, source_of, tmp, merge=False)
        if _lookup(client, target) is not None:
            raise errors.error(errno.EEXIST, f"{_shown(target)} was created meanwhile "
                                             "(use --force to copy into it)")
        _checkpoint()
        client.rename(tmp, target)
    except BaseException:
        try:
            _remove_tree(client, tmp)
        except OSError as e:
            _warn(_command(), f"could not remove the temporary {_shown(tmp)} "
                              f"({e.strerror or e}); remove it with `pfs rm -r {tmp}`")
        raise
    return target, files, size


def _put_tree(args: argparse.Namespace) -> int:
    local = args.local
    name = os.path.basename(os.path.normpath(os.path.abspath(local)))
    if os.path.basename(local.rstrip(os.sep)) in (".", "") or not name:
        name = ""  # like cp -r: the contents of DIR/. (or /) go into the destination itself
    with _session() as client:
        target, files, size = _copy_tree(
            client, _local_tree(local),
            lambda rel: _local_source(os.path.join(local, rel), args), name, args)
    _done(f"{local} -> {_shown(target)} ({files} files, {size} bytes)")
    return 0


def _within(path: str, top: str) -> bool:
    """Whether `path` is `top` or below it."""
    return not top or path == top or path.startswith(top + "/")


def cmd_cp(args: argparse.Namespace) -> int:
    with _session() as client:
        src, meta = _existing(client, args.src)
        if not meta.is_dir:
            with _pfs_source(client, src, args) as opened:
                summary = _copy_one(client, opened, base(src), args)
        elif not args.recursive:
            raise errors.error(errno.EISDIR, f"{_shown(src)} is a directory (use -r to copy a "
                                             "tree)")
        elif _within(_pfs_path(args.path)[0], src):
            raise errors.error(errno.EINVAL, f"cannot copy {_shown(src)} into itself "
                                             f"({_shown(_pfs_path(args.path)[0])})")
        else:
            target, files, size = _copy_tree(
                client, _pfs_walk(client, src),
                lambda rel: _pfs_source(client, join(src, rel), args), base(src),
                args)
            summary = f"{_shown(src)} -> {_shown(target)} ({files} files, {size} bytes)"
    _done(summary)
    return 0


# --- get --------------------------------------------------------------------------------------
def _read_all(client: Client, path: str, size: int,
              write: Callable[[memoryview], object], progress: bool = True) -> int:
    """Reads the PFS file `path` from start to end into `write`; the bytes read. `size`, as
    stat said, is only for the progress count: the file may change meanwhile."""
    fd = client.open(path, PFS_READ)
    try:
        buf, offset = bytearray(COPY_CHUNK), 0
        while n := client.read(fd, buf, len(buf), offset):
            with _local_io():
                write(memoryview(buf)[:n])
            offset += n
            if progress:
                _progress(offset, size)
        _progress_end()
    finally:
        with contextlib.suppress(OSError):
            client.close(fd)
    return offset


def _get_file(client: Client, path: str, size: int, local: str) -> int:
    """Copies a PFS file (of `size` bytes, for the progress count) to a local file through a
    local temporary renamed into place."""
    directory, name = os.path.split(local)
    tmp = os.path.join(directory, temporary_name(name))
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        raise errors.error(errno.ENOENT, f"no such local directory: {directory or '.'}") from None
    except OSError as e:
        raise errors.error(e.errno or errno.EIO, f"cannot write in {directory or '.'}: "
                                                 f"{e.strerror or e}") from None
    try:
        with open(out, "wb") as f:
            copied = _read_all(client, path, size, f.write)
        try:
            os.replace(tmp, local)
        except OSError as e:
            raise errors.error(e.errno or errno.EIO, f"cannot write local file {local}: "
                                                     f"{e.strerror or e}") from None
        return copied
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _pfs_tree(client: Client, top: str) -> Iterator[tuple[str, list[Metadata]]]:
    """(directory, its entries) of a PFS tree, top first (breadth first)."""
    pending = collections.deque([top])
    while pending:
        here = pending.popleft()
        entries = client.listdir(here)
        yield here, entries
        pending.extend(m.filename for m in entries if m.is_dir)


def _to_stdout(client: Client, path: str, meta: Metadata, progress: bool = True) -> None:
    if meta.is_dir:
        raise errors.error(errno.EISDIR, f"{_shown(path)} is a directory")
    _read_all(client, path, meta.file_size, sys.stdout.buffer.write, progress)
    sys.stdout.buffer.flush()


def cmd_get(args: argparse.Namespace) -> int:
    with _session() as client:
        path, meta = _existing(client, args.path)
        if meta.is_dir and not args.recursive:
            raise errors.error(errno.EISDIR, f"{_shown(path)} is a directory (use -r to copy "
                                             "a tree)")
        if args.local == "-":
            _to_stdout(client, path, meta)
            return 0
        local = args.local
        if os.path.isdir(local) and base(path):
            local = os.path.join(local, base(path))
        if not meta.is_dir:
            copied = _get_file(client, path, meta.file_size, local)
            _done(f"{_shown(path)} -> {local} ({copied} bytes)")
            return 0
        files = size = 0
        for here, entries in _pfs_tree(client, path):
            rel = here[len(path):].lstrip("/")
            where = os.path.join(local, *rel.split("/")) if rel else local
            try:
                os.mkdir(where)
            except FileExistsError:
                if not os.path.isdir(where):
                    raise errors.error(errno.ENOTDIR, f"local {where} exists and is not a "
                                                      "directory") from None
            except OSError as e:
                raise errors.error(e.errno or errno.EIO, f"cannot make local directory "
                                                         f"{where}: {e.strerror or e}") from None
            for m in entries:
                _checkpoint()
                if not m.is_dir and not is_temporary(base(m.filename)):
                    size += _get_file(client, m.filename, m.file_size,
                                      os.path.join(where, base(m.filename)))
                    files += 1
    _done(f"{_shown(path)} -> {local} ({files} files, {size} bytes)")
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    with _session() as client:
        def cat(arg: str) -> None:
            _to_stdout(client, *_existing(client, arg), progress=False)
        return _each("cat", args.paths, cat)


# --- looking ----------------------------------------------------------------------------------
def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(size: int, human_sizes: bool) -> str:
    return human(size) if human_sizes else str(size)


def _meta_line(name: str, meta: pb.FileMeta, human_sizes: bool) -> str:
    if meta.is_dir:
        return f"{'-':>14}  {_when(meta.mtime)}  w={'-':<3} {name}/"
    return (f"{_bytes(meta.size, human_sizes):>14}  {_when(meta.mtime)}  "
            f"w={meta.recipe.stripe_width:<3} {name}")


def _json_entry(meta: pb.FileMeta) -> dict[str, object]:
    """An entry as `--json` shows it; sizes in bytes, times in POSIX seconds."""
    entry: dict[str, object] = {"path": "/" + meta.path, "name": base(meta.path),
                                "type": "directory" if meta.is_dir else "file",
                                "ctime": meta.ctime, "mtime": meta.mtime}
    if not meta.is_dir:
        entry.update(size=meta.size, stripe_width=meta.recipe.stripe_width)
    return entry


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _listing(arg: str, show_all: bool) -> tuple[str, list[tuple[str, pb.FileMeta]], bool]:
    """One PATH of `pfs ls`: its canonical path, its entries as (name, metadata), and whether
    it is a directory (a file lists itself, by its path)."""
    path, must_be_dir = _pfs_path(arg)
    try:
        return path, [(base(m.path), m) for m in _entries(path)
                      if show_all or not base(m.path).startswith(".")], True
    except NotADirectoryError:
        meta = _stat(path)
        if meta.is_dir or must_be_dir:
            raise
        return path, [(meta.path, meta)], False


def _entries(path: str) -> Iterator[pb.FileMeta]:
    """The entries of a directory, a page at a time, outside any session."""
    after = ""
    while True:
        page = _call("List", pb.ListRequest(path=path, after=after), f"list {_shown(path)}")
        yield from page.entries
        if not page.more:
            return
        after = base(page.entries[-1].path)


def cmd_ls(args: argparse.Namespace) -> int:
    paths = args.paths or [""]
    last = len(paths) - 1
    found: list[dict[str, object]] = []
    listed = []

    def ls(i: int) -> None:
        path, entries, is_dir = _listing(paths[i], args.all)
        listed.append(path)
        if args.json:
            found.extend(_json_entry(meta) for _, meta in entries)
            return
        heading = is_dir and last > 0  # several: each directory under its name
        if heading:
            print(f"{_shown(path)}:")
        for name, meta in entries:
            print(_meta_line(name, meta, args.human) if args.long
                  else name + ("/" if meta.is_dir else ""))
        if heading and i != last:
            print()
    status = _each("ls", range(len(paths)), ls)
    if args.json and listed:
        _print_json(found)
    return status


def cmd_stat(args: argparse.Namespace) -> int:
    path, _ = _pfs_path(args.path)
    meta = _stat(path)
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
                  f"fileservers:   {list(r.servers)}"
                  + ("  (copy k of column c: entry k * width + c)" if r.replicas > 1 else "")]
    print("\n".join(lines))
    return 0


def _usage(top: str) -> list[tuple[str, int]]:
    """(directory, bytes of the files in and below it) for every directory of the tree at
    `top`, each after those below it and `top` last, as du lists them; for a file, [(its path,
    its size)]. Walked depth first without recursion: trees may be deeper than Python's stack."""
    meta = _stat(top)
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
        for m in _entries(here):
            _checkpoint()
            if m.is_dir:
                below.append(m.path)
            else:
                totals[here] += m.size
        pending.extend((d, False) for d in reversed(below))
    for here in order[:-1]:  # a directory's total is complete before its parent's is used
        totals[parent(here)] += totals[here]
    return [(d, totals[d]) for d in order]


def cmd_du(args: argparse.Namespace) -> int:
    def du(arg: str) -> None:
        sizes = _usage(_pfs_path(arg)[0])
        for where, size in sizes[-1:] if args.summarize else sizes:
            print(f"{_bytes(size, args.human)}\t{_shown(where)}")
    return _each("du", args.paths or [""], du)


def _fileserver_usage(server: pb.Fileserver, credentials: Credentials) -> dict[str, object]:
    """What a fileserver stores and how much room its disk has, as `df --json` shows it; with
    "error" instead when it does not answer."""
    row: dict[str, object] = {"index": server.index, "address": server.address,
                              "online": server.online}
    if not server.online:
        return row
    try:
        with credentials.channel(server.address) as channel:
            health = fs_pb_grpc.FileServerStub(channel).Health(fs_pb.HealthRequest(), timeout=10)
    except grpc.RpcError as e:
        row["error"] = str(errors.from_rpc(e, f"fileserver [{server.index}] at "
                                              f"{server.address}").strerror)
        return row
    row.update(objects=health.objects, bytes_stored=health.bytes_stored,
               disk_total_bytes=health.disk_total_bytes, disk_free_bytes=health.disk_free_bytes)
    return row


def cmd_df(args: argparse.Namespace) -> int:
    reply = _call("Status", pb.StatusRequest(), "df")
    credentials = Credentials()
    rows = [_fileserver_usage(f, credentials) for f in reply.fileservers]
    answered = [r for r in rows if "bytes_stored" in r]
    totals = {"bytes_stored": sum(r["bytes_stored"] for r in answered),
              "objects": sum(r["objects"] for r in answered)}
    for r in rows:
        if "error" in r:
            _warn("df", str(r["error"]))
    if args.json:
        _print_json({"fileservers": rows, **totals})
    else:
        size = functools.partial(_bytes, human_sizes=args.human)
        print(f"{'':5}{'fileserver':<22} {'stored':>12} {'objects':>8} {'disk size':>12} "
              f"{'disk free':>12} {'use':>4}")
        for r in rows:
            where = f"{'[' + str(r['index']) + ']':<5}{r['address']:<22}"
            if "bytes_stored" not in r:
                print(f"{where} {'OFFLINE' if not r['online'] else 'not answering'}")
                continue
            used = r["disk_total_bytes"] - r["disk_free_bytes"]
            use = f"{100 * used // r['disk_total_bytes']}%" if r["disk_total_bytes"] else "-"
            print(f"{where} {size(r['bytes_stored']):>12} {r['objects']:>8} "
                  f"{size(r['disk_total_bytes']):>12} {size(r['disk_free_bytes']):>12} {use:>4}")
        print(f"{'total':<27} {size(totals['bytes_stored']):>12} {totals['objects']:>8}")
    short = len(answered) < max(len(rows), reply.expected_fileservers)
    return 1 if short else 0


# --- changing the tree ------------------------------------------------------------------------
_Item = TypeVar("_Item")


def _each(command: str, items: Iterable[_Item], action: Callable[[_Item], None]) -> int:
    """Runs `action` on every item (a path, or its index); a failure is reported and the rest
    still done. 1 if any failed."""
    status = 0
    for item in items:
        _checkpoint()
        try:
            action(item)
        except OSError as e:
            _warn(command, str(e.strerror or e))
            status = 1
    return status


def cmd_mkdir(args: argparse.Namespace) -> int:
    with _session() as client:
        def make(arg: str) -> None:
            path, _ = _pfs_path(arg)
            if args.parents:
                _makedirs(client, path)
            else:
                client.mkdir(path)
        return _each("mkdir", args.paths, make)


def _remove_tree(client: Client, top: str) -> None:
    """rm -r: the files of every directory of the tree, then the directories, bottom up."""
    directories = []
    for here, entries in _pfs_tree(client, top):
        directories.append(here)
        for m in entries:
            _checkpoint()
            if not m.is_dir:
                try:
                    client.delete(m.filename)
                except FileNotFoundError:
                    pass
    for d in reversed(directories):
        client.rmdir(d)


def cmd_rm(args: argparse.Namespace) -> int:
    with _session() as client:
        def remove(arg: str) -> None:
            path, must_be_dir = _pfs_path(arg)
            meta = _lookup(client, path)
            if meta is None:
                if args.force:
                    return
                raise errors.error(errno.ENOENT, f"no such file or directory: {_shown(path)}")
            if not meta.is_dir:
                if must_be_dir:
                    raise errors.error(errno.ENOTDIR, f"{_shown(path)} is not a directory")
                client.delete(path)
            elif not args.recursive:
                raise errors.error(errno.EISDIR, f"{_shown(path)} is a directory (use -r to "
                                                 "remove it and everything in it)")
            elif not path:
                raise errors.error(errno.EBUSY, "refusing to remove the root directory")
            else:
                _remove_tree(client, path)
        return _each("rm", args.paths, remove)


def cmd_mv(args: argparse.Namespace) -> int:
    with _session() as client:
        src, _ = _existing(client, args.src)
        dst, into = _pfs_path(args.dst)
        there = _lookup(client, dst)
        if there is not None and there.is_dir and dst != src:
            dst = join(dst, base(src))  # as mv: into an existing directory
            there = _lookup(client, dst)
        elif into and there is None:
            raise errors.error(errno.ENOENT, f"no such directory: {_shown(dst)}")
        if dst == src:
            raise errors.error(errno.EINVAL, f"{_shown(src)} and {_shown(dst)} are the same")
        if there is not None and not there.is_dir and not args.force:
            raise errors.error(errno.EEXIST, f"{_shown(dst)} exists (use --force to replace it)")
        client.rename(src, dst)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = _call("Status", pb.StatusRequest(), "status")
    online = sum(1 for f in reply.fileservers if f.online)
    if args.json:
        _print_json({"metaserver": metaserver(), "files": reply.files,
                     "sessions": reply.sessions, "block_size": reply.block_size,
                     "stripe_blocks": reply.stripe_blocks, "replicas": reply.replicas,
                     "degraded_files": reply.degraded_files,
                     "resync_ranges": reply.resync_ranges, "resync_bytes": reply.resync_bytes,
                     "degraded": [{"path": d.path, "fileserver": d.fileserver,
                                   "missed_bytes": d.missed_bytes or None}
                                  for d in reply.degraded],
                     "expected_fileservers": reply.expected_fileservers,
                     "fileservers": [{"index": f.index, "name": f.name, "address": f.address,
                                      "online": f.online, "lost_data_at": f.lost_data_at or None}
                                     for f in reply.fileservers]})
    else:
        print(f"metaserver {metaserver()}: {reply.files} files, {reply.sessions} client "
              f"sessions, block {reply.block_size} B x {reply.stripe_blocks} per stripe unit")
        members = len(reply.fileservers)
        print(f"fileservers: {online} online of {reply.expected_fileservers} expected"
              + (f" ({members} members)" if members != reply.expected_fileservers else ""))
        if reply.degraded_files:
            whole = " and whole copies" if any(not d.missed_bytes for d in reply.degraded) else ""
            print(f"copies: {reply.degraded_files} files degraded (a copy stale), resyncing: "
                  f"{reply.resync_ranges} byte ranges to go ({human(reply.resync_bytes)}{whole})")
            for d in reply.degraded:
                print(f"  {_shown(d.path)}: its copy on fileserver {d.fileserver} is stale, "
                      + (f"{human(d.missed_bytes)} to resync" if d.missed_bytes else
                         "all of it to resync"))
        else:
            print(f"copies: all in sync ({reply.replicas} per stripe unit by default)")
        for f in reply.fileservers:
            lost = f"  lost its data {_when(f.lost_data_at)}" if f.lost_data_at else ""
            print(f"  [{f.index}] {f.name[:16]:<16} {f.address:<22} "
                  f"{'online' if f.online else 'OFFLINE'}{lost}")
    offline = [f.name or str(f.index) for f in reply.fileservers if not f.online]
    if offline:
        _warn("status", f"offline: {', '.join(offline)}; start them (pfs fileserver --name "
                        "NAME ...) or see their logs")
    return 0 if online >= reply.expected_fileservers and not offline else 1


def cmd_scrub(args: argparse.Namespace) -> int:
    path, _ = _pfs_path(args.path)
    last, unrepairable = pb.ScrubProgress(), []
    with _metaserver_stub(f"scrub {_shown(path)}") as stub:
        for last in stub.Scrub(pb.ScrubRequest(path=path)):
            unrepairable += last.unrepairable
            if not last.done:
                _progress_line(f"{last.files} files, {human(last.bytes)} checked; "
                               f"now {_shown(last.current)}")
    _progress_end()
    found = [f"{last.damaged} damaged or differing pieces of copies"] * bool(last.damaged) + \
        [f"{len(unrepairable)} files damaged beyond repair"] * bool(unrepairable)
    print(f"scrubbed {last.files} files ({human(last.bytes)} of copies read): "
          + (", ".join(found) or "all good"))
    if last.damaged:
        print("  the damaged copies are stale now, and being resynced from good ones: "
              "`pfs status` shows the progress")
    for damaged in unrepairable:
        print(f"  {_shown(damaged)} has no other copy to repair it from: reads of its damaged "
              "bytes fail with EIO; restore it from a backup")
    return 1 if last.damaged or unrepairable else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run
    return run(args.size_mib, args.rounds, metaserver())


def interrupted(command: str | None) -> int:
    """What Ctrl-C ends a command with: one line, status 130 (128 + SIGINT)."""
    _progress_end()
    print(f"pfs {command}: interrupted" if command else "pfs: interrupted", file=sys.stderr,
          flush=True)
    return 130


def _reporting_errors(run, graceful: bool = False):
    """Turns an OSError into one line on stderr and exit status 1, Ctrl-C into one line and
    status 130, and a closed standard output (`pfs get x - | head`) into a quiet exit.
    `graceful`: the command cleans up after Ctrl-C (see _CtrlC)."""
    @functools.wraps(run)
    def wrapper(args):
        global _ctrl_c, _progress_mode
        _ctrl_c = _CtrlC(args.command, graceful)
        _progress_mode = ("never" if getattr(args, "quiet", False) else
                          "always" if getattr(args, "progress", False) else "auto")
        previous = signal.signal(signal.SIGINT, _ctrl_c)
        try:
            status = run(args)
            _ctrl_c.checkpoint()  # pressed after the last safe point: still interrupted
            return status
        except KeyboardInterrupt:
            return interrupted(args.command)
        except BrokenPipeError:
            # Nothing more can be written there, not even at exit.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except OSError as e:
            if _ctrl_c.pending:  # what failed was cut short by Ctrl-C
                return interrupted(args.command)
            _warn(args.command, str(e.strerror or e))
            return 1
        finally:
            signal.signal(signal.SIGINT, previous)
            _ctrl_c = None
    return wrapper


# --- the command line -------------------------------------------------------------------------
def add_commands(sub) -> None:
    def command(name: str, summary: str, description: str, run,
                human_flag: bool = False) -> argparse.ArgumentParser:
        """A command's parser; `human_flag`: -h is --human-readable (as with ls, du and df),
        and help is --help alone."""
        p = sub.add_parser(name, help=summary, description=description,
                           formatter_class=HelpFormatter, add_help=not human_flag)
        if human_flag:
            p.add_argument("--help", action="help", help="show this help message and exit")
            p.add_argument("-h", "--human-readable", dest="human", action="store_true",
                           help="sizes as 1.5 KiB, 3.0 GiB (default: in bytes)")
        # Commands with a session stop at a safe point, to clean up; those that only look
        # (and bench, which runs its own loops) stop at once.
        p.set_defaults(run=_reporting_errors(run, graceful=name in GRACEFUL))
        return p

    def copying(p: argparse.ArgumentParser, what: str) -> None:
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
        progress(p)

    def progress(p: argparse.ArgumentParser) -> None:
        quiet = p.add_mutually_exclusive_group()
        quiet.add_argument("--progress", action="store_true",
                           help="show the bytes copied on stderr as the copy goes, even when "
                                "stderr is not a terminal (default: on a terminal, for copies "
                                "over 32 MiB)")
        quiet.add_argument("-q", "--quiet", action="store_true",
                           help="print neither progress nor the line that sums up the copy; "
                                "errors still (default: off)")

    def json_flag(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--json", action="store_true",
                       help=f"print {what} as JSON (default: text)")

    p = command("put", "copy a local file (or tree, -r) into PFS", """\
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

LOCAL "-" is standard input: pfs put - PATH.""", cmd_put)
    p.add_argument("local", metavar="LOCAL", help='local file or directory; "-" for stdin')
    p.add_argument("path", metavar="PATH", help="PFS destination file or directory")
    copying(p, "local")

    p = command("get", "copy a PFS file (or tree, -r) to a local file", """\
Copy the PFS file PATH to LOCAL. As with cp: when LOCAL is an existing directory the copy
goes into it, under PATH's name, and an existing local file is replaced. The file is written
as a local temporary renamed into place, so an interrupted get leaves an existing local file
as it was.

With -r, a PFS directory is copied as a tree (like cp -r), merged into an existing local
directory; unfinished temporaries of other puts and writers (.NAME.pfs-tmp-*) are not copied.

LOCAL "-" is standard output: pfs get PATH - | ...""", cmd_get)
    p.add_argument("path", metavar="PATH", help="PFS file or directory")
    p.add_argument("local", metavar="LOCAL", help='local destination; "-" for stdout')
    p.add_argument("-r", "--recursive", action="store_true",
                   help="copy a PFS directory and everything in it (default: off)")
    progress(p)

    p = command("cat", "write PFS files to standard output", """\
Write the PFS files PATH..., one after the other, to standard output (as cat does). A
failure on one PATH is reported and the others are still written (exit status 1).""", cmd_cat)
    p.add_argument("paths", metavar="PATH", nargs="+", help="PFS file")

    p = command("cp", "copy a PFS file (or tree, -r) within PFS", """\
Copy the PFS file SRC to DST, as cp does: when DST is an existing directory the copy goes
into it, under SRC's name. Like put, the copy is atomic (a temporary renamed into place),
replaces an existing file only with --force and makes missing parents only with --parents.
The copy is striped as its source unless --stripe-width says otherwise.

With -r, a PFS directory is copied as a tree, as put -r copies a local one: a new tree
appears whole; onto an existing directory (with --force) it is merged, file by file.
Unfinished temporaries (.NAME.pfs-tmp-*) are not copied. To copy between PFS and local
files, use put and get.""", cmd_cp)
    p.add_argument("src", metavar="SRC", help="PFS file or directory to copy")
    p.add_argument("path", metavar="DST", help="PFS destination file or directory")
    copying(p, "PFS")

    p = command("ls", "list a directory", """\
List the entries of a PFS directory (default: the root), one per line, directories with a
trailing "/"; names starting with "." are shown only with -a. Listing a file shows that file.
Does not need a session: works while the cluster is short of fileservers.

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
    json_flag(p, "the entries")

    p = command("du", "show the bytes stored under directories", """\
Show the bytes in the files of each directory of the tree at PATH (default: the root),
counting everything below it, deepest first, as du does; with -s only PATH's own total.
Sizes are the files' sizes, in bytes unless -h. Does not need a session.""", cmd_du,
                human_flag=True)
    p.add_argument("paths", metavar="PATH", nargs="*",
                   help="directory (or file) to measure (default: the root)")
    p.add_argument("-s", "--summarize", action="store_true",
                   help="only the total of each PATH (default: every directory)")

    p = command("df", "show each fileserver's stored bytes and free disk", """\
Show, for each fileserver, the bytes of file data it stores, its number of objects (one per
file it holds stripes of), and the size and free space of the disk that holds its data
directory, and the cluster's totals of stored bytes and objects. Fileservers on one machine
share its disk. Exit status 1 when a fileserver is offline or does not answer.

--json prints one object: "fileservers" (each with "index", "address", "online" and, when it
answers, "bytes_stored", "objects", "disk_total_bytes", "disk_free_bytes"; else "error"),
"bytes_stored" and "objects".""", cmd_df, human_flag=True)
    json_flag(p, "the figures")

    p = command("stat", "show a file's or directory's metadata", """\
Show the metadata of a PFS file or directory: for a file its size (including bytes other
clients have written but not yet closed), times and striping.""", cmd_stat)
    p.add_argument("path", metavar="PATH", help="PFS file or directory")

    p = command("mkdir", "create directories", """\
Create PFS directories. Without -p the parent must exist and the directory must not.""",
                cmd_mkdir)
    p.add_argument("paths", metavar="PATH", nargs="+", help="directory to create")
    p.add_argument("-p", "--parents", action="store_true",
                   help="create missing parents too, and accept existing directories "
                        "(default: off)")

    p = command("mv", "move or rename a file or directory", """\
Move (rename) SRC to DST, atomically, as mv does: when DST is an existing directory, SRC
moves into it under its own name. An existing file at DST is replaced only with --force.
A directory may replace an empty directory. Files open in any client cannot be moved or
replaced.""", cmd_mv)
    p.add_argument("src", metavar="SRC", help="PFS file or directory to move")
    p.add_argument("dst", metavar="DST", help="new path, or an existing directory to move into")
    p.add_argument("-f", "--force", action="store_true",
                   help="replace an existing file at DST (default: off, it is an error)")

    p = command("rm", "delete files (and trees, -r)", """\
Delete PFS files. A directory needs -r, which removes it and everything in it: the files of
each directory first, then the directories, bottom up. The root cannot be removed. A failure
on one PATH is reported and the others are still removed (exit status 1). Files open in any
client cannot be deleted.""", cmd_rm)
    p.add_argument("paths", metavar="PATH", nargs="+", help="file or directory to delete")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="remove directories and their contents (default: off)")
    p.add_argument("-f", "--force", action="store_true",
                   help="a PATH that does not exist is no error (default: off, it is one)")

    p = command("status", "show the cluster's servers", """\
Show the metaserver's fileservers (online or not), its client sessions and its file count.
Exit status 1 when fewer fileservers are online than expected. Needs no session.

--json prints one object: "metaserver", "files", "sessions", "block_size", "stripe_blocks",
"expected_fileservers" and "fileservers" (each with "index", "address" and "online").""",
                cmd_status)
    json_flag(p, "the cluster's state")

    p = command("scrub", "check every copy of files against checksums and each other", """\
Read every copy of every file at or below PATH (default: the whole tree), check each unit
against its CRC32C and the copies of each stripe unit against each other, and repair: a copy
found damaged or differing is marked stale and resynced from a good one in the background
(`pfs status` shows the progress). Damage in a file with a single copy cannot be repaired: it
is reported by path, and reads of the damaged bytes fail with EIO. Clients keep working
meanwhile: scrub reads a few MiB at a time under a read token. Exit status 1 when anything
was damaged. Needs no session.""", cmd_scrub)
    p.add_argument("path", metavar="PATH", nargs="?", default="/",
                   help="file or directory to check (default: the root)")

    p = command("bench", "measure striped read/write throughput", """\
Write (through close) and read a scratch file at stripe width 1 and at full width, and show the
throughput; then the latency of create, open, close and delete, and of a 4 KiB random read
(each a median of several rounds; the client cache is off). Scratch files are deleted
afterwards.""", cmd_bench)
    p.add_argument("--size-mib", type=at_least_one(int), default=64, metavar="M",
                   help="size of the scratch file in MiB, at least 1 (default %(default)s)")
    p.add_argument("--rounds", type=at_least_one(int), default=5, metavar="N",
                   help="runs per measurement; the median is shown (default %(default)s)")
