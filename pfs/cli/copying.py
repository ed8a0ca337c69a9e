"""Copies into PFS, as `put` and `cp` make them: a file, or a tree, from a local or a PFS source.

Invariant: the target name holds nothing (or its old file) or the whole copy, never part of one:
a file is written and fsynced as `.NAME.pfs-tmp-<random>` next to its target and renamed into
place, a new tree is built under a temporary directory and renamed into place, and a copy that
fails or is interrupted removes its temporary. An existing file is replaced only with --force.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import os
import re
import stat as stat_mod
from typing import BinaryIO, Callable, Iterable, Iterator

from pfs import fileio
from pfs.client import PFS_READ_WRITE, Client
from pfs.client.namespace import walk
from pfs.metadata import Metadata
from pfs.protocol import errnos
from pfs.protocol.paths import base, is_temporary, join, parent, temporary_path

from .arguments import pfs_path
from .connection import lookup
from .console import COPY_CHUNK, Console, shown
from .walk import makedirs, remove_tree

#: A tree as the copies take it: (relative directory, subdirectories, files), top first.
Tree = Iterable[tuple[str, list[str], list[str]]]


@dataclasses.dataclass
class Source:
    """What a copy into PFS reads: an open binary file, its size when known (for the progress
    count), how messages name it, the stripe width its copy gets, and whether it is a PFS file
    (read by PFS calls, which Ctrl-C must not cut short; a local file's reads it may)."""
    file: BinaryIO
    size: int | None
    shown: str
    width: int | None  # None: as wide as the cluster allows
    replicas: int  # 0: the cluster's default
    in_pfs: bool = False


#: Opens the source of a tree's file, by its path relative to the tree.
SourceOf = Callable[[str], contextlib.AbstractContextManager[Source]]


def _open_local(local: str) -> BinaryIO:
    """A local file to copy from, its errors naming it."""
    try:
        f = open(local, "rb")
    except FileNotFoundError:
        raise errnos.error(errno.ENOENT, f"no such local file: {local}") from None
    except IsADirectoryError:
        raise errnos.error(errno.EISDIR, f"{local} is a directory (use -r to copy a tree)") \
            from None
    except OSError as e:
        raise errnos.error(e.errno or errno.EIO, f"cannot read local file {local}: "
                                                 f"{e.strerror or e}") from None
    if stat_mod.S_ISDIR(os.fstat(f.fileno()).st_mode):  # opening a directory may succeed
        f.close()
        raise errnos.error(errno.EISDIR, f"{local} is a directory (use -r to copy a tree)")
    return f


@contextlib.contextmanager
def local_source(local: str, args: argparse.Namespace) -> Iterator[Source]:
    with _open_local(local) as f:
        st = os.fstat(f.fileno())
        yield Source(f, st.st_size if stat_mod.S_ISREG(st.st_mode) else None, local,
                     args.stripe_width, args.replicas or 0)


@contextlib.contextmanager
def pfs_source(client: Client, path: str, args: argparse.Namespace) -> Iterator[Source]:
    """The PFS file `path` to copy from; its copy is striped and replicated as it is unless
    the options say otherwise."""
    meta = client.stat(path)
    with fileio.open(path, "rb", client=client, buffering=0) as f:
        yield Source(f, meta.file_size, shown(path), args.stripe_width or
                     meta.recipe.stripe_width, args.replicas or meta.recipe.replicas,
                     in_pfs=True)


def local_tree(top: str, console: Console) -> Tree:
    """(relative directory, subdirectories, regular files) of a local tree, top first, sorted;
    what cannot be copied (symbolic links to directories, devices, pipes) is skipped with a
    warning, and an unreadable directory is an error."""
    def fail(e: OSError) -> None:
        raise errnos.error(e.errno or errno.EIO, f"cannot read local directory {e.filename}: "
                                                 f"{e.strerror or e}")
    for here, dirs, files in os.walk(top, onerror=fail):
        rel = os.path.relpath(here, top)
        rel = "" if rel == "." else rel.replace(os.sep, "/")
        kept_dirs = []
        for d in sorted(dirs):
            if os.path.islink(os.path.join(here, d)):
                console.warn(f"skipping {os.path.join(here, d)}: a symbolic link to a directory")
            else:
                kept_dirs.append(d)
        dirs[:] = kept_dirs
        kept_files = []
        for f in sorted(files):
            full = os.path.join(here, f)
            if os.path.isfile(full):
                kept_files.append(f)
            else:
                console.warn(f"skipping {full}: not a regular file")
        yield rel, kept_dirs, kept_files


def pfs_tree(client: Client, top: str) -> Tree:
    """(relative directory, subdirectories, files) of a PFS tree, top first; the unfinished
    temporaries of other copies and writers (.NAME.pfs-tmp-*) are left out."""
    for here, entries in walk(client, top):
        kept = [m for m in entries if not is_temporary(base(m.filename))]
        yield (here[len(top):].lstrip("/"), [base(m.filename) for m in kept if m.is_dir],
               [base(m.filename) for m in kept if not m.is_dir])


@contextlib.contextmanager
def naming_target(tmp: str, target: str) -> Iterator[None]:
    """Failures while writing `target` through its temporary `tmp` (a file, or a tree built
    aside) name the target: users know only that name, and the temporary is gone by the time
    they read the message."""
    try:
        yield
    except OSError as e:
        if not e.strerror or tmp not in e.strerror:
            raise
        quoted = re.compile("'" + re.escape(tmp) + "([^']*)'")
        raise errnos.error(e.errno, quoted.sub(lambda m: shown(target + m.group(1)),
                                               e.strerror)) from None


def _refuse_existing(meta: Metadata | None, path: str, force: bool) -> None:
    if meta is None:
        return
    if meta.is_dir:
        raise errnos.error(errno.EISDIR, f"{shown(path)} is a directory")
    if not force:
        raise errnos.error(errno.EEXIST, f"{shown(path)} exists (use --force to replace it)")


class Copier:
    """The copies of one `put` or `cp` to the destination args.path, as cp makes them (into it
    when it is a directory, else as it), with its --force and --parents."""

    def __init__(self, client: Client, console: Console, args: argparse.Namespace) -> None:
        self.client, self.console = client, console
        self.destination_arg, self.force, self.parents = args.path, args.force, args.parents

    def _write_all(self, fd: int, source: Source) -> int:
        """Copies `source` to the open PFS file `fd` from offset 0; the bytes copied."""
        buf, offset = bytearray(COPY_CHUNK), 0
        view = memoryview(buf)
        self.console.progress(0, source.size)
        while True:
            if source.in_pfs:  # PFS calls: Ctrl-C stops the copy between two of them
                self.console.checkpoint()
                n = source.file.readinto(view)
            else:
                try:
                    with self.console.local_io():
                        n = source.file.readinto(view)
                except OSError as e:
                    raise errnos.error(e.errno or errno.EIO, f"cannot read {source.shown}: "
                                                             f"{e.strerror or e}") from None
            if not n:
                return offset
            offset += self.client.write(fd, view, n, offset)
            self.console.progress(offset, source.size)

    def _discard(self, tmp: str, fd: int | None) -> None:
        """Best effort: removes a temporary file of a copy that failed or was interrupted (its
        cached bytes are dropped first, not written back)."""
        if fd is not None:
            with contextlib.suppress(OSError):
                self.client.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                self.client.close(fd)
        try:
            self.client.delete(tmp)
        except FileNotFoundError:
            pass
        except OSError as e:
            self.console.warn(f"could not remove the temporary {shown(tmp)} "
                              f"({e.strerror or e}); remove it with `pfs rm {tmp}`")

    def _file_in(self, source: Source, path: str) -> int:
        """Writes `source` to a new file `path` (which must not exist) and closes it; the bytes
        copied. On failure the file is removed (callers pass a temporary name)."""
        client = self.client
        try:
            client.create(path, source.width, source.replicas)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            raise errnos.error(e.errno, f"{e.strerror} (give a smaller --stripe-width or "
                                        "--replicas; `pfs status` shows the fileservers)") \
                from None
        fd = None
        try:
            fd = client.open(path, PFS_READ_WRITE)
            copied = self._write_all(fd, source)
            client.fsync(fd)  # on the fileservers' disks before it takes the target's name
            client.close(fd)
            fd = None
            self.console.progress_end()
            return copied
        except BaseException:
            self._discard(path, fd)
            raise

    def _put_one(self, source: Source, target: str, force: bool) -> int:
        """Copies `source` to `target` atomically: a temporary next to it, renamed into place."""
        tmp = temporary_path(target)
        with naming_target(tmp, target):
            copied = self._file_in(source, tmp)
        try:
            _refuse_existing(lookup(self.client, target), target, force)  # made meanwhile?
            self.console.checkpoint()
            self.client.rename(tmp, target)
        except BaseException:
            self._discard(tmp, None)
            raise
        return copied

    def _ensure_parent(self, path: str) -> None:
        """The parent directory of `path` exists (made with --parents), or a clear error."""
        up = parent(path)
        meta = lookup(self.client, up)
        if meta is not None and meta.is_dir:
            return
        if meta is not None:
            raise errnos.error(errno.ENOTDIR, f"{shown(up)} is not a directory")
        if not self.parents:
            raise errnos.error(errno.ENOENT, f"no such directory: {shown(up)} (create it with "
                                             f"`pfs mkdir -p {up}`, or use --parents)")
        makedirs(self.client, up)

    def _destination(self, name: str | None) -> tuple[str, Metadata | None]:
        """Where a copy of something called `name` goes, as with cp: into the destination when
        it is a directory, else the destination itself. With its metadata (None if absent)."""
        target, must_be_dir = pfs_path(self.destination_arg)
        meta = lookup(self.client, target)
        if meta is not None and meta.is_dir and name:
            target = join(target, name)
            return target, lookup(self.client, target)
        if meta is not None and meta.is_dir:
            raise errnos.error(errno.EISDIR, f"{shown(target)} is a directory: give the name to "
                                             f"write, e.g. {join(target, 'NAME')}")
        if must_be_dir:
            raise errnos.error(errno.ENOTDIR if meta else errno.ENOENT,
                               f"no such directory: {shown(target)}")
        return target, meta

    def copy_one(self, source: Source, name: str | None) -> str:
        """Copies one file called `name` (None: it has none, as standard input) to the
        destination; the line that sums the copy up."""
        target, meta = self._destination(name)
        if not target:
            raise errnos.error(errno.EISDIR, "the root is a directory")
        if source.in_pfs and source.shown == shown(target):
            raise errnos.error(errno.EINVAL, f"{source.shown} is both source and destination")
        _refuse_existing(meta, target, self.force)
        self._ensure_parent(target)
        copied = self._put_one(source, target, self.force)
        return f"{source.shown} -> {shown(target)} ({copied} bytes)"

    def _tree_in(self, files_of: Tree, source_of: SourceOf, top: str,
                 merge: bool) -> tuple[int, int]:
        """Copies a tree into the PFS directory `top`, opening each file by its relative path
        with `source_of`; (files, bytes) copied. Merging into a directory others see, each file
        is replaced atomically; a tree being built aside is not seen yet, so its files are
        written in place."""
        files = size = 0
        for rel, dirs, names in files_of:
            here = join(top, rel)
            for d in dirs:
                self.console.checkpoint()
                directory = join(here, d)
                try:
                    self.client.mkdir(directory)
                except FileExistsError:  # merging: a directory of the same name is merged into
                    if not self.client.stat(directory).is_dir:
                        raise errnos.error(errno.ENOTDIR, f"{shown(directory)} is a file, not "
                                                          "a directory") from None
            for n in names:
                self.console.checkpoint()
                dest = join(here, n)
                with source_of(join(rel, n)) as source:
                    if merge:
                        # A directory in the way: refused now, rather than after the copy.
                        _refuse_existing(lookup(self.client, dest), dest, True)
                        size += self._put_one(source, dest, True)
                    else:
                        size += self._file_in(source, dest)
                files += 1
        return files, size

    def _tree_target(self, name: str) -> tuple[str, Metadata | None]:
        """Where a tree called `name` goes ("": its contents go into the destination itself),
        with its metadata; refused when a file is there, or a directory without --force."""
        if name:
            target, meta = self._destination(name)
        else:
            target = pfs_path(self.destination_arg)[0]
            meta = lookup(self.client, target)
        if meta is not None and not meta.is_dir:
            raise errnos.error(errno.ENOTDIR, f"{shown(target)} is a file, not a directory")
        if meta is not None and not self.force:
            raise errnos.error(errno.EEXIST, f"{shown(target)} exists (use --force to copy "
                                             "into it, replacing files of the same names)")
        return target, meta

    def copy_tree(self, files_of: Tree, source_of: SourceOf, name: str) -> tuple[str, int, int]:
        """Copies a tree (see _tree_in) called `name` as cp -r does. A tree that is not there
        yet appears whole: it is built aside and renamed into place. An existing one is merged
        into, file by file, only with --force. (target, files, bytes) copied."""
        target, meta = self._tree_target(name)
        if meta is not None:
            return (target, *self._tree_in(files_of, source_of, target, merge=True))
        if not target:
            raise errnos.error(errno.EINVAL, "the root directory exists")
        self._ensure_parent(target)
        tmp = temporary_path(target)
        self.client.mkdir(tmp)
        try:
            with naming_target(tmp, target):
                files, size = self._tree_in(files_of, source_of, tmp, merge=False)
            if lookup(self.client, target) is not None:
                raise errnos.error(errno.EEXIST, f"{shown(target)} was created meanwhile "
                                                 "(use --force to copy into it)")
            self.console.checkpoint()
            self.client.rename(tmp, target)
        except BaseException:
            try:
                remove_tree(self.client, tmp, self.console.checkpoint)
            except OSError as e:
                self.console.warn(f"could not remove the temporary {shown(tmp)} "
                                  f"({e.strerror or e}); remove it with `pfs rm -r {tmp}`")
            raise
        return target, files, size
