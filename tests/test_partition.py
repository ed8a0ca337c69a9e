"""A network partition (README, "Deadlines"): one fileserver runs in a network namespace of its
own, joined to this one by a veth pair, and the partition takes its link down, so packets to it
vanish without an answer (tests/netns.py). Calls that need it must fail while the partition
lasts, within the client's documented deadline, naming what was not stored; new clients still
start; once the partition heals, close stores everything. A client cut off together with that
fileserver, which holds the first copy of a replicated file, and evicted with a write that only
that copy took, must not have it served after the heal (docs/consistency.md, "What a failure
costs"). Needs root (CI runs as root) and `ip`."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest

import pfs
from clusters import RemoteClient, read_file, wait_until
from netns import Split, can_make_namespaces, far_fileserver
from test_replicas import in_sync, objects, pfs_cli

MiB = 1 << 20
RETRY_SECONDS = 3


pytestmark = pytest.mark.skipif(not can_make_namespaces(),
                                reason="needs root and `ip netns` (network namespaces)")


class Partitioned:
    """A metaserver and the near fileserver in this namespace, the far fileserver in a namespace
    of its own. The far one listens on an address of that namespace's loopback device, routed
    to from here over the veth pair: so a client started in the namespace (`client_inside`)
    still reaches it during the partition, as a machine on its side of a split would, while
    neither reaches the metaserver or the near fileserver (which listen on the veth's address
    here)."""

    def __init__(self, data: pathlib.Path) -> None:
        self.data_dir, self.processes = data, []
        self.split = Split()
        self.far_ip = self.split.far_ip
        try:
            self._start_servers()
        except BaseException:
            self.stop()
            raise

    def _start_servers(self) -> None:
        data, split = self.data_dir, self.split
        address_file = data / "address"
        self._start("metaserver", "--data-dir", data / "meta", "--host", split.host_ip,
                    "--port", "0", "--insecure", "--fileservers", "2", "--lease-seconds", "3",
                    "--block-size", "65536", "--stripe-blocks", "16",
                    "--address-file", address_file)
        wait_until(address_file.exists, timeout=30, what="the metaserver to listen")
        self.address = address_file.read_text().strip()
        key = ("--cluster-key-file", data / "meta" / "cluster.key")
        self._start("fileserver", "--data-dir", data / "fs0", "--metaserver", self.address,
                    "--name", "near", "--host", split.host_ip, "--insecure", *key)
        self.processes.append(far_fileserver(split, data / "fs1", self.address,
                                             data / "meta" / "cluster.key", self._log()))
        wait_until(self.starts, timeout=30, what="both fileservers to be online")

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PFS_METASERVER": self.address, **extra}

    def client_inside(self, **env: str) -> RemoteClient:
        """A client process in the far fileserver's namespace (tests/worker.py)."""
        return RemoteClient(self, cache_blocks=0, prefix=self.split.prefix, **env)

    def _log(self):
        return open(self.data_dir / "servers.log", "ab")

    def _start(self, *args) -> None:
        log = self._log()
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "pfs", *map(str, args), "--die-with-parent"],
            stdout=log, stderr=log, cwd=self.data_dir, start_new_session=True))

    def starts(self) -> bool:
        probe = pfs.Client(metaserver=self.address, cache_blocks=0)
        if probe.pfs_initialize() == -1:
            return False
        online = probe.layout().fileservers_online
        probe.pfs_finish(probe.pfs_initialize())
        return online == 2

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(20)
        self.split.delete()


@pytest.fixture
def partitioned(tmp_path, monkeypatch):
    monkeypatch.setenv("PFS_RETRY_SECONDS", str(RETRY_SECONDS))
    (tmp_path / "data").mkdir()
    p = Partitioned(tmp_path / "data")
    yield p
    p.stop()


