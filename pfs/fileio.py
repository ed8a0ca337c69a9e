"""pfs.open: a PFS file as a standard Python binary file object.

    with pfs.open("data", "wb") as f:        # creates "data"; FileExistsError if it exists
        f.write(payload)
    with pfs.open("data", "rb") as f:
        f.readinto(buf)                      # fills buf in place

Modes (binary only; wrap the result in io.TextIOWrapper for text):

- "rb": an existing file, read only (io.BufferedReader).
- "wb": creates the file and writes it (io.BufferedWriter). PFS has no truncate, so "wb" never
  replaces data: on an existing name it fails with FileExistsError, like Python's "xb". Delete
  the file first to rewrite it.
- "r+b": an existing file, read and write (io.BufferedRandom).

As in Python, reading at or past the end gives b"". Unlike Python, writing past the end fails
with OSError(EINVAL): PFS files have no holes. Closing the file object writes back its data and
closes the PFS file; flush() only hands data to the client's cache. Files still open when the
program exits are closed then, as Python's own are.

Without `client=`, files use one process-wide pfs.Client (PFS_METASERVER, PFS_CACHE_BLOCKS),
made and initialized on first use and separate from the C-like API's client.
"""
from __future__ import annotations

import atexit
import errno
import io
import logging
import threading
import weakref
from typing import Any

from . import errors
from .client import PFS_READ, PFS_READ_WRITE, Client

# The modes by their letters in any order ("br" == "rb"), as Python's own open() accepts them.
_MODES = {"br": "rb", "bw": "wb", "+br": "r+b"}

log = logging.getLogger("pfs.fileio")

_default_lock = threading.Lock()
_default: Client | None = None

# Every file object pfs.open returned that may still be open (see _close_at_exit).
_open_files: weakref.WeakSet[io.BufferedIOBase | RawFile] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Closes the files left open, so their data is written back as Python's own files are.
    Left to the interpreter's final garbage collection, closing would hang: gRPC can no longer
    start its threads then."""
    for f in list(_open_files):
        try:
            f.close()
        except Exception as e:  # noqa: BLE001 - the other files must still be closed
            log.warning("could not close PFS file %r at exit: %s", f.name, e)


def default_client() -> Client:
    """The process-wide client of the Pythonic layer, (re)initialized if it has no session."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
    _default.initialize()
    return _default


def _cluster_layout(client: Client) -> tuple[int, int]:
    """(fileservers online, bytes of one stripe unit) as the client learned at initialize."""
    layout = client.layout()
    return layout.fileservers_online, layout.block_size * layout.stripe_blocks


class RawFile(io.RawIOBase):
    """An open PFS file as unbuffered raw I/O: every call is one pfs.Client call."""

    def __init__(self, client: Client, fd: int, name: str, mode: str, chunk: int) -> None:
        super().__init__()
        self._client = client
        self._fd = fd
        self._pos = 0
        self._chunk = chunk
        self.name = name
        self.mode = mode

    def readable(self) -> bool:
        return self.mode != "wb"

    def writable(self) -> bool:
        return self.mode != "rb"

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a PFS file has no operating-system file descriptor")

    def readinto(self, b: Any) -> int:
        """Reads into b (any writable buffer) in place; the number of bytes read, 0 at EOF."""
        self._check_open()
        if not self.readable():
            raise io.UnsupportedOperation(f"{self.name!r} is not open for reading")
        view = memoryview(b)
        try:
            n = self._client.read(self._fd, view, view.nbytes, self._pos)
        except OSError as e:
            # Python files read nothing past the end; PFS calls such an offset invalid.
            if e.errno == errno.EINVAL and self._pos > self._size():
                return 0
            raise
        self._pos += n
        return n

    def readall(self) -> bytes:
        # RawIOBase reads 8 KiB per call; a full stripe per call reaches every fileserver at once.
        data, chunk = bytearray(), bytearray(self._chunk)
        while n := self.readinto(chunk):
            data += memoryview(chunk)[:n]
        return bytes(data)

    def write(self, b: Any) -> int:
        """Writes all of b at the current position (at most at the end); its length."""
        self._check_open()
        if not self.writable():
            raise io.UnsupportedOperation(f"{self.name!r} is not open for writing")
        view = memoryview(b)
        n = self._client.write(self._fd, view, view.nbytes, self._pos)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            base = 0
        elif whence == io.SEEK_CUR:
            base = self._pos
        elif whence == io.SEEK_END:
            base = self._size()
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if base + offset < 0:
            raise errors.error(errno.EINVAL, f"cannot seek to a negative position "
                                             f"({base + offset}) in {self.name!r}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def close(self) -> None:
        """Closes the PFS file: its data is written back and its tokens released."""
        if self.closed:
            return
        try:
            self._client.close(self._fd)
        finally:
            super().close()

    def _size(self) -> int:
        return self._client.fstat(self._fd).file_size

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")


def open(name: str, mode: str = "rb", *,  # noqa: A001 - shadows the builtin as pfs.open
         client: Client | None = None, stripe_width: int | None = None,
         buffering: int = -1) -> io.BufferedIOBase | RawFile:
    """Opens the PFS file `name` as a standard binary file object.

    mode: "rb", "wb" (creates; FileExistsError if it exists) or "r+b". client: the pfs.Client
    to use (default: the process-wide one). stripe_width: for "wb" only; default all fileservers
    online. buffering: 0 for the unbuffered RawFile, a buffer size in bytes, or -1 for one full
    stripe (at least io.DEFAULT_BUFFER_SIZE). Failures raise OSError subclasses
    (FileNotFoundError, FileExistsError, ...); a bad mode or argument raises ValueError.
    """
    canonical = _MODES.get("".join(sorted(mode))) if isinstance(mode, str) else None
    if canonical is None:
        raise ValueError(f"invalid mode {mode!r}: pfs.open supports 'rb', 'wb' and 'r+b' "
                         "(binary only; wrap the file in io.TextIOWrapper for text)")
    if stripe_width is not None and canonical != "wb":
        raise ValueError("stripe_width applies only when creating a file (mode 'wb')")
    if isinstance(buffering, bool) or not isinstance(buffering, int):
        raise ValueError(f"buffering must be an int, not {type(buffering).__name__}")
    if client is None:
        client = default_client()
    servers, unit = _cluster_layout(client)
    if canonical == "wb":
        client.create(name, servers if stripe_width is None else stripe_width)
    fd = client.open(name, PFS_READ if canonical == "rb" else PFS_READ_WRITE)
    stripe = max(io.DEFAULT_BUFFER_SIZE, servers * unit)
    raw = RawFile(client, fd, name, canonical, chunk=stripe)
    if buffering == 0:
        file: io.BufferedIOBase | RawFile = raw
    else:
        buffered = {"rb": io.BufferedReader, "wb": io.BufferedWriter, "r+b": io.BufferedRandom}
        file = buffered[canonical](raw, stripe if buffering < 0 else buffering)
    _open_files.add(file)
    return file
