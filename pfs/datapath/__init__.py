"""The client's data path: where a file's bytes go between a caller's buffer and the fileservers.

blockcache: the LRU write-back block cache kept coherent by tokens; striped: parallel striped
reads and writes to the fileservers, over replicas: which copy of a column a read goes to, and
writes to every copy at once, over fileservers: each one's channel and threads, and how a call
is tried again; writebehind: writes held in flight until stored.

May import `pfs.protocol`, `pfs.runtime`, `pfs.metadata`, `pfs._native` and `pfs._proto`, never
`pfs.client`: tokens and sessions are the caller's business; this package only moves bytes.
"""
