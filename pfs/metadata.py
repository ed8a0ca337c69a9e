"""The records the C-like API fills in (file metadata, a client's cache counters) and the cluster
defaults a new file's recipe gets. Plain data without I/O that imports nothing of PFS, so that
clients, servers and the `pfs` command may all share it without loading one another (a recipe's
striping arithmetic is docs/design.md's, and MAX_FILE_SIZE bounds every size and offset from the
network)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

#: The largest file PFS stores (1 PiB): sizes and offsets from the network are checked against it.
MAX_FILE_SIZE = 1 << 50

#: Cluster defaults (the metaserver's flags), chosen for speed: 64 KiB blocks (the cache and
#: read-ahead unit) and 1 MiB stripe units (16 blocks), Lustre's default stripe size. Here, not
#: in the metaserver, so that the `pfs` command shows them without loading any server code.
DEFAULT_BLOCK_SIZE = 64 * 1024
DEFAULT_STRIPE_BLOCKS = 16
DEFAULT_LEASE_SECONDS = 10.0
#: A client's defaults (PFS_CACHE_BLOCKS, PFS_RETRY_SECONDS): a cache of 1024 blocks (64 MiB of
#: the default blocks), and 10 s of retrying a fileserver it cannot reach (one restarting, say).
DEFAULT_CACHE_BLOCKS = 1024
#: Files whose tokens a client keeps after closing them (PFS_LOCK_CACHE_FILES; 0 keeps none).
DEFAULT_LOCK_CACHE_FILES = 256
DEFAULT_RETRY_SECONDS = 10.0


class _Record:
    def copy_into(self, other: "_Record") -> None:
        """Fills `other` (a caller's record, as the C-like API does) with these values."""
        for f in fields(self):
            setattr(other, f.name, getattr(self, f.name))


@dataclass
class Recipe(_Record):
    """How a file is striped (docs/design.md): fixed when the file is created. `servers` holds
    the fileserver of copy k of stripe column c at k * stripe_width + c: the first
    stripe_width are the first copy of each column, in stripe order."""
    stripe_width: int = 0
    block_size: int = 0
    stripe_blocks: int = 0
    servers: list[int] = field(default_factory=list)
    replicas: int = 1  # copies of each stripe unit

    def copies(self, column: int) -> list[int]:
        """The fileservers holding stripe column `column`, first copy first."""
        return self.servers[column::self.stripe_width]

    def file_offset(self, column: int, local: int) -> int:
        """The file offset of local byte `local` of a column's object (docs/design.md)."""
        unit = self.block_size * self.stripe_blocks
        return (local // unit * self.stripe_width + column) * unit + local % unit


@dataclass
class Metadata(_Record):
    """What pfs_fstat fills in: `filename` is the whole path (canonical: `a/b`), times are POSIX
    seconds, and a directory has `is_dir` set, size 0 and an empty recipe. The POSIX
    attributes (the mount's, Client.setattr) follow, None when never set: `mode` (the mount
    then shows 0644 for a file, 0755 for a directory), owners (the mount's own user), `atime`
    (mtime's). A symlink is a file without data and with `symlink_target`; a special file
    (made by Client.mknod) one without data and with `special`, its type (stat.S_IFIFO,
    S_IFSOCK, S_IFCHR or S_IFBLK), and a device its number `rdev`. `nlink` is its link count
    as POSIX's: a directory's 2 + its subdirectories, a file's 1, or 0 once unlinked while
    open (an fd's file, fstat)."""
    filename: str = ""
    file_size: int = 0
    ctime: float = 0.0
    mtime: float = 0.0
    recipe: Recipe = field(default_factory=Recipe)
    is_dir: bool = False
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime: float | None = None
    symlink_target: str | None = None
    file_id: int = 0  # the file's id in PFS (never changes, renames included)
    special: int | None = None
    rdev: int | None = None
    nlink: int = 1


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
    replicas: int = 1  # copies of each stripe unit a new file gets by default
    fileservers: int = 0  # members, online or not

    def widest(self, replicas: int = 0) -> int:
        """The widest stripe a new file with `replicas` copies (0: the default) can have now:
        a fileserver of its own for every copy of every column, the first copy of each
        online."""
        members = max(self.fileservers, self.fileservers_online)
        return max(1, min(self.fileservers_online, members // (replicas or self.replicas)))
