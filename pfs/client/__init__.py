"""The client proper: `Client`, one session with a cluster, its open files, tokens and cache
(front.py lists the modules and their one job each).

May import `pfs.protocol`, `pfs.runtime`, `pfs.datapath`, `pfs.metadata`, `pfs._native` and
`pfs._proto`; never a server module, and nothing above it (`pfs.api`, `pfs.fileio`, `pfs.fs`,
the command line).
"""
from pfs.metadata import DEFAULT_CACHE_BLOCKS, DEFAULT_RETRY_SECONDS
from pfs.protocol.transport import DEFAULT_METASERVER, default_metaserver

from .args import PFS_READ, PFS_READ_WRITE
from .front import Client

__all__ = ["DEFAULT_CACHE_BLOCKS", "DEFAULT_METASERVER", "DEFAULT_RETRY_SECONDS", "PFS_READ",
           "PFS_READ_WRITE", "Client", "default_metaserver"]
