"""Every byte between clients and fileservers travels with the CRC32C of its piece, and a
message that does not add up is refused (ValueError), never guessed at.

The data messages between clients and fileservers, as raw bytes rather than protobuf: the
payload is then copied once less at each end, which at megabytes per call is most of the cost.

They are the methods of the gRPC service DATA_SERVICE (the fileserver's other calls, small ones,
are protobuf: protos/fileserver.proto), and carry the caller's capabilities like every data call.

Every byte travels with its checksum (docs/design.md, "Checksums"): an object is checksummed in
units of CHECKSUM_UNIT bytes of its local offsets, each with a CRC32C. A range is cut into
*pieces* at unit boundaries (the first and last may be partial), and a checksum covers one piece.

    Read   request: file id, offset, length (little-endian uint64 each)
           reply:   start (uint64), n (uint32), n CRC32Cs (uint32 each), then the bytes of the
                    object from `start`: the whole units that hold the range asked, cut at the
                    object's end, one CRC per unit (the reader checks them all, then takes its
                    range)
    Write  request: file id, offset (uint64 each), n (uint32), n CRC32Cs, then the bytes: one
                    CRC per piece of the range written, computed by the writing client
           reply:   a receipt (receipts.py) for the bytes stored, or empty
"""
from __future__ import annotations

import struct
from array import array

from pfs._native import unit_count, unit_crcs

DATA_SERVICE = "pfs.fileserver.Data"
READ_METHOD = f"/{DATA_SERVICE}/Read"
WRITE_METHOD = f"/{DATA_SERVICE}/Write"
#: Bytes of an object covered by one checksum (local offsets, aligned).
CHECKSUM_UNIT = 4096
_READ = struct.Struct("<QQQ")
_WRITE = struct.Struct("<QQI")
_REPLY = struct.Struct("<QI")


def read_request(file_id: int, offset: int, length: int) -> bytes:
    return _READ.pack(file_id, offset, length)


def parse_read(request: bytes) -> tuple[int, int, int]:
    """(file id, offset, length); ValueError for a request of the wrong size."""
    if len(request) != _READ.size:
        raise ValueError(f"a read request is {_READ.size} bytes, not {len(request)}")
    return _READ.unpack(request)


def read_reply(start: int, crcs: array, data) -> bytes:
    return b"".join((_REPLY.pack(start, len(crcs)), crcs.tobytes(), data))


def parse_read_reply(reply: bytes) -> tuple[int, memoryview, memoryview]:
    """(start, the CRCs as uint32s, the bytes), uncopied; ValueError if it does not add up."""
    if len(reply) < _REPLY.size:
        raise ValueError(f"a read reply has a {_REPLY.size}-byte header; this one is "
                         f"{len(reply)} bytes long")
    start, count = _REPLY.unpack_from(reply)
    view = memoryview(reply)
    data = view[_REPLY.size + 4 * count:]
    if start % CHECKSUM_UNIT or len(view) < _REPLY.size + 4 * count or \
            count != unit_count(len(data), CHECKSUM_UNIT):
        raise ValueError(f"a read reply of {len(data)} bytes from {start} with {count} "
                         "checksums does not add up")
    return start, view[_REPLY.size:_REPLY.size + 4 * count].cast("I"), data


def write_request(file_id: int, offset: int, data, crcs: array | None = None) -> bytes:
    """The request writing `data` (any buffer) at `offset` with its pieces' CRCs (computed
    here, unless given): one copy."""
    if crcs is None:
        crcs = unit_crcs(data, CHECKSUM_UNIT, offset % CHECKSUM_UNIT)
    return b"".join((_WRITE.pack(file_id, offset, len(crcs)), crcs.tobytes(), data))


def parse_write(request: bytes) -> tuple[int, int, memoryview, memoryview]:
    """(file id, offset, the CRCs as uint32s, the bytes), uncopied; ValueError for a request cut
    short or whose checksums do not match its pieces in number."""
    if len(request) < _WRITE.size:
        raise ValueError(f"a write request has a {_WRITE.size}-byte header; this one is "
                         f"{len(request)} bytes long")
    file_id, offset, count = _WRITE.unpack_from(request)
    view = memoryview(request)
    data = view[_WRITE.size + 4 * count:]
    expected = unit_count(len(data), CHECKSUM_UNIT, offset % CHECKSUM_UNIT)
    if len(view) < _WRITE.size + 4 * count or count != expected:
        raise ValueError(f"a write of {len(data)} bytes at {offset} needs {expected} "
                         f"checksums, not {count}")
    return file_id, offset, view[_WRITE.size:_WRITE.size + 4 * count].cast("I"), data
