"""mfusepy loaded against libfuse 3, with the few callbacks PFS needs closer to the C call: reads
land in the kernel's buffer and writes leave from it without a copy; rename keeps its flags,
utimens tells "unchanged" from a time, and ftruncate names its open file (mfusepy drops all
three: a file unlinked or renamed over while open has no path to truncate by).

mfusepy picks libfuse 2 when both are installed, which caps each request at 128 KiB; it reads
FUSE_LIBRARY_NAME when imported, so this module sets it first unless the user chose a library.
"""
from __future__ import annotations

import ctypes
import os
import time

if "FUSE_LIBRARY_PATH" not in os.environ:
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

try:
    import mfusepy
except ImportError:
    raise ImportError("pfs mount needs mfusepy: pip install 'pfs[mount]'") from None
except OSError as e:  # mfusepy found no libfuse
    raise ImportError(f"pfs mount needs libfuse 3 ({e}): apt-get install fuse3") from None
if mfusepy.fuse_version_major != 3:
    raise ImportError(f"pfs mount needs libfuse 3; mfusepy loaded {mfusepy._libfuse_path} "
                      f"(libfuse {mfusepy.fuse_version_major}); unset FUSE_LIBRARY_PATH")

#: tv_nsec values of utimensat(2): "now" and "leave unchanged".
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2


def _view(buf, size: int, readonly: bool) -> memoryview:
    view = memoryview(ctypes.cast(buf, ctypes.POINTER(ctypes.c_char * size)).contents)
    return view.toreadonly() if readonly else view


class Fuse(mfusepy.FUSE):
    """mfusepy's FUSE with the operations' read(path, buf, offset, fh) and write(path, data,
    offset, fh) working on the kernel's buffers, truncate(path, length, fh) by the open file
    when there is one, rename(old, new, flags), and utimens(path, (atime, mtime)) in
    nanoseconds, "now" resolved and None for "unchanged"."""

    def read(self, path, buf, size, offset, fip) -> int:
        return self.operations.read(self._path(path), _view(buf, size, readonly=False), offset,
                                    fip.contents.fh)

    def write(self, path, buf, size, offset, fip) -> int:
        return self.operations.write(self._path(path), _view(buf, size, readonly=True), offset,
                                     fip.contents.fh)

    def _path(self, path: bytes | None) -> str | None:
        """None for a file unlinked while open (libfuse has no path for it)."""
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path, length, fip) -> int:
        return self.operations.truncate(self._path(path), length,
                                        fip.contents.fh if fip else None)

    def rename_fuse_3(self, old, new, flags) -> int:
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)

    def utimens_fuse_3(self, path, buf, fip) -> int:
        now = time.time_ns()
        stamps = (buf.contents.actime, buf.contents.modtime) if buf else ()
        times = tuple(None if t.tv_nsec == UTIME_OMIT else now if t.tv_nsec == UTIME_NOW
                      else t.tv_sec * 10**9 + t.tv_nsec for t in stamps) or (now, now)
        return self.operations.utimens(path.decode(self.encoding, self.errors), times)
