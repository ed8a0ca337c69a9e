"""A failover cluster for the tests: a 3-member etcd on loopback, several metaservers sharing it
(`pfs metaserver --store etcd://...`, one active), and fileservers that know every metaserver,
all real processes on free ports, each stopped by whoever started it."""
from __future__ import annotations

import os
import pathlib
import secrets
import signal
import subprocess
import sys
import time

import pytest

import pfs
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
                 replicas: int = 1, log_level: str = "info") -> None:
        """`log_level`: the metaservers' (debug: their logs name every token granted)."""
        need_etcd()
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.etcd = LocalEtcd(data_dir / "etcd", members=3)
        self.key_file = data_dir / "cluster.key"
        self.key_file.write_text(secrets.token_hex(32) + "\n")
        self.ports = [_free_port() for _ in range(metaservers)]
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
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

    def _spawn(self, args: list[str], log: pathlib.Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen([sys.executable, "-m", "pfs", *args],
                                stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
                                start_new_session=True, cwd=self.data_dir, env=self.env())

    def start_metaserver(self, i: int) -> None:
        self.metaservers[i] = self._spawn(
            ["metaserver", "--data-dir", str(self.data_dir / f"meta{i}"), "--port",
             str(self.ports[i]), "--store", self.etcd.url, "--cluster-key-file",
             str(self.key_file), *self.settings], self.log(i))

    def log(self, i: int) -> pathlib.Path:
        return self.data_dir / f"meta{i}.log"

    def start(self) -> "HACluster":
        self.etcd.start()
        for i in range(len(self.metaservers)):
            self.start_metaserver(i)
        for i in range(self.fileserver_count):
            self.fileservers.append(self._spawn(
                ["fileserver", "--data-dir", str(self.data_dir / f"fs{i}"), "--name", f"fs{i}",
                 "--metaserver", self.address, "--cluster-key-file", str(self.key_file)],
                self.data_dir / f"fs{i}.log"))
        self.wait_serving()
        return self

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
