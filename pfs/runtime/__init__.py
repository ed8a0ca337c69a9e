"""The client's runtime: what the Clients of one process share, and the threads they run on.

holdings: process-wide things (channels, thread pools, session streams) made by the first
holder and closed by the last; threads: daemon thread pools that grow on demand; callqueues:
calls run in order per key (per session) on shared threads.

May import only the standard library (and `pfs.protocol`); knows nothing of Clients, caches or
files.
"""
