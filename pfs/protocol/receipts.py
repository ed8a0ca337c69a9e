"""Stored-length receipts: a fileserver's signed word, in its Write reply, that it stored local
bytes [start, end) of a file's object, so that the metaserver can believe the size a Close or
fsync reports without asking the fileserver (servers/metaserver/sizes.py says when it does).

A receipt is signed with a key derived from the cluster key, which clients never hold, and
names: the file, the fileserver's index, the client whose capabilities let the write in, the
local range written, the newest of those capabilities' expiry times (so the metaserver can tell
a write made after a truncate it knows of from one made before), and the fileserver's
*incarnation*: its data directory's identity and its process's, a random nonce of each start.
A fileserver that lost its data directory, or restarted (a machine crash may have taken its
unsynced bytes), has another incarnation, and no receipt of its earlier one is believed. A
client can neither forge a receipt nor change one; it can only present its own, unchanged.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
import threading
from dataclasses import dataclass

from pfs._native import plan_stripes
from pfs.metadata import Recipe

_FIELDS = struct.Struct("<QHQQQd16s")  # file, server, client, start, end, expires, incarnation
_MAC_BYTES = 16
_TAG = b"receipt"


def incarnation(uuid: str, boot: str) -> bytes:
    """A fileserver's incarnation: its data directory's uuid and its process's boot nonce."""
    return hashlib.sha256(f"{uuid} {boot}".encode()).digest()[:16]


@dataclass(frozen=True)
class Receipt:
    file_id: int
    server: int  # the fileserver's index
    client_id: int
    start: int  # local offsets of the object: the bytes stored
    end: int
    expires: float  # the newest capability of the write (the metaserver's clock)
    incarnation: bytes
    blob: bytes  # the signed encoding, as sent

    @classmethod
    def parse(cls, blob: bytes) -> "Receipt":
        """The fields of a receipt, unverified (ValueError if it is malformed)."""
        if len(blob) != _FIELDS.size + _MAC_BYTES:
            raise ValueError("a receipt is malformed")
        return cls(*_FIELDS.unpack_from(blob), bytes(blob))


class Notary:
    """Signs receipts (a fileserver) and checks them (the metaserver)."""

    def __init__(self, cluster_key: bytes) -> None:
        self._key = hmac.new(cluster_key, b"pfs receipts", hashlib.sha256).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, _TAG + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def sign(self, file_id: int, server: int, client_id: int, start: int, end: int,
             expires: float, incarnation: bytes) -> bytes:
        body = _FIELDS.pack(file_id, server, client_id, start, end, expires, incarnation)
        return body + self._mac(body)

    def verify(self, blob: bytes) -> Receipt:
        """The receipt, if a fileserver of this cluster signed it (ValueError otherwise)."""
        receipt = Receipt.parse(blob)
        if not hmac.compare_digest(self._mac(blob[:-_MAC_BYTES]), blob[-_MAC_BYTES:]):
            raise ValueError("a receipt's signature does not match")
        return receipt


class Kept:
    """The receipts of one open file's writes: per fileserver, the one reaching furthest.
    Thread-safe (writes complete on the fileservers' threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._furthest: dict[int, Receipt] = {}

    def keep(self, blob: bytes) -> None:
        """Keeps a Write reply's receipt (an empty reply, from an older fileserver, is none)."""
        if not blob:
            return
        receipt = Receipt.parse(blob)
        with self._lock:
            known = self._furthest.get(receipt.server)
            if known is None or receipt.end >= known.end:
                self._furthest[receipt.server] = receipt

    def clear(self) -> None:
        with self._lock:
            self._furthest.clear()

    def showing(self, recipe: Recipe, size: int) -> list[bytes]:
        """The receipts that may show the file's byte `size - 1` stored: those of its copies."""
        if not size:
            return []
        (extent,) = plan_stripes(size - 1, 1, recipe.block_size, recipe.stripe_blocks,
                                 recipe.stripe_width).extents
        with self._lock:
            return [r.blob for i in recipe.copies(extent.server)
                    if (r := self._furthest.get(i)) is not None and r.end > extent.local_offset]
