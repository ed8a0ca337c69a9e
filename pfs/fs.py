"""PFS as an fsspec filesystem under the protocol "pfs://" (so pandas.read_csv("pfs://name")).

    fs = fsspec.filesystem("pfs", metaserver="10.0.0.1:50050")
    fs.ls("")                                # every file: PFS has one flat namespace
    with fsspec.open("pfs://data.csv", "r") as f: ...

The namespace is flat: "" (or "/", "pfs://") is the only directory and holds every file, and
"pfs://name", "pfs:///name" and "name" are the same file. Files are pfs.open file objects, with
its modes: "wb" creates a file and raises FileExistsError if it exists (PFS has no truncate).

Storage options: `metaserver="host:port"` (default PFS_METASERVER), or `client=` an initialized
pfs.Client. Without either, the filesystem shares pfs.open's process-wide client.
"""
from __future__ import annotations

import errno
import io
from typing import Any

from fsspec.spec import AbstractFileSystem

from . import fileio
from .client import Client
from .metadata import Metadata


def _entry(meta: Metadata) -> dict[str, Any]:
    return {"name": meta.filename, "size": meta.file_size, "type": "file",
            "created": meta.ctime, "mtime": meta.mtime, "stripe_width": meta.recipe.stripe_width}


class PFSFileSystem(AbstractFileSystem):
    """The files of one PFS cluster, through one pfs.Client."""

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
        # Names have no '/', so any slashes left around one are URL syntax ("pfs:///name").
        return super()._strip_protocol(path).strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """Every file for the root; [that file] for a file's name."""
        path = self._strip_protocol(path)
        if path == self.root_marker:
            entries = sorted((_entry(m) for m in self.client.list()), key=lambda e: e["name"])
        else:
            entries = [self.info(path)]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """name, size, type ("file", or "directory" for the root), created, mtime, stripe_width."""
        path = self._strip_protocol(path)
        if path == self.root_marker:
            return {"name": self.root_marker, "size": 0, "type": "directory"}
        return _entry(self.client.stat(path))  # "a/b" and such: FileNotFoundError

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict | None = None,
              **kwargs: Any) -> Any:
        """A pfs.open file; kwargs may carry stripe_width for "wb"."""
        path = self._strip_protocol(path)
        if path == self.root_marker:
            raise IsADirectoryError(errno.EISDIR, "the PFS root is a directory, not a file")
        if not autocommit:
            raise NotImplementedError("PFS has no transactions; write files directly")
        return fileio.open(path, mode, client=self.client, buffering=block_size or -1, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        """The bytes [start, end) of the file, negative bounds counting from its end."""
        with self._open(path, "rb") as f:
            first, stop, _ = slice(start, end).indices(f.seek(0, io.SEEK_END))
            f.seek(first)
            return f.read(max(stop - first, 0))

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        if path == self.root_marker:
            raise IsADirectoryError(errno.EISDIR, "the PFS root directory cannot be removed")
        self.client.delete(path)

    _rm = rm_file  # the older name, which fsspec still calls in places

    def rm(self, path: str | list[str], recursive: bool = False,
           maxdepth: int | None = None) -> None:
        """Deletes files; rm("", recursive=True) deletes every file."""
        for p in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            if p != self.root_marker:  # the one directory always exists, as in fsspec's memory fs
                self.rm_file(p)
