"""The cluster key: a secret the metaserver and its fileservers share, and clients never hold.

The metaserver makes it at its first start (32 random bytes, in hex, in `cluster.key` of its
data directory, readable by its owner only). A fileserver is given that file
(`--cluster-key-file`, or PFS_CLUSTER_KEY_FILE; `pfs up` does this itself). From the key come
the proof a fileserver shows when it attaches to the metaserver (so nobody else can attach as
one, and learn whom to serve), and the key that signs capabilities (pfs/capability.py).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import pathlib
import secrets

KEY_FILE = "cluster.key"
#: The gRPC metadata entry carrying a fileserver's proof when it attaches.
ATTACH_HEADER = "pfs-cluster"
_KEY_BYTES = 32


def load_or_create(data_dir: pathlib.Path) -> bytes:
    """The metaserver's key, made in its data directory if it has none yet."""
    path = data_dir / KEY_FILE
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(_KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return load(path)


def load(path: pathlib.Path) -> bytes:
    """The key in `path`; SystemExit saying what to do when it is missing or not a key."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise SystemExit(f"no cluster key at {path}: give a fileserver the metaserver's "
                         f"{KEY_FILE} (in its data directory) with --cluster-key-file") from None
    except ValueError:
        raise SystemExit(f"{path} does not hold a cluster key (hex digits expected)") from None
    if len(key) < 16:
        raise SystemExit(f"the cluster key in {path} is too short (at least 16 bytes)")
    return key


def attach_proof(key: bytes) -> str:
    """What a fileserver sends to attach: made from the key, which itself never travels."""
    return hmac.new(key, b"pfs fileserver attach", hashlib.sha256).hexdigest()


def proves(key: bytes, proof: str | None) -> bool:
    return proof is not None and hmac.compare_digest(attach_proof(key), proof)
