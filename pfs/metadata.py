"""The records the C-like API fills in: file metadata and a client's cache counters."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

#: The largest file PFS stores (1 PiB): sizes and offsets from the network are checked against it.
MAX_FILE_SIZE = 1 << 50


class _Record:
    def copy_into(self, other: "_Record") -> None:
        """Fills `other` (a caller's record, as the C-like API does) with these values."""
        for f in fields(self):
            setattr(other, f.name, getattr(self, f.name))


@dataclass
class Recipe(_Record):
    """How a file is striped (docs/design.md): fixed when the file is created."""
    stripe_width: int = 0
    block_size: int = 0
    stripe_blocks: int = 0
    servers: list[int] = field(default_factory=list)  # fileserver indices, in stripe order


@dataclass
class Metadata(_Record):
    """What pfs_fstat fills in: `filename` is the whole path (canonical: `a/b`), times are POSIX
    seconds, and a directory has `is_dir` set, size 0 and an empty recipe."""
    filename: str = ""
    file_size: int = 0
    ctime: float = 0.0
    mtime: float = 0.0
    recipe: Recipe = field(default_factory=Recipe)
    is_dir: bool = False


@dataclass
class ExecStat(_Record):
    """A client's cache counters, each counted once per block (docs/consistency.md)."""
    num_read_hits: int = 0
    num_write_hits: int = 0
    num_evictions: int = 0
    num_writebacks: int = 0
    num_invalidations: int = 0
    num_close_writebacks: int = 0
    num_close_evictions: int = 0


@dataclass(frozen=True)
class ClusterLayout:
    """What a client learned of its cluster at initialize: the defaults of new files."""
    fileservers_online: int
    block_size: int
    stripe_blocks: int
