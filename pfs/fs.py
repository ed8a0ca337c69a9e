"""PFS as an fsspec filesystem under the protocol "pfs://" (so pandas.read_csv("pfs://a/b.csv")).

A "wb" file replaces its target atomically on close (readers see the old file or the new one,
never a partial one), and every failure is a standard OSError subclass with its errno.

    fs = fsspec.filesystem("pfs", metaserver="10.0.0.1:50050")
    fs.ls("tables")                          # the entries of a directory
    with fsspec.open("pfs://tables/2026/a.csv", "w") as f: ...   # tables/2026/ made if missing
    pandas.read_csv("pfs://tables/2026/a.csv", storage_options={"metaserver": "10.0.0.1:50050"})

Paths: "pfs://a/b", "pfs:///a/b", "/a/b" and "a/b" are the same path; the root is "" (or "/",
"pfs://"). Names in listings are canonical paths without the protocol ("a/b"). A path with an
empty, "." or ".." component is OSError(EINVAL). Nothing is cached: every ls and info asks the
metaserver, so listings are those of the moment, whatever other clients do.

Writing:
- "wb" (and "w", "w+b") writes a temporary file next to the target, named ".<name>.pfs-tmp-<random>"
  (hidden from pyarrow's and dask's dataset discovery by its leading dot), and renames it over
  the target on close: readers see the old file or the new one, never a partial one. An exception
  inside `with fs.open(...)` (binary or text mode) removes the temporary and leaves the old file.
  A replaced file is a new file: it gets the default striping (or `stripe_width=`), not the old
  one's. Readers that have the old file open keep reading it until they close (POSIX: the
  rename replaces a file open anywhere). A writer that dies
  before closing leaves its temporary behind; an aborted one leaves the parent directories it
  made. `fsspec.open()` closes its files without saying why, so with it an exception still
  commits what was written.
- "xb" creates the file in place (FileExistsError if it exists), "ab" appends in place (see
  pfs.open): their data is visible to others while it is written.
- Every mode that writes creates missing parent directories, as object stores do.
- In an fsspec transaction (`with fs.transaction:`), "wb" files are renamed into place when the
  transaction completes, and discarded if it fails.

Namespace: mkdir/makedirs/rmdir as in os; rm(path) removes files (IsADirectoryError for a
directory), rm(path, recursive=True) whole trees (the root is emptied, never removed). mv is an
atomic PFS rename, for files and whole directories alike (`recursive` changes nothing); as with
the shell's mv, a destination that is an existing directory (or ends with "/") receives the
source inside it, a file there is replaced, and missing parents are created. cp_file copies
bytes (the copy gets the default striping).

Errors are the standard exceptions: FileNotFoundError, FileExistsError, IsADirectoryError,
NotADirectoryError, OSError(ENOTEMPTY/EBUSY/EINVAL). exists/isdir/isfile are False for missing
and invalid paths, and raise for other failures (an unreachable metaserver is not "missing").

Storage options: `metaserver="host:port"` (default PFS_METASERVER), or `client=` an initialized
pfs.Client. Without metaserver or client, the filesystem
shares pfs.open's process-wide client. Only filesystems made with `metaserver=` can be pickled
(to dask workers, say): a client cannot.
"""
from __future__ import annotations

import builtins
import datetime
import errno
import io
import logging
import os
from glob import has_magic
from typing import Any

try:
    from fsspec.callbacks import DEFAULT_CALLBACK
    from fsspec.spec import AbstractFileSystem
except ImportError as e:  # fsspec is an extra: say which
    raise ImportError(f"pfs.fs needs fsspec ({e}): pip install \"pfs[data]\" installs it with the "
                      "data tools, pip install \"pfs[fsspec]\" alone") from e

from . import fileio
from .client import Client
from .client.namespace import makedirs
from .metadata import Metadata
from .protocol.paths import base, canonical, join, parent, temporary_path

log = logging.getLogger("pfs.fs")

_INVALID = (errno.EINVAL, errno.ENAMETOOLONG)


