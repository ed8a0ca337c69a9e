"""Fixtures: a shared course-configured cluster, per-test clusters, clients and file names."""
from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
import uuid
from typing import Iterator

import pytest

import pfs
from clusters import COURSE, Cluster
from mounts import Mounted


def pytest_sessionfinish(session, exitstatus):
    """A run leaves no Client session behind: one left waiting for a cluster that was stopped
    would warn, minutes after the summary, that its metaserver is gone (its stream's thread
    lives as long as a session is on it)."""
    deadline = time.monotonic() + 15
    while True:
        gc.collect()
        left = [t for t in threading.enumerate() if t.name == "pfs-stream"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        print(f"\n{len(left)} session stream(s) left open: a test left a Client with a session "
              "behind (finish it, or drop every reference to it)", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """One course-configured cluster shared by the tests that do not stop or kill it."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), **COURSE).start()
    yield c
    c.stop()


@pytest.fixture
def fresh_cluster(tmp_path) -> Iterator[Cluster]:
    """A cluster of the test's own (for tests that kill or restart it)."""
    c = Cluster(tmp_path / "cluster", **COURSE).start()
    yield c
    c.stop()


@pytest.fixture
def clients(cluster) -> Iterator[callable]:
    """clients(n) -> n fresh initialized clients of the shared cluster, finished afterwards."""
    made: list[pfs.Client] = []

    def make(n: int = 1, cache_blocks: int = 16):
        new = [cluster.client(cache_blocks) for _ in range(n)]
        made.extend(new)
        return new[0] if n == 1 else new
    yield make
    for c in made:
        if c._session is not None and not c._session.lost:
            c.pfs_finish(c._session.client_id)


@pytest.fixture
def name() -> str:
    """A file name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pfs(cluster, tmp_path):
    """pfs(*args, check=True, input=None, env={}) -> the finished `python -m pfs ARGS` (bytes
    out), run in a scratch directory (tmp_path/"cwd") against the shared cluster; `env` adds
    to (or with None values, removes from) its environment."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args, check=True, input=None, env=None):
        environment = cluster.env()
        for key, value in (env or {}).items():
            environment.pop(key, None)
            if value is not None:
                environment[key] = value
        done = subprocess.run([sys.executable, "-m", "pfs", *map(str, args)], env=environment,
                              input=input, capture_output=True, timeout=120, cwd=cwd)
        done.out, done.err = done.stdout.decode(errors="replace"), done.stderr.decode()
        if check:
            assert done.returncode == 0, done.err
        assert "Traceback" not in done.err, done.err
        return done
    run.cwd = cwd
    return run


@pytest.fixture
def mount(cluster, tmp_path):
    """mount(name) -> a Mounted on tmp_path/name; all unmounted afterwards."""
    made: list[Mounted] = []

    def make(name: str = "mnt") -> Mounted:
        made.append(Mounted(cluster, tmp_path / name))
        return made[-1]
    yield make
    for m in made:
        m.unmount()
