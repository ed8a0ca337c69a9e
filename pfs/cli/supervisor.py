"""`pfs up`: a metaserver and N fileservers as child processes, watched until Ctrl-C or SIGTERM.

Invariant: no server outlives the `pfs up` that started it (each asks for SIGTERM when its parent
dies, and every exit path stops the children); a server that crashes is restarted on its data
directory and port, unless it crashes again at once, which stops the cluster.
Server code is imported only inside these functions: the `pfs` command loads none to start.
"""
from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc

from .arguments import credentials as credentials_of

if TYPE_CHECKING:
    from pfs_servers.rpc import StopOnSignals

log = logging.getLogger("pfs.up")

#: A server that dies this soon after being restarted is not restarted again.
CRASH_LOOP_SECONDS = 10
#: Where `pfs up --detach` logs, in its data directory.
DETACHED_LOG = "pfs.log"
#: Seconds `pfs up --detach` waits for the cluster to come up (each server has 60 to start).
DETACH_TIMEOUT = 150.0
#: What `pfs up` prints once the cluster serves (and `pfs up --detach` waits for).
UP_LINE = "PFS is up"


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies, so that no server outlives the `pfs up`
    that supervises it, even a SIGKILLed one (Linux only). The process asks for it itself: a
    preexec_fn would run Python in a child forked from a process with gRPC threads."""
    parent = os.getppid()
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before we asked
        raise SystemExit("the parent process is gone; exiting")


def cmd_up(args: argparse.Namespace) -> int:
    """Starts a metaserver and N fileservers as child processes and watches them."""
    from pfs_servers.instance import lock_data_dir
    from pfs_servers.metaserver import settings
    data = pathlib.Path(args.data_dir).resolve()
    lock = lock_data_dir(data, "pfs up")  # in use: said here, not in a log
    # Resolved here as the metaserver will (it records them), to know how many fileservers to
    # run, and to refuse a setting that cannot change in one line.
    chosen = settings.resolve(data / "meta", {name: getattr(args, name) for name in SETTINGS})[0]
    fileservers = chosen.fileservers
    if args.ha:
        args.ha_port = chosen.port
    if args.detach:
        os.close(lock)
        return _detach(args, data, fileservers)
    return _supervise(args, data, fileservers)


#: The settings a cluster remembers (servers/metaserver/settings.py), as `pfs up` takes them.
SETTINGS = ("port", "fileservers", "block_size", "stripe_blocks", "lease_seconds",
            "recovery_seconds", "replicas")


def _given_settings(args: argparse.Namespace) -> list[str]:
    """The flags of the settings given on the command line: only those, so that the
    metaserver keeps what its data directory remembers of the others."""
    flags = []
    for name in SETTINGS:
        if getattr(args, name) is not None:
            flags += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return flags


def _children_flags(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The flags every server of the cluster gets, and their environment."""
    common = ["--log-level", args.log_level, "--die-with-parent", *_host_flags(args)]
    env = dict(os.environ)
    if args.secret_file:
        common += ["--secret-file", str(pathlib.Path(args.secret_file).resolve())]
    if args.tls_cert:
        common += ["--tls-cert", str(pathlib.Path(args.tls_cert).resolve()),
                   "--tls-key", str(pathlib.Path(args.tls_key).resolve())]
        # The servers talk to each other over TLS too; a self-signed certificate is its own CA.
        env["PFS_TLS_CA"] = str(pathlib.Path(args.tls_ca or args.tls_cert).resolve())
    if args.tls_client_ca:
        common += ["--tls-client-ca", str(pathlib.Path(args.tls_client_ca).resolve())]
    return common, env


