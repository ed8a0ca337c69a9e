"""A failover cluster for the tests: a 3-member etcd on loopback, several metaservers sharing it
(`pfs metaserver --store etcd://...`, one active), and fileservers that know every metaserver,
all real processes on free ports, each stopped by whoever started it; and the checks of what
a deposed metaserver and the one elected after it granted and wrote."""
from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

import pfs
from netns import Split
from pfs.protocol.tokenmodes import WRITE
from pfs_servers.etcdlocal import LocalEtcd, _free_port, find_etcd
from pfs_servers.metaserver.election import DEFAULT_TTL

START_TIMEOUT = 60.0


def need_etcd() -> None:
    if find_etcd() is None:
        pytest.skip("no etcd binary: run install-system-packages.sh as root (it unpacks "
                    "Debian's etcd-server into /opt/pfs-etcd), or set PFS_ETCD")


class HACluster:
    def __init__(self, data_dir: pathlib.Path, metaservers: int = 2, fileservers: int = 4,
                 lease_seconds: float = 2.0, block_size: int = 512, stripe_blocks: int = 2,
                 replicas: int = 1, log_level: str = "info", split: Split | None = None) -> None:
        """`log_level`: the metaservers' (debug: their logs name every token granted).
        `split`: the first metaserver runs in that network namespace (tests/netns.py), on its
        far_ip, and is the active one to begin with; etcd and the fileservers listen on its
        host_ip, where both sides reach them while the link is up."""
        need_etcd()
        self.data_dir, self.split = data_dir, split
        data_dir.mkdir(parents=True, exist_ok=True)
        host = split.host_ip if split else "127.0.0.1"
        self.etcd = LocalEtcd(data_dir / "etcd", members=3, host=host)
        self.key_file = data_dir / "cluster.key"
        self.key_file.write_text(secrets.token_hex(32) + "\n")
        self.ports = [_free_port() for _ in range(metaservers)]
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.exposed = ["--host", host, "--insecure"] if split else []  # (for the fileservers)
        if split:
            self.addresses[0] = f"{split.far_ip}:{self.ports[0]}"
        self.settings = ["--fileservers", str(fileservers), "--lease-seconds", str(lease_seconds),
                         "--block-size", str(block_size), "--stripe-blocks", str(stripe_blocks),
                         "--replicas", str(replicas), "--log-level", log_level]
        self.metaservers: list[subprocess.Popen | None] = [None] * metaservers
        self.fileservers: list[subprocess.Popen] = []
        self.fileserver_count = fileservers
        self.election_ttl = DEFAULT_TTL

    @property
    def address(self) -> str:
        """What PFS_METASERVER holds: every metaserver."""
        return ",".join(self.addresses)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PFS_METASERVER": self.address, **extra}

    def _spawn(self, args: list[str], log: pathlib.Path,
               prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([*prefix, sys.executable, "-m", "pfs", *args],
                                stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                                start_new_session=True, cwd=self.data_dir, env=self.env())

    def start_metaserver(self, i: int) -> None:
        far = self.split is not None and i == 0
        self.metaservers[i] = self._spawn(
            ["metaserver", "--data-dir", str(self.data_dir / f"meta{i}"), "--port",
             str(self.ports[i]), "--store", self.etcd.url, "--cluster-key-file",
             str(self.key_file), *self.settings,
             *(["--host", self.split.far_ip, "--insecure"] if far else [])],
            self.log(i), self.split.prefix if far else ())

    def log(self, i: int) -> pathlib.Path:
        return self.data_dir / f"meta{i}.log"

    def start(self) -> "HACluster":
        """Every process started, and serving; or every one stopped again."""
        try:
            self.etcd.start()
            for i in range(len(self.metaservers)):
                self.start_metaserver(i)
                if i == 0 and self.split:
                    self.wait_active(0)
            for i in range(self.fileserver_count):
                self.fileservers.append(self._spawn(
                    ["fileserver", "--data-dir", str(self.data_dir / f"fs{i}"), "--name",
                     f"fs{i}", "--metaserver", self.address, "--cluster-key-file",
                     str(self.key_file), *self.exposed], self.data_dir / f"fs{i}.log"))
            self.wait_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_active(self, i: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while "is active now" not in self.log(i).read_text():
            assert time.monotonic() < deadline, f"metaserver {i} was not elected; see {self.log(i)}"
            time.sleep(0.1)

    def active(self) -> int:
        """Which metaserver became active last (its index, -1: none), from their logs."""
        elected = {}
        for i, process in enumerate(self.metaservers):
            if process is not None and process.poll() is None:
                lines = [line for line in self.log(i).read_text().splitlines()
                         if "is active now" in line]
                if lines:
                    elected[lines[-1][:23]] = i  # (its timestamp, to the millisecond)
        return elected[max(elected)] if elected else -1

    def wait_serving(self, timeout: float = START_TIMEOUT) -> float:
        """Until a client can start a session and every fileserver is online at the active
        metaserver; seconds."""
        started = time.monotonic()
        while True:
            client = pfs.Client(self.address, cache_blocks=0)
            client_id = client.pfs_initialize()
            if client_id > 0:
                online = client.layout().fileservers_online
                client.pfs_finish(client_id)
                if online >= self.fileserver_count:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no metaserver served within {timeout}s; see "
                                     f"{self.data_dir}/meta*.log")
            time.sleep(0.2)

    def kill_metaserver(self, i: int, sig: int = signal.SIGKILL) -> None:
        process = self.metaservers[i]
        process.send_signal(sig)
        if sig == signal.SIGKILL:
            process.wait(timeout=30)

    def stop(self) -> None:
        for process in [*self.fileservers, *self.metaservers]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)
                process.terminate()
        for process in [*self.fileservers, *self.metaservers]:
            if process is not None:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        self.etcd.stop()