def _entry(meta: Metadata) -> dict[str, Any]:
    entry = {"name": meta.filename, "size": meta.file_size,
             "type": "directory" if meta.is_dir else "file",
             "created": meta.ctime, "mtime": meta.mtime}
    if not meta.is_dir:
        entry["stripe_width"] = meta.recipe.stripe_width
    return entry


class _Replacing:
    """A buffered file written under a temporary name and renamed over its target on close
    (or, in a transaction, on commit); an exception inside its `with` discards it instead."""

    def _start(self, fs: "PFSFileSystem", temp: str, target: str, autocommit: bool) -> None:
        self.fs, self.path = fs, target
        self._temp, self._autocommit = temp, autocommit
        self._outcome: str | None = None  # "committed" or "discarded" once decided

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()  # writes the temporary back and closes it
        except BaseException:
            self._discard()
            raise
        if self._outcome is None and self._autocommit:
            self.commit()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.discard()
        return super().__exit__(exc_type, *rest)

    def commit(self) -> None:
        """Renames the written data over the target (closing the file first if need be)."""
        if not self.closed:
            self._autocommit = False
            self.close()
        if self._outcome is not None:
            return
        try:
            self.fs._replace(self._temp, self.path)
        except BaseException:
            self._discard()
            raise
        self._outcome = "committed"

    def discard(self) -> None:
        """Drops what was written: the target keeps its old content."""
        if self._outcome is None:
            self._outcome = "discarded"
            if not self.closed:
                try:
                    super().close()
                except Exception as e:  # noqa: BLE001 - the data is dropped anyway
                    log.debug("closing discarded %r: %s", self._temp, e)
            self._remove(self._temp)

    def _discard(self) -> None:
        if self._outcome is None:
            self._outcome = "discarded"
            self._remove(self._temp)

    def _remove(self, temp: str) -> None:
        try:
            self.fs.client.delete(temp, open_ok=True)
        except OSError as e:
            log.warning("could not remove the temporary %r: %s", temp, e)


class _ReplacingWriter(_Replacing, io.BufferedWriter):
    pass


class _ReplacingRandom(_Replacing, io.BufferedRandom):
    pass


class _TextFile(io.TextIOWrapper):
    """Text over a binary PFS file, telling a replacing file when its `with` failed."""

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None and isinstance(self.buffer, _Replacing):
            self.buffer.discard()
        return super().__exit__(exc_type, *rest)


