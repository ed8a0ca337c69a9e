"""pfs.open: a PFS file as a standard Python binary file object.

File objects of one client on one path share one PFS fd, closed with the last of them; files
left open are closed at exit before any Client finishes (client/lifecycle.py).

    with pfs.open("runs/2026/data", "wb") as f:   # creates runs/ and runs/2026/ if missing
        f.write(payload)
    with pfs.open("runs/2026/data", "rb") as f:
        f.readinto(buf)                            # fills buf in place

Modes (binary only; wrap the result in io.TextIOWrapper for text). As with Python's open(), the
letters may come in any order ("br" is "rb", "rb+" is "r+b"), each at most once:

- "rb": an existing file, read only (io.BufferedReader).
- "wb": creates the file, or truncates an existing one to 0 bytes (io.BufferedWriter).
- "xb": creates the file; FileExistsError if the name exists (io.BufferedWriter).
- "ab": appends: every write goes to the current end of the file, wherever the position was;
  creates the file if it is missing (io.BufferedWriter).
- "r+b", "w+b", "x+b", "a+b": the same, and readable as well (io.BufferedRandom).

The modes that create ("w", "x", "a") first create the missing parent directories, as object
stores behave (another client creating one at the same time is fine). A directory is
IsADirectoryError; a parent that is a file is NotADirectoryError; a path with an empty, "." or
".." component is OSError(EINVAL). `stripe_width` applies when the file is created: an existing
file keeps its striping.

As in Python, reading at or past the end gives b"", and writing past the end fills the gap with
zeros (Client.pread and Client.pwrite, which follow POSIX where pfs_read and pfs_write keep the
course's contract).

Closing the file object writes back its data and closes the PFS file; flush() only hands data to
the client's cache. Files still open when the program exits are closed then, as Python's own
are. truncate() works as in Python (cutting, or extending with zeros).

A PFS client may have a file open only once, but a program may open it several times, as with
Python's files: file objects of one client on the same file share one PFS open file (closed with
the last of them; closing one that wrote, while others remain, fsyncs it instead). Appends are
made at the end as it is when each buffered write reaches PFS, under the file's tail token
(Client.append), so buffered writes of several clients appending at once never overwrite each
other.

Without `client=`, files use one process-wide pfs.Client (PFS_METASERVER, PFS_CACHE_BLOCKS),
made and initialized on first use and separate from the C-like API's client.
"""
from __future__ import annotations

import errno
import io
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from .client import PFS_READ_WRITE, Client
from .client.lifecycle import close_first_at_exit
from .client.namespace import create_with_parents
from .client.namespace import makedirs  # noqa: F401 - pfs/tools.py calls fileio.makedirs
from .protocol import errnos
from .protocol.paths import canonical

log = logging.getLogger("pfs.fileio")

#: Every mode pfs.open takes, in the spelling it reports as the file's `mode`.
MODES = ("rb", "r+b", "wb", "w+b", "xb", "x+b", "ab", "a+b")

_default_lock = threading.Lock()
_default: Client | None = None

# Every file object pfs.open returned that may still be open (see _close_at_exit).
_open_files: weakref.WeakSet[io.IOBase] = weakref.WeakSet()


@close_first_at_exit
def _close_at_exit() -> None:
    """Closes the files left open, so their data is written back as Python's own files are.
    Left to the interpreter's final garbage collection, closing would hang: gRPC can no longer
    start its threads then."""
    for f in list(_open_files):
        try:
            f.close()
        except Exception as e:  # noqa: BLE001 - the other files must still be closed
            log.warning("could not close PFS file %r at exit: %s", getattr(f, "name", f), e)


