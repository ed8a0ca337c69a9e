"""Real `pfs mount` processes for the tests (the fixture `mount` is conftest's)."""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys

import pytest

from clusters import wait_until

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"),
                                reason="no /dev/fuse: this machine (a container without the "
                                       "device) cannot mount FUSE file systems")
TIMEOUT = 60


class Mounted:
    """A `pfs mount` process in the foreground (with `options`), and where it mounted."""

    def __init__(self, cluster, path: pathlib.Path, *options: str) -> None:
        with contextlib.suppress(FileExistsError):  # (exist_ok would stat a stale mount)
            path.mkdir()
        self.path = path
        self.where = path.resolve()  # where the mount is (a link is followed)
        self.log = path.parent / f"{path.name}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pfs", "mount", str(path), *options], env=cluster.env(),
                stdout=log, stderr=log, cwd=path.parent, start_new_session=True)
        wait_until(lambda: os.path.ismount(self.where) or self.process.poll() is not None,
                   TIMEOUT, f"the mount on {path}")
        assert os.path.ismount(self.where), self.log.read_text()

    def unmount(self) -> None:
        # Whatever state it is in (ismount is False for a dead mount): "not mounted" is fine.
        subprocess.run(["fusermount3", "-u", "-z", str(self.where)], capture_output=True,
                       timeout=TIMEOUT)
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=TIMEOUT)
