"""What a fileserver data call looks like, for a client's data plane and the metaserver's repair
alike: Read and Write as raw bytes (wire.py), Truncate and Fsync as protobuf, each carrying its
capabilities; a failure is an OSError (errnos.py); and no byte of a read reply is used before
every unit in it is checked against its checksum (`read_units`).
"""
from __future__ import annotations

import errno
from array import array
from dataclasses import dataclass
from typing import Callable, Iterable

import grpc

from pfs._native import crc32c
from pfs._proto import fileserver_pb2_grpc as pb_grpc

from . import capability, checksums, wire
from .errnos import from_rpc

#: Seconds one fileserver call may take before it fails with ETIMEDOUT.
CALL_TIMEOUT = 60.0


class FileServerCalls:
    """The data calls of one fileserver over `channel`."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._raw = {"read": channel.unary_unary(wire.READ_METHOD),  # raw bytes both ways
                     "write": channel.unary_unary(wire.WRITE_METHOD)}
        self._stub = pb_grpc.FileServerStub(channel)

    def call(self, method: str, request, capabilities: Iterable[bytes],
             what: str | Callable[[], str]):
        """Makes one call: `method` is "read" or "write" (raw requests, wire.py) or a method of
        the FileServer service ("Truncate", "Fsync"); OSError naming `what` if it fails (a
        function making the name is called only then)."""
        call = self._raw.get(method) or getattr(self._stub, method)
        try:
            return call(request, timeout=CALL_TIMEOUT,
                        metadata=tuple((capability.HEADER, c) for c in capabilities))
        except grpc.RpcError as e:
            raise from_rpc(e, what if isinstance(what, str) else what()) from None


@dataclass(frozen=True)
class ReadUnits:
    """A read reply: whole units of an object from local offset `start`, with their CRCs;
    `bad` is the local offset of the first unit that fails its checksum (None: none does)."""
    start: int
    crcs: memoryview
    data: memoryview
    bad: int | None


def read_units(reply: bytes) -> ReadUnits:
    """The units of a read reply, every one checked (ValueError if the reply does not add up)."""
    start, crcs, data = wire.parse_read_reply(reply)
    bad = checksums.first_bad(data, crcs)
    return ReadUnits(start, crcs, data, None if bad is None else start + bad * wire.CHECKSUM_UNIT)


def copy_request(file_id: int, units: ReadUnits, start: int, end: int) -> bytes:
    """The write storing local bytes [start, end) of units read from one copy on another (only
    those: the rest of a unit may hold bytes the other copy lacks). A whole unit goes with the
    checksum it came with (end to end: never recomputed from the bytes, which may be damaged on
    the way); a piece of one, cut at the range's ends or the object's, with its own bytes' CRC,
    as a writer's piece does (the bytes were checked against their unit's when read)."""
    if start < units.start or end > units.start + len(units.data):
        raise OSError(errno.EIO, f"the copy read ends at local byte "
                                 f"{units.start + len(units.data)}: it does not hold bytes "
                                 f"{start}-{end - 1} to copy")
    data = units.data[start - units.start:end - units.start]
    unit = wire.CHECKSUM_UNIT
    pieces, at = array("I"), start
    while at < end:
        stop = min(end, at - at % unit + unit)
        whole = at % unit == 0 and stop - at == unit
        pieces.append(units.crcs[(at - units.start) // unit] if whole else
                      crc32c(data[at - start:stop - start]))
        at = stop
    return wire.write_request(file_id, start, data, pieces)
