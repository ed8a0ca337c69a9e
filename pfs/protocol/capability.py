"""Capabilities: the metaserver's signed word that a session holds a token, checked by the
fileservers on every data call (docs/design.md, "Who may do what").

A fileserver serves a byte only under an unexpired capability, signed with a key clients never
see, that covers it in a sufficient mode: a client can neither forge nor widen one.

A token is a range of a file; a fileserver sees only its own object of the file, addressed by
local offsets. So the metaserver grants a token with one capability per stripe column: the
file, the client it was granted to, the mode (READ or WRITE), the range of local offsets of that
column's object that the token covers, the fileservers holding that column (a capability is
good at each of them and nowhere else), and when it expires. It is signed with a key derived
from the cluster key, which the metaserver and the fileservers hold and clients never see: a
client can neither forge a capability nor widen one.

A fileserver serves a call only if the capabilities it carries cover the call's whole range in
a sufficient mode (WRITE allows reading too), are unexpired, and name a session the fileserver
has not fenced. Capabilities are not revoked one by one: a token given up leaves its capability
good until it expires (CAPABILITY_SECONDS), so a client that misbehaves on purpose can reach
bytes it held within that time, never others; fencing ends all of a session's capabilities at
once.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Iterable

from pfs._native import plan_stripes

from .ranges import INFINITY
from .tokenmodes import READ, WRITE

#: The gRPC metadata entry carrying a call's capabilities (binary: one value each).
HEADER = "pfs-capability-bin"
#: How long a capability is good for; clients renew theirs once less than half is left.
CAPABILITY_SECONDS = 600.0
_FIELDS = struct.Struct("<QQBQQdB")  # file, client, mode, start, end, expires, server count
_MAC_BYTES = 16


@dataclass(frozen=True)
class Capability:
    file_id: int
    client_id: int
    mode: int
    start: int  # local offsets of the column's object
    end: int
    expires: float  # the metaserver's clock (time.time())
    servers: tuple[int, ...]
    blob: bytes  # the signed encoding, sent as it is

    @classmethod
    def parse(cls, blob: bytes) -> "Capability":
        """The fields of a capability, unverified (ValueError if it is malformed)."""
        if len(blob) < _FIELDS.size + _MAC_BYTES:
            raise ValueError("a capability is too short")
        file_id, client_id, mode, start, end, expires, count = _FIELDS.unpack_from(blob)
        servers_end = _FIELDS.size + 2 * count
        if len(blob) != servers_end + _MAC_BYTES or mode not in (READ, WRITE) \
                or not start <= end <= INFINITY:
            raise ValueError("a capability is malformed")
        servers = struct.unpack_from(f"<{count}H", blob, _FIELDS.size)
        return cls(file_id, client_id, mode, start, end, expires, servers, bytes(blob))

    def allows(self, mode: int) -> bool:
        return self.mode == WRITE or mode == READ


class Signer:
    """Signs and checks capabilities with the key derived from the cluster key. A capability
    whose signature matched is remembered by its bytes (the newest VERIFIED of them), so that
    the calls carrying it again skip the HMAC; what it allows, and until when, is still checked
    by every call (a capability's bytes are all signed: the same bytes, the same capability)."""

    VERIFIED = 4096

    def __init__(self, cluster_key: bytes) -> None:
        self._key = hmac.new(cluster_key, b"pfs capabilities", hashlib.sha256).digest()
        self._verified: dict[bytes, Capability] = {}

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, file_id: int, client_id: int, mode: int, start: int, end: int,
             expires: float, servers: Iterable[int]) -> bytes:
        servers = tuple(servers)
        body = _FIELDS.pack(file_id, client_id, mode, start, end, expires, len(servers)) + \
            struct.pack(f"<{len(servers)}H", *servers)
        return body + self._mac(body)

    def verify(self, blob: bytes) -> Capability:
        """The capability, if the metaserver signed it (ValueError otherwise)."""
        capability = self._verified.get(blob)
        if capability is not None:
            return capability
        capability = Capability.parse(blob)
        if not hmac.compare_digest(self._mac(blob[:-_MAC_BYTES]), blob[-_MAC_BYTES:]):
            raise ValueError("a capability's signature does not match: it was not issued by "
                             "this cluster's metaserver")
        if len(self._verified) >= self.VERIFIED:
            self._verified.clear()  # (dropping them all is as safe as any: each is re-checked)
        self._verified[capability.blob] = capability
        return capability


def column_ranges(block_size: int, stripe_blocks: int, width: int, start: int,
                  end: int) -> list[tuple[int, int]]:
    """For each stripe column, the local range of its object holding the file bytes
    [start, end) (end INFINITY: to the end of the object); empty when it holds none."""
    unbounded = end >= INFINITY
    span = width * block_size * stripe_blocks if unbounded else end - start
    ranges = [(0, 0)] * width
    for extent in plan_stripes(start, span, block_size, stripe_blocks, width).extents:
        ranges[extent.server] = (extent.local_offset, INFINITY if unbounded
                                 else extent.local_offset + extent.length)
    return ranges


def covers(ranges: Iterable, start: int, end: int) -> bool:
    """Whether the ranges (anything with `start` and `end`) together cover [start, end)."""
    reach = start
    for r in sorted(ranges, key=lambda r: r.start):
        if r.start > reach:
            break
        reach = max(reach, r.end)
    return reach >= end


@dataclass(frozen=True)
class _Grant:
    start: int  # the file range granted
    end: int
    mode: int
    expires: float
    columns: tuple[Capability, ...]  # one per stripe column


class Held:
    """The capabilities a client holds for one open file, grant by grant (the newest few):
    which to send with a call, and whether a range needs fresh ones."""

    LIMIT = 32  # grants kept at most; older ones are dropped (their tokens were renewed)

    def __init__(self) -> None:
        self._grants: list[_Grant] = []

    def add(self, start: int, end: int, mode: int, blobs: list[bytes]) -> None:
        columns = tuple(Capability.parse(b) for b in blobs)
        if not columns:
            return
        grant = _Grant(start, end, mode, min(c.expires for c in columns), columns)
        self._grants = [g for g in self._grants if not (
            start <= g.start and g.end <= end and (mode == WRITE or g.mode == READ))]
        self._grants = [*self._grants, grant][-self.LIMIT:]

    def empty(self) -> bool:
        return not self._grants

    def fresh(self, start: int, end: int, mode: int, now: float) -> bool:
        """Whether grants good for at least half their life more cover [start, end)."""
        return covers([g for g in self._grants if g.expires - now > CAPABILITY_SECONDS / 2
                       and (g.mode == WRITE or mode == READ)], start, end)

    def for_call(self, column: int, start: int, end: int, mode: int) -> list[bytes]:
        """The capabilities to send with a call on bytes [start, end) of the object of stripe
        column `column` (any for the file on that column when the range is empty)."""
        chosen = []
        for grant in self._grants:
            c = grant.columns[column]
            if c.allows(mode) and (c.start < end and start < c.end or start == end):
                chosen.append(c.blob)
        return chosen
