"""The data messages between clients and fileservers, as raw bytes rather than protobuf: the
payload is then copied once less at each end, which at megabytes per call is most of the cost.

They are the methods of the gRPC service DATA_SERVICE (the fileserver's other calls, small ones,
are protobuf: protos/fileserver.proto), and carry the caller's session like every data call.

    Read   request: file id, offset, length (little-endian uint64 each)   reply: the bytes
    Write  request: file id, offset (little-endian uint64 each), the bytes reply: empty
"""
from __future__ import annotations

import struct

DATA_SERVICE = "pfs.fileserver.Data"
READ_METHOD = f"/{DATA_SERVICE}/Read"
WRITE_METHOD = f"/{DATA_SERVICE}/Write"
_READ = struct.Struct("<QQQ")
_WRITE = struct.Struct("<QQ")


def read_request(file_id: int, offset: int, length: int) -> bytes:
    return _READ.pack(file_id, offset, length)


def parse_read(request: bytes) -> tuple[int, int, int]:
    """(file id, offset, length); ValueError for a request of the wrong size."""
    if len(request) != _READ.size:
        raise ValueError(f"a read request is {_READ.size} bytes, not {len(request)}")
    return _READ.unpack(request)


def write_request(file_id: int, offset: int, data) -> bytes:
    """The request writing `data` (any buffer) at `offset`: one copy of it."""
    return b"".join((_WRITE.pack(file_id, offset), data))


def parse_write(request: bytes) -> tuple[int, int, memoryview]:
    """(file id, offset, the bytes, uncopied); ValueError for a request cut short."""
    if len(request) < _WRITE.size:
        raise ValueError(f"a write request has a {_WRITE.size}-byte header; this one is "
                         f"{len(request)} bytes long")
    file_id, offset = _WRITE.unpack_from(request)
    return file_id, offset, memoryview(request)[_WRITE.size:]