class PFSFileSystem(AbstractFileSystem):
    """The files and directories of one PFS cluster, through one pfs.Client."""

    protocol = "pfs"
    root_marker = ""

    def __init__(self, metaserver: str | None = None, client: Client | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if metaserver and client is not None:
            raise ValueError("pass either metaserver= or client=, not both")
        self._given = client
        self._own = Client(metaserver) if metaserver else None

    @property
    def client(self) -> Client:
        """The client this filesystem works through, with a live session."""
        if self._given is not None:
            return self._given
        if self._own is None:
            return fileio.default_client()
        self._own.initialize()  # the same session, or a new one if it was lost
        return self._own

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        # "pfs://a/b", "pfs:///a/b", "/a/b", "a/b/": slashes around the path are URL syntax.
        return super()._strip_protocol(path).strip("/")

    def _path(self, path: Any) -> str:
        """The canonical path of a URL or path; OSError EINVAL (or ENAMETOOLONG) if it is not
        valid, before anything is done with it."""
        return canonical(self._strip_protocol(path))

    # --- looking ------------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of a directory, by name; [the file itself] for a file."""
        path = self._path(path)
        try:
            entries = [_entry(m) for m in self.client.listdir(path)]
        except NotADirectoryError:
            entries = [self.info(path)]  # a file; or NotADirectoryError for "file/x"
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """name, size, type ("file" or "directory"), created, mtime (POSIX seconds), and a
        file's stripe_width."""
        return _entry(self.client.stat(self._path(path)))

    def _info_if_any(self, path: str) -> dict[str, Any] | None:
        try:
            return self.info(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno in _INVALID:
                return None
            raise

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self._info_if_any(path) is not None

    def isdir(self, path: str) -> bool:
        info = self._info_if_any(path)
        return info is not None and info["type"] == "directory"

    def isfile(self, path: str) -> bool:
        info = self._info_if_any(path)
        return info is not None and info["type"] == "file"

    def created(self, path: str) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.info(path)["created"], datetime.timezone.utc)

    def modified(self, path: str) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.info(path)["mtime"], datetime.timezone.utc)

    # --- directories --------------------------------------------------------------------------
    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Creates a directory (FileExistsError if the path exists), and its missing parents
        unless create_parents=False (then FileNotFoundError)."""
        path = self._path(path)
        if create_parents and parent(path):
            makedirs(self.client, parent(path))
        self.client.mkdir(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Creates a directory and its missing parents; an existing directory is
        FileExistsError unless exist_ok, an existing file always is (as os.makedirs)."""
        path = self._path(path)
        if parent(path):
            makedirs(self.client, parent(path))
        try:
            self.client.mkdir(path)
        except FileExistsError:
            if not exist_ok or not self.isdir(path):
                raise

    def rmdir(self, path: str) -> None:
        """Removes an empty directory (OSError ENOTEMPTY otherwise; the root: EBUSY)."""
        self.client.rmdir(self._path(path))

    # --- removing and moving ------------------------------------------------------------------
    def rm_file(self, path: str) -> None:
        """Removes a file (IsADirectoryError for a directory)."""
        path = self._path(path)
        if path == self.root_marker:
            raise IsADirectoryError(errno.EISDIR, "the PFS root is a directory, not a file")
        self.client.delete(path, open_ok=True)

    _rm = rm_file  # the older name, which fsspec still calls in places

    def rm(self, path: str | list[str], recursive: bool = False,
           maxdepth: int | None = None) -> None:
        """Removes files (globs and lists too); with recursive=True, directories with all they
        hold. The root directory is emptied, never removed."""
        client = self.client
        for p in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            try:
                if p == self.root_marker:
                    raise IsADirectoryError(errno.EISDIR, "the root is a directory")
                client.delete(p, open_ok=True)
            except IsADirectoryError:
                if not recursive:
                    raise IsADirectoryError(errno.EISDIR, f"{p!r} is a directory: pass "
                                                          "recursive=True to remove it") from None
                if p != self.root_marker:
                    client.rmdir(p)  # emptied already: children come after it in expand_path

    def mv(self, path1: str | list[str], path2: str, recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        """Moves a file or a directory tree with one atomic rename. Into path2 if it is a
        directory (or ends with "/"); several sources (a list, a glob) go into directory path2."""
        into = isinstance(path2, str) and path2.endswith("/")
        target = self._path(path2)
        if isinstance(path1, list) or has_magic(self._path(path1)):
            sources = self.expand_path(path1)
            self.makedirs(target, exist_ok=True)
            for source in sources:
                self._move(source, join(target, base(source)))
            return
        source = self._path(path1)
        if source == target:
            return
        if into or self.isdir(target):
            target = join(target, base(source))
        self._move(source, target)

    def _move(self, source: str, target: str) -> None:
        try:
            self.client.rename(source, target, open_ok=True)
        except FileNotFoundError:
            if not parent(target) or not self.exists(source):
                raise
            makedirs(self.client, parent(target))
            self.client.rename(source, target, open_ok=True)

    def _replace(self, temp: str, target: str) -> None:
        """Renames temp over target; readers of the old file keep it until they close."""
        self.client.rename(temp, target, open_ok=True)

    # --- data ---------------------------------------------------------------------------------
    def open(self, path: str, mode: str = "rb", block_size: int | None = None,
             cache_options: dict | None = None, compression: str | None = None,
             **kwargs: Any) -> Any:
        """As fsspec's, except that text files tell a replacing ("w") file when their `with`
        block failed, so that it is discarded."""
        if "b" in mode:
            return super().open(path, mode, block_size=block_size, cache_options=cache_options,
                                compression=compression, **kwargs)
        text = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
        binary = super().open(path, mode.replace("t", "") + "b", block_size=block_size,
                              cache_options=cache_options, compression=compression, **kwargs)
        return _TextFile(binary, **text)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict | None = None,
              stripe_width: int | None = None, replicas: int | None = None,
              **kwargs: Any) -> Any:
        """A pfs.open file ("wb": one that replaces the target on close); stripe_width and
        replicas for a file created now. Other options (cache_type, default_cache, fill_cache... which tools
        such as dask pass) tune fsspec's own read caches, which PFS files, cached by their
        client, do not use: they are ignored."""
        path = self._path(path)
        if path == self.root_marker:
            raise IsADirectoryError(errno.EISDIR, "the PFS root is a directory, not a file")
        mode = fileio.parse_mode(mode)
        buffering = block_size or -1
        client = self.client
        if mode[0] != "w":
            if not autocommit and mode != "rb":
                raise NotImplementedError(f"mode {mode!r} cannot wait for a transaction: PFS "
                                          "writes it in place")
            return fileio.open(path, mode, client=client, buffering=buffering,
                               stripe_width=stripe_width, replicas=replicas)
        try:
            if client.stat(path).is_dir:
                raise IsADirectoryError(errno.EISDIR, f"is a directory: {path!r}")
        except FileNotFoundError:
            pass
        temp = temporary_path(path)
        raw = fileio.open_raw(client, temp, "x" + mode[1:], name=path, stripe_width=stripe_width,
                              replicas=replicas or 0)
        raw.mode = mode  # "wb" to whoever asks, though it made its temporary as "xb" does
        file = fileio.buffer(raw, buffering, {"BufferedWriter": _ReplacingWriter,
                                              "BufferedRandom": _ReplacingRandom})
        file._start(self, temp, path, autocommit)
        return file

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        """The bytes [start, end) of the file, negative bounds counting from its end."""
        with fileio.open(self._path(path), "rb", client=self.client,
                         buffering=0) as f:
            first, stop, _ = slice(start, end).indices(f.seek(0, io.SEEK_END))
            f.seek(first)
            data, remaining = bytearray(), max(stop - first, 0)
            while remaining and (chunk := f.read(remaining)):
                data += chunk
                remaining -= len(chunk)
            return bytes(data)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                  **kwargs: Any) -> None:
        """Writes the whole file: atomically replacing it, or with mode="create" creating it
        (FileExistsError if it exists)."""
        with self.open(path, "xb" if mode == "create" else "wb", **kwargs) as f:
            f.write(value)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copies a file's bytes (replacing path2 atomically); a directory is made at path2."""
        source, target = self._path(path1), self._path(path2)
        if self.info(source)["type"] == "directory":
            self.makedirs(target, exist_ok=True)
            return
        if source == target:
            return
        with self.open(source, "rb") as src, self.open(target, "wb", **kwargs) as dst:
            while chunk := src.read(self.blocksize):
                dst.write(chunk)

    def put_file(self, lpath: str, rpath: str, callback: Any = DEFAULT_CALLBACK,
                 mode: str = "overwrite", **kwargs: Any) -> None:
        """Copies a local file in (replacing rpath atomically); a local directory is made."""
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        with builtins.open(lpath, "rb") as src:
            callback.set_size(src.seek(0, io.SEEK_END))
            src.seek(0)
            with self.open(rpath, "xb" if mode == "create" else "wb", **kwargs) as dst:
                while chunk := src.read(self.blocksize):
                    dst.write(chunk)
                    callback.relative_update(len(chunk))

    def get_file(self, rpath: str, lpath: Any, callback: Any = DEFAULT_CALLBACK,
                 outfile: Any = None, **kwargs: Any) -> None:
        """Copies a file out to a local path (or file object); a directory is made locally."""
        if outfile is None and hasattr(lpath, "write"):
            outfile = lpath
        info = self.info(rpath)
        if info["type"] == "directory":
            if outfile is None:
                os.makedirs(lpath, exist_ok=True)
            return
        callback.set_size(info["size"])
        with self.open(rpath, "rb", **kwargs) as src:
            if outfile is None:
                os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
            dst = builtins.open(lpath, "wb") if outfile is None else outfile
            try:
                while chunk := src.read(self.blocksize):
                    dst.write(chunk)
                    callback.relative_update(len(chunk))
            finally:
                if outfile is None:
                    dst.close()
