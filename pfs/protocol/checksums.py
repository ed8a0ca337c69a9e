"""End-to-end checksums of stored bytes: what a unit's CRC32C is, for writers, fileservers and
readers alike (docs/design.md, "Checksums").

A unit's checksum is computed once, by the writing client, and never recomputed from bytes that
may be damaged; no reader uses a byte before its unit's checksum matches.

An object is checksummed in aligned units of CHECKSUM_UNIT bytes of its local offsets. A unit's
checksum is the CRC32C of its bytes zero-padded to a whole unit, so that bytes never written
(sparse, or past the object's end) count as the zeros they read as. The writing client computes
the CRC of each piece it writes (pfs/protocol/wire.py) and the fileserver stores it beside the object;
the reading client checks every unit it receives before it uses a byte of it. The CRCs are the
C core's (SSE4.2 where present).
"""
from __future__ import annotations

from pfs._native import crc32c, crc32c_combine, verify_units

from .wire import CHECKSUM_UNIT

#: The CRC32C of a unit of zeros.
ZERO_UNIT = crc32c(bytes(CHECKSUM_UNIT))


def padded(crc: int, length: int) -> int:
    """The checksum of a unit whose first `length` bytes have CRC32C `crc`, the rest zeros."""
    if length == CHECKSUM_UNIT:
        return crc
    tail = CHECKSUM_UNIT - length
    return crc32c_combine(crc, crc32c(bytes(tail)), tail)


def first_bad(data, checksums) -> int | None:
    """Checks bytes that start at a unit boundary and run to a unit's end or to the object's
    end (a read reply) against their units' checksums; the index of the first unit that does
    not match, or None."""
    whole = len(data) // CHECKSUM_UNIT
    if whole:
        matching = verify_units(data[:whole * CHECKSUM_UNIT], CHECKSUM_UNIT, 0,
                                checksums[:whole])
        if matching != -1:
            return matching
    tail = data[whole * CHECKSUM_UNIT:]
    if len(tail) and padded(crc32c(tail), len(tail)) != checksums[whole]:
        return whole
    return None
