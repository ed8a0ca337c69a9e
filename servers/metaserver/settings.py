"""The cluster's settings, remembered in the metaserver's data directory (`settings.json`).

Invariant: the settings a metaserver runs with are the ones recorded at the first start on its
data directory, except those given again on the command line: a setting given with another
value replaces the recorded one if it can change (each change is named, with what it does), and
one that cannot change (the block size) is refused before anything listens. A restart without
flags therefore comes back as it was: same port, same default replica count, same lease.

Why the block size cannot change: it is the cache unit of every client (a client caches every
file in blocks of the cluster's size), so files of another block size could not share a cache.
The stripe unit, by contrast, is in each file's recipe: a new one applies to new files only.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from pfs.metadata import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STRIPE_BLOCKS,
)

FILE_NAME = "settings.json"
DEFAULT_PORT = 50050


@dataclasses.dataclass
class Settings:
    fileservers: int = 4
    block_size: int = DEFAULT_BLOCK_SIZE
    stripe_blocks: int = DEFAULT_STRIPE_BLOCKS
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    recovery_seconds: float | None = None  # None: twice the lease
    replicas: int = 1
    port: int = DEFAULT_PORT


#: What a change of each setting that may change does (said when it changes).
EFFECTS = {
    "fileservers": "clients may start once that many members have joined",
    "stripe_blocks": "for new files; existing files keep their stripe unit",
    "lease_seconds": "for every session from now on",
    "recovery_seconds": "for the next restart's recovery window",
    "replicas": "the default for new files; existing files keep their copies",
    "port": "clients and fileservers must be given the new address",
}
#: Settings that never change once recorded, and why.
FIXED = {"block_size": "it is the cache unit of every client and of every file's recipe; a "
                       "cluster of another block size needs a new data directory"}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def load(data_dir: pathlib.Path) -> Settings | None:
    """The recorded settings, or None before the first start."""
    try:
        recorded = json.loads((data_dir / FILE_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SystemExit(f"cannot read the cluster's settings in {data_dir / FILE_NAME}: {e}; "
                         "fix or remove the file (then give every setting again)") from None
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in recorded.items() if k in known})


def resolve(data_dir: pathlib.Path, given: dict[str, object]) -> tuple[Settings, list[str]]:
    """The settings to run with: the recorded ones with those `given` (None: not given) put
    over them, and a line for each that changed; SystemExit for one that may not change."""
    recorded = load(data_dir)
    if recorded is None:
        return Settings(**{k: v for k, v in given.items() if v is not None}), []
    changes = []
    for name, value in given.items():
        old = getattr(recorded, name)
        if value is None or value == old:
            continue
        if name in FIXED:
            raise SystemExit(f"{flag(name)} {value} differs from the cluster's {old}, recorded "
                             f"in {data_dir / FILE_NAME} at its first start, and cannot change: "
                             f"{FIXED[name]}")
        changes.append(f"{flag(name)} {_shown(old)} -> {_shown(value)} ({EFFECTS[name]})")
        setattr(recorded, name, value)
    return recorded, changes


def record(data_dir: pathlib.Path, settings: Settings) -> None:
    """Writes the settings, whole or not at all."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / (FILE_NAME + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(settings), indent=1) + "\n")
    os.replace(tmp, data_dir / FILE_NAME)


def _shown(value: object) -> str:
    return "the default" if value is None else f"{value:g}" if isinstance(value, float) \
        else str(value)