def default_client() -> Client:
    """The process-wide client of the Pythonic layer, (re)initialized if it has no session."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Client()
    _default.initialize()
    return _default


def parse_mode(mode: Any) -> str:
    """The canonical spelling ("rb", "r+b", "wb", ...) of a binary mode as Python's open()
    accepts it; ValueError for anything else (text modes included)."""
    if isinstance(mode, str):
        letters = set(mode)
        kinds = letters & set("rwxa")
        if (len(letters) == len(mode) and letters <= set("rwxab+") and "b" in letters
                and len(kinds) == 1):
            return kinds.pop() + ("+" if "+" in letters else "") + "b"
    raise ValueError(f"invalid mode {mode!r}: pfs.open supports {', '.join(MODES)} "
                     "(binary only; wrap the file in io.TextIOWrapper for text)")


def _cluster_layout(client: Client, replicas: int) -> tuple[int, int]:
    """(the widest stripe a new file with `replicas` copies can have, bytes of one stripe
    unit) as the client learned at initialize."""
    layout = client.layout()
    return layout.widest(replicas), layout.block_size * layout.stripe_blocks


# --- PFS open files shared by the file objects of one client ------------------------------------
@dataclass(eq=False)
class _Handle:
    fd: int
    path: str
    users: int = 1


@dataclass(eq=False)
class _Handles:
    lock: threading.Lock = field(default_factory=threading.Lock)
    by_path: dict[str, _Handle] = field(default_factory=dict)


_tables: weakref.WeakKeyDictionary[Client, _Handles] = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()


def _table(client: Client) -> _Handles:
    with _tables_lock:
        table = _tables.get(client)
        if table is None:
            table = _tables[client] = _Handles()
        return table


def _current_path(client: Client, handle: _Handle) -> str | None:
    """Where the open file is now (a directory above it may have been renamed), or None if the
    fd is gone (the client's session was lost, or it was finished)."""
    try:
        return client.fstat(handle.fd).filename
    except OSError:
        return None


def _acquire(client: Client, path: str) -> _Handle:
    """The client's open file at `path` (canonical): opened now, or shared with the file objects
    that have it open already."""
    table = _table(client)
    with table.lock:
        handle = table.by_path.get(path)
        if handle is not None:
            if _current_path(client, handle) == path:
                handle.users += 1
                return handle
            del table.by_path[path]  # its users keep it; new opens must look again
        try:
            fd = client.open(path, PFS_READ_WRITE)  # modes are enforced by RawFile
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            # Open under another name: a directory above it was renamed since it was opened.
            for old, other in list(table.by_path.items()):
                if _current_path(client, other) == path:
                    del table.by_path[old]
                    table.by_path[path] = other
                    other.path = path
                    other.users += 1
                    return other
            raise
        handle = table.by_path[path] = _Handle(fd, path)
        return handle


def _release(client: Client, handle: _Handle, wrote: bool) -> None:
    """One file object is done with the open file: the last one closes it (writing back)."""
    table = _table(client)
    with table.lock:
        handle.users -= 1
        if handle.users == 0:
            if table.by_path.get(handle.path) is handle:
                del table.by_path[handle.path]
            client.close(handle.fd)  # under the lock: a new open must find it closed
            return
    if wrote:
        client.fsync(handle.fd)


class RawFile(io.RawIOBase):
    """An open PFS file as unbuffered raw I/O: every call is one pfs.Client call."""

    def __init__(self, client: Client, handle: _Handle, name: str, mode: str,
                 chunk: int) -> None:
        super().__init__()
        self._client = client
        self._handle = handle
        self._fd = handle.fd
        self._pos = 0
        self._chunk = chunk
        self._wrote = False
        self.name = name
        self.mode = mode

    def readable(self) -> bool:
        return self.mode[0] == "r" or "+" in self.mode

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
        n = self._client.pread(self._fd, view, view.nbytes, self._pos)  # 0 past the end
        self._pos += n
        return n

    def readall(self) -> bytes:
        # RawIOBase reads 8 KiB per call; a full stripe per call reaches every fileserver at once.
        data, chunk = bytearray(), bytearray(self._chunk)
        while n := self.readinto(chunk):
            data += memoryview(chunk)[:n]
        return bytes(data)

    def write(self, b: Any) -> int:
        """Writes all of b at the current position (past the end: the gap reads as zeros), or
        at the end of the file in an append mode; its length."""
        self._check_open()
        if not self.writable():
            raise io.UnsupportedOperation(f"{self.name!r} is not open for writing")
        view = memoryview(b)
        if self.mode[0] == "a":
            n = view.nbytes
            self._pos = self._client.append(self._fd, view, n)
        else:
            n = self._client.pwrite(self._fd, view, view.nbytes, self._pos)
        self._pos += n
        self._wrote = True
        return n

    def truncate(self, size: int | None = None) -> int:
        """Cuts the file to `size` bytes (default: the current position), or extends it with
        zeros; the position does not move."""
        self._check_open()
        if not self.writable():
            raise io.UnsupportedOperation(f"{self.name!r} is not open for writing")
        size = self._pos if size is None else size
        self._client.ftruncate(self._fd, size)
        self._wrote = True
        return size

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
            raise errnos.error(errno.EINVAL, f"cannot seek to a negative position "
                                             f"({base + offset}) in {self.name!r}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def close(self) -> None:
        """Closes the PFS file (when no other file object of this client has it open): its data
        is written back and its tokens released."""
        if self.closed:
            return
        try:
            _release(self._client, self._handle, self._wrote)
        finally:
            super().close()

    def _size(self) -> int:
        return self._client.fstat(self._fd).file_size

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")


def open_raw(client: Client, path: str, mode: str, name: str | None = None,
             stripe_width: int | None = None, replicas: int = 0) -> RawFile:
    """The RawFile of `path` (canonical) in `mode` (canonical, see parse_mode), creating,
    truncating or positioning it as the mode says. `name`: what the file object is called
    (default `path`)."""
    servers, unit = _cluster_layout(client, replicas)
    kind = mode[0]
    for attempt in range(3):
        existed = False  # a new file needs no truncating ("w") nor seeking to its end ("a")
        if kind == "x":
            create_with_parents(client, path, stripe_width, replicas)
        elif kind in "wa":
            try:
                create_with_parents(client, path, stripe_width, replicas)
            except FileExistsError:
                existed = True
        try:
            handle = _acquire(client, path)
            break
        except FileNotFoundError:
            if kind == "r" or attempt == 2:
                raise  # for "w" and "a": deleted again before it was opened; create it anew
    raw = RawFile(client, handle, path if name is None else name, mode,
                  chunk=max(io.DEFAULT_BUFFER_SIZE, servers * unit))
    try:
        if existed and kind == "w":
            client.ftruncate(handle.fd, 0)
        elif existed and kind == "a":
            raw.seek(0, io.SEEK_END)
    except BaseException:
        raw.close()
        raise
    return raw


def buffer(raw: RawFile, buffering: int, classes: dict[str, type] | None = None) -> io.IOBase:
    """raw in its buffered class (BufferedReader, BufferedWriter or BufferedRandom, or those
    `classes` gives by the same names), registered to be closed at exit. buffering: 0 for raw
    itself, -1 for one stripe, or a buffer size in bytes."""
    if buffering == 0:
        file: io.IOBase = raw
    else:
        kind = ("BufferedRandom" if "+" in raw.mode else
                "BufferedReader" if raw.mode == "rb" else "BufferedWriter")
        cls = (classes or {}).get(kind) or getattr(io, kind)
        file = cls(raw, raw._chunk if buffering < 0 else buffering)
    _open_files.add(file)
    return file


def open(name: str, mode: str = "rb", *,  # noqa: A001 - shadows the builtin as pfs.open
         client: Client | None = None, stripe_width: int | None = None,
         replicas: int | None = None, buffering: int = -1) -> io.IOBase:
    """Opens the PFS file `name` (a path: "a/b", "/a/b") as a standard binary file object.

    mode: "rb", "wb" (creates or truncates), "xb" (creates; FileExistsError if it exists), "ab"
    (appends; creates if missing), or one of those with "+" (also readable); the modes that
    create make missing parent directories. client: the pfs.Client to use (default: the
    process-wide one). stripe_width: for a file created now; default the directory's layout
    (`pfs setstripe`), else all fileservers online. replicas: copies of each stripe unit of a
    file created now; default the directory's layout, else the cluster's.
    buffering: 0 for the unbuffered RawFile, a buffer size in bytes, or -1 for one full stripe
    (at least io.DEFAULT_BUFFER_SIZE). Failures raise OSError subclasses (FileNotFoundError,
    FileExistsError, IsADirectoryError, ...); a bad mode or argument raises ValueError.
    """
    mode = parse_mode(mode)
    for option, value in (("stripe_width", stripe_width), ("replicas", replicas)):
        if value is not None and mode[0] == "r":
            raise ValueError(f"{option} applies only when a file is created (not mode {mode!r})")
    if isinstance(buffering, bool) or not isinstance(buffering, int):
        raise ValueError(f"buffering must be an int, not {type(buffering).__name__}")
    path = canonical(name)
    if client is None:
        client = default_client()
    return buffer(open_raw(client, path, mode, name=name, stripe_width=stripe_width,
                           replicas=replicas or 0), buffering)
