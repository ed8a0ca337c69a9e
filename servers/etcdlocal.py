"""A local etcd cluster on loopback, for `pfs up --ha` and the tests: N members on free ports,
each with a data directory of its own, started and stopped as child processes.

etcd itself comes from Debian's etcd-server package, unpacked (not installed) into
/opt/pfs-etcd by install-system-packages.sh; PFS_ETCD names another binary.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

#: Where install-system-packages.sh unpacks etcd.
UNPACKED = pathlib.Path("/opt/pfs-etcd/usr/bin/etcd")
START_TIMEOUT = 30.0


def find_etcd() -> str | None:
    """The etcd binary: PFS_ETCD, the unpacked package, or the PATH; None if there is none."""
    given = os.environ.get("PFS_ETCD")
    if given:
        return given
    if UNPACKED.exists():
        return str(UNPACKED)
    return shutil.which("etcd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalEtcd:
    def __init__(self, data_dir: pathlib.Path, members: int = 3,
                 tls: tuple[str, str] | None = None, host: str = "127.0.0.1") -> None:
        """`tls`: a certificate and its key the members serve their clients with; `host`: the
        address they serve them on (their peers talk over loopback)."""
        binary = find_etcd()
        if binary is None:
            raise SystemExit("no etcd found: run install-system-packages.sh as root (it unpacks "
                             "Debian's etcd-server into /opt/pfs-etcd), or set PFS_ETCD")
        self.binary, self.data_dir = binary, data_dir
        self.client_ports = [_free_port() for _ in range(members)]
        self.peer_ports = [_free_port() for _ in range(members)]
        self.processes: list[subprocess.Popen | None] = [None] * members
        self.tls, self.host = tls, host

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.client_ports]

    @property
    def url(self) -> str:
        """What `--store` takes."""
        return "etcd://" + ",".join(self.endpoints)

    def start(self) -> "LocalEtcd":
        for i in range(len(self.processes)):
            self.start_member(i)
        self.wait_ready()
        return self

    def start_member(self, i: int) -> None:
        peers = ",".join(f"m{j}=http://127.0.0.1:{p}" for j, p in enumerate(self.peer_ports))
        scheme = "https" if self.tls else "http"
        tls = ["--cert-file", self.tls[0], "--key-file", self.tls[1]] if self.tls else []
        directory = self.data_dir / f"etcd{i}"
        directory.mkdir(parents=True, exist_ok=True)
        log = open(directory / "etcd.log", "ab")
        # Ends with the process that started it, even a SIGKILLed one (util-linux's setpriv).
        outlive = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
        self.processes[i] = subprocess.Popen(
            [*outlive, self.binary, "--name", f"m{i}", "--data-dir", str(directory / "data"),
             "--listen-client-urls", f"{scheme}://{self.endpoints[i]}",
             "--advertise-client-urls", f"{scheme}://{self.endpoints[i]}", *tls,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
             "--initial-cluster", peers, "--initial-cluster-state", "new",
             "--initial-cluster-token", "pfs-local", "--log-level", "warn",
             "--logger", "zap"],
            stdout=log, stderr=log, start_new_session=True)

    def wait_ready(self) -> None:
        """Until a member answers a write (a quorum is up)."""
        from aetcd import rpc

        from .metaserver.etcdclient import Etcd, put, tls_credentials
        deadline = time.monotonic() + START_TIMEOUT
        client = Etcd(self.endpoints, tls_credentials(self.tls[0], None, None) if self.tls
                      else None)
        try:
            while True:
                try:
                    client.kv.Txn(rpc.TxnRequest(success=[put(b"pfs-ready", b"")]), timeout=2)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"etcd did not start within {START_TIMEOUT:g}s; see "
                                         f"{self.data_dir}/etcd*/etcd.log") from None
                    time.sleep(0.2)
        finally:
            client.close()

    def restart_ended(self) -> list[int]:
        """Starts again every member whose process ended, on its data directory (it catches
        up with the others from there); which ones."""
        ended = [i for i, process in enumerate(self.processes)
                 if process is not None and process.poll() is not None]
        for i in ended:
            self.start_member(i)
        return ended

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        process = self.processes[i]
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                process.wait(timeout=30)

    def stop(self) -> None:
        for i, process in enumerate(self.processes):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.processes[i] = None
