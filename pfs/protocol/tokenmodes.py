"""Token modes, as protos/metaserver.proto numbers them, for every side: a READ token lets its
holder read a byte range, a WRITE token read and write it. Two tokens conflict when they overlap
and at least one is WRITE.
"""
from pfs._proto import metaserver_pb2 as _pb

READ: int = _pb.READ
WRITE: int = _pb.WRITE