def timed(call) -> tuple[int, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@pytest.mark.timeout(240)
def test_calls_fail_within_the_deadline_while_partitioned_and_store_once_healed(partitioned):
    client = pfs.Client(metaserver=partitioned.address, cache_blocks=0)
    assert client.pfs_initialize() > 0, pfs.pfs_last_error()
    assert client.pfs_create("f", 2) == 0, pfs.pfs_last_error()
    fd = client.pfs_open("f", pfs.PFS_READ_WRITE)
    data = os.urandom(8 * MiB)  # 1 MiB stripe units: half on each fileserver
    assert client.pfs_write(fd, data, 4 * MiB, 0) == 4 * MiB
    assert client.pfs_fsync(fd) == 0, pfs.pfs_last_error()

    partitioned.split.cut()
    assert client.pfs_write(fd, data[4 * MiB:], 4 * MiB, 4 * MiB) == 4 * MiB  # write-behind
    # Each fails while the partition lasts (it lasts until they return), saying what is not
    # stored; none waits out the partition.
    for call in (lambda: client.pfs_fsync(fd), lambda: client.pfs_close(fd)):
        result, seconds = timed(call)
        assert result == -1
        error = pfs.pfs_last_error()
        assert "not stored" in str(error), error
        print(f"failed after {seconds:.1f} s: {error}")
    # The cluster is degraded, not closed: a new client starts meanwhile.
    newcomer = pfs.Client(metaserver=partitioned.address, cache_blocks=0)
    wait_until(lambda: newcomer.pfs_initialize() > 0, timeout=30,
               what="a new client to start while a fileserver is cut off")
    newcomer.pfs_finish(newcomer.pfs_initialize())

    partitioned.split.heal()
    wait_until(lambda: client.pfs_close(fd) == 0, timeout=60,
               what="close to store everything once the partition healed")
    fd = client.pfs_open("f", pfs.PFS_READ)
    buf = bytearray(len(data))
    assert client.pfs_read(fd, buf, len(buf), 0) == len(data) and buf == data
    assert client.pfs_close(fd) == 0
    client.pfs_finish(client.pfs_initialize())


KiB = 1 << 10
CUT_OFF = b"X" * (64 * KiB)


def first_copy_far(client: pfs.Client, far_ip: str) -> str:
    """A new file with two copies whose first is on the far fileserver (placement moves one
    fileserver along for each new file)."""
    far = next(i for i, a in client.fileservers().items() if a.startswith(far_ip + ":"))
    for n in range(4):
        client.create(f"g{n}", 1, 2)
        fd = client.pfs_open(f"g{n}", pfs.PFS_READ)
        meta = client.fstat(fd)
        assert client.pfs_close(fd) == 0
        if meta.recipe.servers[0] == far:
            return f"g{n}"
    raise AssertionError("no new file put its first copy on the far fileserver")


def stored(partitioned: Partitioned, fileserver: str) -> dict[str, bytes]:
    """A fileserver's objects (and checksum files) that are not empty, as on its disk."""
    return {name: data for name, data in objects(partitioned.data_dir / fileserver).items()
            if data}


@pytest.mark.timeout(240)
def test_a_write_cut_off_with_one_copy_never_comes_back(partitioned):
    """Issue 21: a client X cut off together with the fileserver of a file's first copy writes;
    that copy takes the bytes, the second cannot, X's fsync fails and X is evicted. A reader on
    the other side sees the old bytes. Once the partition heals, the first copy must not serve
    X's bytes: it was recorded stale at X's eviction, and the resync gives it the old ones."""
    owner = pfs.Client(metaserver=partitioned.address, cache_blocks=0)
    assert owner.pfs_initialize() > 0, pfs.pfs_last_error()
    name = first_copy_far(owner, partitioned.far_ip)
    old = os.urandom(256 * KiB)
    fd = owner.pfs_open(name, pfs.PFS_READ_WRITE)
    assert owner.pfs_write(fd, old, len(old), 0) == len(old)
    assert owner.pfs_close(fd) == 0, pfs.pfs_last_error()

    x = partitioned.client_inside(PFS_RETRY_SECONDS=str(RETRY_SECONDS))
    try:
        fd_x = x.call("pfs_open", name, pfs.PFS_READ_WRITE)
        assert fd_x > 0
        # A write that completes (the old bytes again) gives X its WRITE token before the cut.
        assert x.call("pfs_write", fd_x, old[:len(CUT_OFF)], len(CUT_OFF), 0) == len(CUT_OFF)
        assert x.call("pfs_fsync", fd_x) == 0, x.call("last_error")
        partitioned.split.cut()
        assert x.call("pfs_write", fd_x, CUT_OFF, len(CUT_OFF), 0) == len(CUT_OFF)
        x.send("pfs_fsync", fd_x)
        # Meanwhile, on the other side: the read waits for X's eviction, then gets old bytes.
        reader = pfs.Client(metaserver=partitioned.address, cache_blocks=0)
        assert reader.pfs_initialize() > 0, pfs.pfs_last_error()
        fd_r = reader.pfs_open(name, pfs.PFS_READ)
        buf = bytearray(len(CUT_OFF))
        assert reader.pfs_read(fd_r, buf, len(buf), 0) == len(buf), pfs.pfs_last_error()
        assert buf == old[:len(CUT_OFF)]
        assert reader.pfs_close(fd_r) == 0
        assert x.receive(timeout=60) == -1, "X's fsync cannot have succeeded"
        # The scenario happened: the far copy took X's bytes, and nothing else has them.
        (far_copy,) = [d for n, d in stored(partitioned, "fs1").items() if "." not in n]
        assert far_copy[:len(CUT_OFF)] == CUT_OFF
    finally:
        x.close()

    partitioned.split.heal()
    wait_until(lambda: in_sync(partitioned), timeout=60, what="the far copy's resync")
    fresh = pfs.Client(metaserver=partitioned.address, cache_blocks=0)
    assert fresh.pfs_initialize() > 0, pfs.pfs_last_error()
    assert read_file(fresh, name) == old  # from the first copy, the far one
    assert stored(partitioned, "fs1") == stored(partitioned, "fs0")
    scrubbed = pfs_cli(partitioned, "scrub", name)
    assert scrubbed.returncode == 0 and "all good" in scrubbed.stdout, scrubbed
    for client in (owner, reader, fresh):
        client.pfs_finish(client.pfs_initialize())