def _supervise(args: argparse.Namespace, data: pathlib.Path, fileservers: int) -> int:
    from pfs_servers.rpc import StopOnSignals
    address_file = data / "metaserver.address"
    address_file.unlink(missing_ok=True)
    stop = StopOnSignals()
    common, env = _children_flags(args)
    credentials = credentials_of(args)
    credentials.tls_ca = env.get("PFS_TLS_CA")
    children: list[subprocess.Popen] = []

    def spawn(*argv: str) -> None:
        # Run in the data directory: `-m pfs` from a source checkout would import the
        # unbuilt source tree instead of the installed package.
        children.append(subprocess.Popen([sys.executable, "-m", "pfs", *argv, *common],
                                         cwd=data, env=env))

    etcd = None
    try:
        if args.ha:
            etcd, address, key_file = _start_ha(args, data, spawn)
            address_file.write_text(address + "\n")
        else:
            spawn("metaserver", "--data-dir", str(data / "meta"), "--address-file",
                  str(address_file), *_given_settings(args))
            address = _wait_for(lambda: address_file.exists()
                                and address_file.read_text().strip(),
                                children, stop, "the metaserver to listen")
            if not address:
                return _stop_children(children, 1)
            # A restarted metaserver must come back where fileservers and clients look for it.
            children[0].args += ["--port", address.rsplit(":", 1)[1]]
            key_file = data / "meta" / "cluster.key"
        for i in range(fileservers):
            spawn("fileserver", "--data-dir", str(data / f"fs{i}"), "--metaserver", address,
                  "--name", f"fs{i}", "--cluster-key-file", str(key_file))
        if not _wait_for(lambda: _online(address, credentials) >= fileservers, children, stop,
                         f"{fileservers} fileservers to register"):
            return _stop_children(children, 1)
        print(f"{UP_LINE}: metaserver {address}, {fileservers} fileservers, data in {data}\n"
              f"  export PFS_METASERVER={address}\n"
              f"Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if not _restart_crashed(children, data, env):
                return _stop_children(children, 1)
            for i in etcd.restart_ended() if etcd is not None else ():
                log.error("etcd member %d ended; restarted on its data directory", i)
        log.info("stopping the cluster")
        return _stop_children(children, 0)
    except BaseException:
        _stop_children(children, 1)
        raise
    finally:
        if etcd is not None:
            etcd.stop()


#: Metaservers `pfs up --ha` runs: one active, the others standing by.
HA_METASERVERS = 2


def _start_ha(args: argparse.Namespace, data: pathlib.Path, spawn):
    """`pfs up --ha`: a 3-member etcd on loopback (DATA_DIR/etcd) and HA_METASERVERS
    metaservers sharing it, on --port and the ports after it (0: free ones), with one cluster
    key (DATA_DIR/cluster.key); the etcd cluster, the metaservers' address list and the key."""
    from pfs_servers import clusterkey
    from pfs_servers.etcdlocal import LocalEtcd, _free_port
    clusterkey.load_or_create(data)
    etcd = LocalEtcd(data / "etcd", members=3).start()
    ports = [args.ha_port + i if args.ha_port else _free_port() for i in range(HA_METASERVERS)]
    settings = _given_settings(args)
    if "--port" in settings:
        del settings[settings.index("--port"):settings.index("--port") + 2]
    for i, port in enumerate(ports):
        spawn("metaserver", "--data-dir", str(data / ("meta" if i == 0 else f"meta{i}")),
              "--port", str(port), "--store", etcd.url, "--cluster-key-file",
              str(data / clusterkey.KEY_FILE), *settings)
    return etcd, ",".join(f"{args.host}:{port}" for port in ports), data / clusterkey.KEY_FILE


def _detach(args: argparse.Namespace, data: pathlib.Path, fileservers: int) -> int:
    """`pfs up --detach`: the same `pfs up` in a session of its own (no terminal's Ctrl-C or
    hangup reaches it), logging to DATA_DIR/pfs.log; returns once it serves, or fails with the
    line of its log that says why."""
    argv = ["up", "--data-dir", str(data), *_given_settings(args), "--log-level",
            args.log_level, *_host_flags(args), *["--ha"] * args.ha]
    for flag, path in (("--secret-file", args.secret_file), ("--tls-cert", args.tls_cert),
                       ("--tls-key", args.tls_key), ("--tls-ca", args.tls_ca),
                       ("--tls-client-ca", args.tls_client_ca)):
        if path:
            argv += [flag, str(pathlib.Path(path).resolve())]
    log_path = data / DETACHED_LOG
    with open(log_path, "ab") as log_file:
        start = log_file.tell()
        # In the data directory: `-m pfs` from a source checkout would import the source tree.
        child = subprocess.Popen([sys.executable, "-m", "pfs", *argv], cwd=data,
                                 stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                 start_new_session=True)
    _wait_for_detached(child, log_path, start)
    address = (data / "metaserver.address").read_text().strip()
    print(f"{UP_LINE} in the background (PID {child.pid}): metaserver {address}, "
          f"{fileservers} fileservers, data in {data}\n"
          f"  export PFS_METASERVER={address}\n"
          f"Its log is {log_path}; `pfs down --data-dir {data}` stops it.", flush=True)
    return 0


def _wait_for_detached(child: subprocess.Popen, log_path: pathlib.Path, start: int) -> None:
    """Waits until the detached `pfs up` says it serves (in its log from `start` on); if it
    exits or times out first, SystemExit with the line of its log that says why."""
    def written() -> list[str]:
        with open(log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace").splitlines()
    deadline = time.monotonic() + DETACH_TIMEOUT
    try:
        while not any(line.startswith(UP_LINE) for line in written()):
            if child.poll() is not None or time.monotonic() > deadline:
                if child.poll() is None:
                    _stop_children([child], 1)
                lines = [line for line in written() if line.strip()]
                why = next((line for line in reversed(lines) if line.startswith("pfs ")),
                           lines[-1] if lines else "it wrote nothing")
                raise SystemExit(f"the cluster did not start ({log_path} has its log): {why}")
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop_children([child], 130)
        raise


def _host_flags(args: argparse.Namespace) -> list[str]:
    """Where every server of `pfs up` listens (each checks that it may)."""
    return ["--host", args.host, *["--insecure"] * args.insecure]


def _restart_crashed(children: list[subprocess.Popen], data: pathlib.Path,
                     env: dict[str, str]) -> bool:
    """A server that died is started again on the same data directory, as a supervisor would;
    the data it acknowledged is on disk, and clients re-learn a fileserver's new address.
    False when one died again right after a restart: something is wrong that a restart will
    not fix (its log says what), so the cluster stops."""
    for i, child in enumerate(children):
        if child.poll() is None:
            continue
        what, how = _named(child), _ending(child.returncode)
        if time.monotonic() - getattr(child, "started", 0.0) < CRASH_LOOP_SECONDS:
            log.error("%s %s again within %ds of its restart; stopping the cluster: see its "
                      "log above", what, how, CRASH_LOOP_SECONDS)
            return False
        log.error("%s %s; restarted", what, how)
        children[i] = subprocess.Popen(child.args, cwd=data, env=env)
        children[i].started = time.monotonic()
    return True


def _named(child: subprocess.Popen) -> str:
    """A server as operators know it: "metaserver", or "fileserver fs2" by its member name."""
    if "--name" in child.args:
        return f"fileserver {child.args[child.args.index('--name') + 1]}"
    return "metaserver"


def _ending(returncode: int) -> str:
    """How a server ended, in words: "was killed (signal 9, SIGKILL)", "exited with code 1"."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"was killed (signal {-returncode})"
        return f"was killed (signal {-returncode}, {name})"
    return f"exited with code {returncode}"


def _online(address: str, credentials) -> int:
    """How many fileservers the metaserver at `address` sees online (0 if it does not answer)."""
    try:
        with credentials.channel(address) as channel:
            reply = pb_grpc.MetaServerStub(channel).Status(pb.StatusRequest(), timeout=2)
        return sum(1 for f in reply.fileservers if f.online)
    except Exception:  # noqa: BLE001 - not up yet
        return 0


def _wait_for(ready, children: list[subprocess.Popen], stop: StopOnSignals, what: str,
              timeout: float = 60.0):
    """Polls `ready()` until it is truthy; None if a child died, we were stopped, or time ran out."""
    deadline = time.monotonic() + timeout
    log.info("waiting for %s", what)
    while time.monotonic() < deadline and not stop.is_set():
        if any(c.poll() is not None for c in children):
            log.error("a server exited while waiting for %s; see its log above", what)
            return None
        value = ready()
        if value:
            return value
        stop.wait(0.1)
    if not stop.is_set():
        log.error("gave up waiting for %s after %.0fs", what, timeout)
    return None


def _stop_children(children: list[subprocess.Popen], code: int) -> int:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return code
