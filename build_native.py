"""Builds pfs._native._core, the C core in csrc/, as a cffi extension in API mode.

The headers are both the C declarations and the cdef; cffi's parser takes no preprocessor lines,
so those are left out of the cdef. Every API-mode call releases the GIL around the C function
(see pfs/_native/__init__.py).
"""
import pathlib

from cffi import FFI

CSRC = pathlib.Path("csrc")  # relative: setuptools runs this from the project root
HEADERS = ["pfs_errors.h", "stripe.h", "scatter.h", "blocktable.h", "fastread.h", "crc32c.h"]
SOURCES = ["stripe.c", "scatter.c", "blocktable.c", "fastread.c", "crc32c.c"]


def _declarations(header: str) -> str:
    lines = (CSRC / header).read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef("\n".join(_declarations(h) for h in HEADERS))
ffibuilder.set_source(
    "pfs._native._core",
    "\n".join(f'#include "{h}"' for h in HEADERS),
    sources=[str(CSRC / s) for s in SOURCES],
    include_dirs=[str(CSRC)],
    extra_compile_args=["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
