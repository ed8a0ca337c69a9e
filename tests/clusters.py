"""Real clusters for the tests: `pfs up` on a free loopback port and a temporary data directory,
and real client processes (tests/worker.py) to run against them.

Every cluster is stopped by whoever started it (SIGTERM, then SIGKILL of its whole process
group), and every wait is bounded.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator

import pfs
from pfs_servers.instance import port_holder

#: The course configuration (docs/design.md): B=512, S=2, 4 fileservers.
COURSE = dict(fileservers=4, block_size=512, stripe_blocks=2)
START_TIMEOUT = 60.0
WORKER = pathlib.Path(__file__).with_name("worker.py")


class Cluster:
    """A `pfs up` process (metaserver + fileservers) that tests can stop, kill and restart."""

    def __init__(self, data_dir: pathlib.Path, fileservers: int = 4, block_size: int = 512,
                 stripe_blocks: int = 2, lease_seconds: float = 3.0,
                 extra_args: tuple[str, ...] = (), prefix: list[str] | None = None) -> None:
        """`prefix`: a command that runs `pfs up` (given as its arguments), e.g. in a
        namespace of its own."""
        self.data_dir = data_dir
        self.prefix = prefix or []
        self.args = ["--fileservers", str(fileservers), "--block-size", str(block_size),
                     "--stripe-blocks", str(stripe_blocks), "--lease-seconds", str(lease_seconds),
                     *extra_args]
        self.fileservers = fileservers
        self.process: subprocess.Popen | None = None
        self.address = ""
        self.log = data_dir / "cluster.log"

    def start(self) -> "Cluster":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "pfs", "up", "--data-dir", str(self.data_dir), "--port", "0",
             "--die-with-parent",  # a killed test run leaves no cluster behind
             *self.args], stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            cwd=self.data_dir)  # not the source tree, which `-m pfs` would import
        ready = threading.Event()

        def watch() -> None:
            for line in self.process.stdout:
                if line.startswith(b"PFS is up"):
                    ready.set()
        threading.Thread(target=watch, daemon=True).start()
        if not ready.wait(START_TIMEOUT):
            self.kill()
            raise RuntimeError(f"the cluster did not start; its log:\n{self.log.read_text()}")
        self.address = (self.data_dir / "metaserver.address").read_text().strip()
        return self

    def stop(self) -> None:
        """Ctrl-C-like stop: SIGTERM, and the whole group is killed if it does not go."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL to every process of the cluster at once, as a power cut would."""
        if self.process:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap()

    def _reap(self) -> None:
        if self.process:
            self.process.wait(20)
            try:  # children that outlived their parent (they should not)
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process = None

    @property
    def key_file(self) -> pathlib.Path:
        """The cluster key (servers/clusterkey.py), which fileservers need to attach."""
        return self.data_dir / "meta" / "cluster.key"

    def server_pids(self, kind: str) -> list[int]:
        """Process ids of the cluster's servers of one kind ("metaserver" or "fileserver")."""
        children = pathlib.Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        return [p for p in pids
                if kind.encode() in pathlib.Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")]

    def fileserver_pid(self, address: str) -> int:
        """The process id of the fileserver listening at host:port `address`."""
        holder = port_holder(int(address.rsplit(":", 1)[1]))
        assert holder.startswith("PID "), f"nobody listens at {address}"
        return int(holder.split()[1])

    def client(self, cache_blocks: int = 16) -> pfs.Client:
        client = pfs.Client(metaserver=self.address, cache_blocks=cache_blocks)
        assert client.pfs_initialize() > 0, pfs.pfs_last_error()
        return client

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PFS_METASERVER": self.address, **extra}


#: The defaults `pfs up` ships with (what the benchmarks measure).
SHIPPED = dict(fileservers=4, block_size=64 * 1024, stripe_blocks=16, lease_seconds=10.0)


@contextlib.contextmanager
def temporary_cluster(**settings) -> Iterator[Cluster]:
    """A running cluster in a temporary directory, stopped and removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(pathlib.Path(tmp), **settings).start()
        try:
            yield cluster
        finally:
            cluster.stop()


class RemoteClient:
    """A PFS client in a process of its own (tests/worker.py), driven call by call.

    `remote.call("pfs_write", fd, b"data", 4, 0)` runs the C-like call there and returns its
    result; bytes travel as hex, and pfs_read results come back as (n, data)."""

    def __init__(self, cluster: Cluster, cache_blocks: int = 16, prefix: tuple[str, ...] = (),
                 **env: str) -> None:
        """`prefix`: a command that runs the worker (given as its arguments), e.g. in a
        network namespace; `cluster` is anything with `env(**extra)`."""
        self.process = subprocess.Popen(
            [*prefix, sys.executable, str(WORKER)],
            env=cluster.env(PFS_CACHE_BLOCKS=str(cache_blocks), **env),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.client_id = self.call("pfs_initialize")
        assert self.client_id > 0

    def call(self, op: str, *args, timeout: float = 60.0):
        self.send(op, *args)
        return self.receive(timeout)

    def send(self, op: str, *args) -> None:
        encoded = [{"hex": a.hex()} if isinstance(a, (bytes, bytearray)) else a for a in args]
        self.process.stdin.write(json.dumps([op, *encoded]) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = 60.0):
        answer: list = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        if not answer or not answer[0]:
            if self.process.poll() is None:  # its threads' stacks, on the test's stderr
                os.kill(self.process.pid, signal.SIGUSR1)
                time.sleep(1)
            raise AssertionError(f"worker {self.process.pid} did not answer in {timeout}s")
        reply = json.loads(answer[0])
        if "error" in reply:
            raise AssertionError(f"worker failed: {reply['error']}")
        result = reply["result"]
        return (result["n"], bytes.fromhex(result["hex"])) if isinstance(result, dict) and "hex" in result else result

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(20)

    def pause(self) -> None:
        """SIGSTOP: the client process freezes, its threads and heartbeats too."""
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("exit", timeout=20)
            except (AssertionError, OSError, ValueError):
                pass
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def fails(result, code: int) -> OSError:
    """A C-like call failed as documented: it returned -1, and pfs_last_error() is an OSError
    with errno `code` and a message. Returns that error, for checks of its message."""
    assert result == -1
    error = pfs.pfs_last_error()
    assert isinstance(error, OSError) and error.errno == code, error
    assert str(error)  # a message, not just a number
    return error


def write_file(client: pfs.Client, name: str, data: bytes, width: int = 4,
               close: bool = True) -> int | None:
    """Create `name` striped over `width` fileservers and write `data` at offset 0 through a
    read-write descriptor, then close it; with close=False return the descriptor, still open
    (its tokens held, its bytes perhaps only cached)."""
    assert client.pfs_create(name, width) == 0, pfs.pfs_last_error()
    fd = client.pfs_open(name, pfs.PFS_READ_WRITE)
    assert fd > 0, pfs.pfs_last_error()
    assert client.pfs_write(fd, data, len(data), 0) == len(data), pfs.pfs_last_error()
    if not close:
        return fd
    assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    return None


def read_file(client: pfs.Client, name: str, size: int | None = None) -> bytes:
    """Open `name` to read, read `size` bytes from offset 0 (all of them must come back), close.
    Without a size: the whole file as fstat reports it, and nothing past that end."""
    fd = client.pfs_open(name, pfs.PFS_READ)
    assert fd > 0, pfs.pfs_last_error()
    if size is None:
        size = client.fstat(fd).file_size
        buf = bytearray(size + 1)  # room for a byte past the end, which must not come back
    else:
        buf = bytearray(size)
    assert client.pfs_read(fd, buf, len(buf), 0) == size, pfs.pfs_last_error()
    assert client.pfs_close(fd) == 0, pfs.pfs_last_error()
    return bytes(buf[:size])


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
