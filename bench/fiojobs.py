"""fio jobs on a directory (a mount), for the benchmarks that set fio's figures beside PFS's API.

Rule: one job at a time, one file, psync (a call at a time, as the Python loops it is compared
with), fio's own page-cache invalidation before it runs; a figure is fio's reported bandwidth
or IOPS, parsed from its JSON output.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

HOW = "fio left out: not on the PATH (Debian: `apt-get install fio`)"


def available() -> bool:
    return shutil.which("fio") is not None


def run(path: pathlib.Path, rw: str, block: int, size: int, io_size: int | None = None) -> float:
    """Runs one job on the file `path`; returns its seconds as fio saw them: the job's bytes over
    its bandwidth (a write's through the fsync at its end)."""
    command = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={block}",
               f"--size={size}", "--ioengine=psync", "--end_fsync=1", "--randrepeat=1",
               "--output-format=json"]
    if io_size:
        command.append(f"--io_size={io_size}")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    job = json.loads(out[out.index("{"):])["jobs"][0]
    side = job["write" if "write" in rw else "read"]
    return side["io_bytes"] / side["bw_bytes"]  # seconds