def ha_client(ha: HACluster) -> pfs.Client:
    client = pfs.Client(ha.address, cache_blocks=64)
    assert client.pfs_initialize() > 0, pfs.pfs_last_error()
    return client


def create_open(client: pfs.Client, name: str) -> int:
    assert client.pfs_create(name, 2) == 0, pfs.pfs_last_error()
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0, pfs.pfs_last_error()
    return fd


# --- what two terms granted, from the metaservers' debug logs -----------------------------------
@dataclasses.dataclass(frozen=True)
class TokenGrant:
    at: datetime.datetime
    client: int
    start: int
    end: int
    file: int
    mode: int

    def conflicts(self, other: "TokenGrant") -> bool:
        return (self.file == other.file and self.client != other.client
                and self.start < other.end and other.start < self.end
                and WRITE in (self.mode, other.mode))


GRANT_LINE = re.compile(r"^(\S+ \S+) .*grant: client (\d+) holds \[(\d+), (\d+)\) of file "
                        r"(\d+) in mode (\d+)$")
STEPPED_DOWN = "term as the active one is over"


def logged_at(line: str) -> datetime.datetime:
    return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def token_grants(log: str) -> list[TokenGrant]:
    """The tokens a metaserver granted, from its debug log."""
    return [TokenGrant(logged_at(m[1]), *(int(g) for g in m.groups()[1:]))
            for m in map(GRANT_LINE.match, log.splitlines()) if m]


def elected_at(log: str) -> datetime.datetime:
    return logged_at(next(line for line in log.splitlines() if "is active now" in line))


def elected_epoch(log: str) -> int:
    return int(re.search(r"is active now \(epoch (\d+)", log)[1])


def stepped_down_at(log: str) -> datetime.datetime:
    return logged_at(next(line for line in log.splitlines() if STEPPED_DOWN in line))


def check_grants_of_two_terms(old_log: str, new_log: str) -> None:
    """No token the deposed metaserver granted was granted after the one that took over was
    elected, so no two conflicting tokens of different epochs were ever held at once; and two
    of them do conflict (else the check proves nothing)."""
    new_term = elected_at(new_log)
    old_grants, new_grants = token_grants(old_log), token_grants(new_log)
    assert old_grants and new_grants
    assert [g for g in old_grants if g.at >= new_term] == []
    assert any(g.conflicts(h) for g in old_grants for h in new_grants)


def check_epoch_refused(ha: HACluster, epoch: int) -> None:
    """The deposed one's epoch no longer guards anything: a write made with it is refused by
    etcd (as the deposed one's late writes are)."""
    from pfs_servers.metaserver.etcd import Deposed, EtcdStore
    from pfs_servers.metaserver.etcdclient import put
    store = EtcdStore(ha.etcd.endpoints)
    try:
        store.guard = (store.key("leader"), epoch)
        with pytest.raises(Deposed):
            store._commit([put(store.key("c/files"), "0")])
    finally:
        store.close()
