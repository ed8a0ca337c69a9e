"""The `pfs` command: run servers (`up`, `down`, `metaserver`, `fileserver`) and use files.

    pfs up --data-dir ./pfs-data          # a whole local cluster, in the foreground
    pfs up --detach --data-dir D / pfs down --data-dir D    # ... or in the background
    pfs mkdir -p a/b / pfs ls [-l] [PATH] / pfs stat PATH / pfs mv SRC DST / pfs rm [-r] PATH
    pfs put [-r] [--force] LOCAL PATH     # atomic; "-" is stdin
    pfs get [-r] PATH LOCAL               # "-" is stdout
    pfs cat PATH / pfs cp SRC DST / pfs du PATH / pfs df
    pfs status                            # the cluster's fileservers and sessions
    pfs bench                             # striped throughput against this cluster

The user commands live in pfs/tools.py; `pfs --help` lists the environment variables. Every
failure is one line, "pfs COMMAND: message", with exit status 1, argument errors included.
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

from . import __version__

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


class _Parser(argparse.ArgumentParser):
    """Argument errors as every other failure: one line "pfs COMMAND: message", status 1."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def _die_with_parent() -> None:
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


def _credentials(args: argparse.Namespace):
    from .protocol.transport import Credentials
    secret = None
    if getattr(args, "secret_file", None):
        secret = pathlib.Path(args.secret_file).read_text().strip()
        if not secret:
            raise SystemExit(f"the secret file {args.secret_file} is empty: put the cluster's "
                             "secret in it (an empty secret would turn authentication off)")
    try:
        if getattr(args, "tls_client_ca", None) and not getattr(args, "tls_cert", None):
            raise SystemExit("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key: the "
                             "servers must serve TLS to ask for their callers' certificates")
        return Credentials(secret=secret, tls_cert=getattr(args, "tls_cert", None),
                           tls_key=getattr(args, "tls_key", None),
                           tls_client_ca=getattr(args, "tls_client_ca", None))
    except ValueError as e:
        raise SystemExit(str(e)) from None


# --- servers ----------------------------------------------------------------------------------
def cmd_metaserver(args: argparse.Namespace) -> int:
    from pfs_servers import metaserver

    def ready(port: int) -> None:
        if args.address_file:
            tmp = pathlib.Path(args.address_file + ".tmp")
            tmp.write_text(f"{args.host}:{port}\n")
            os.replace(tmp, args.address_file)

    metaserver.serve(pathlib.Path(args.data_dir), host=args.host, port=args.port,
                     fileservers=args.fileservers, block_size=args.block_size,
                     stripe_blocks=args.stripe_blocks, lease_seconds=args.lease_seconds,
                     recovery_seconds=args.recovery_seconds, replicas=args.replicas,
                     credentials=_credentials(args), allow_insecure=args.insecure,
                     on_ready=ready)
    return 0


def cmd_fileserver(args: argparse.Namespace) -> int:
    from pfs_servers import fileserver
    if not args.cluster_key_file:
        raise SystemExit("pfs fileserver: give it the metaserver's cluster key: "
                         "--cluster-key-file (the metaserver's DATA_DIR/cluster.key) or "
                         "PFS_CLUSTER_KEY_FILE")
    fileserver.serve(pathlib.Path(args.data_dir), args.metaserver,
                     pathlib.Path(args.cluster_key_file), host=args.host, port=args.port,
                     advertise=args.advertise, name=args.name, credentials=_credentials(args),
                     allow_insecure=args.insecure)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Starts a metaserver and N fileservers as child processes and watches them."""
    from pfs_servers.instance import lock_data_dir
    from pfs_servers.rpc import StopOnSignals
    data = pathlib.Path(args.data_dir).resolve()
    if args.detach:
        os.close(lock_data_dir(data, "pfs up"))  # in use: said here, not in the log
        return _detach(args, data)
    lock_data_dir(data, "pfs up")
    address_file = data / "metaserver.address"
    address_file.unlink(missing_ok=True)
    stop = StopOnSignals()
    common = ["--log-level", args.log_level, "--die-with-parent"]
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
    credentials = _credentials(args)
    credentials.tls_ca = env.get("PFS_TLS_CA")
    children: list[subprocess.Popen] = []

    def spawn(*argv: str) -> None:
        # Run in the data directory: `-m pfs` from a source checkout would import the
        # unbuilt source tree instead of the installed package.
        children.append(subprocess.Popen([sys.executable, "-m", "pfs", *argv, *common],
                                         cwd=data, env=env))

    try:
        spawn("metaserver", "--data-dir", str(data / "meta"), "--port", str(args.port),
              "--fileservers", str(args.fileservers), "--block-size", str(args.block_size),
              "--stripe-blocks", str(args.stripe_blocks), "--replicas", str(args.replicas),
              "--lease-seconds", str(args.lease_seconds), "--address-file", str(address_file),
              *_recovery_flag(args))
        address = _wait_for(lambda: address_file.exists() and address_file.read_text().strip(),
                            children, stop, "the metaserver to listen")
        if not address:
            return _stop_children(children, 1)
        # A restarted metaserver must come back where the fileservers and clients look for it.
        port_flag = children[0].args.index("--port") + 1
        children[0].args[port_flag] = address.rsplit(":", 1)[1]
        for i in range(args.fileservers):
            spawn("fileserver", "--data-dir", str(data / f"fs{i}"), "--metaserver", address,
                  "--name", f"fs{i}", "--cluster-key-file", str(data / "meta" / "cluster.key"))
        if not _wait_for(lambda: _online(address, credentials) >= args.fileservers, children, stop,
                         f"{args.fileservers} fileservers to register"):
            return _stop_children(children, 1)
        print(f"{UP_LINE}: metaserver {address}, {args.fileservers} fileservers, data in {data}\n"
              f"  export PFS_METASERVER={address}\n"
              f"Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if not _restart_crashed(children, data, env):
                return _stop_children(children, 1)
        log.info("stopping the cluster")
        return _stop_children(children, 0)
    except BaseException:
        _stop_children(children, 1)
        raise


def _detach(args: argparse.Namespace, data: pathlib.Path) -> int:
    """`pfs up --detach`: the same `pfs up` in a session of its own (no terminal's Ctrl-C or
    hangup reaches it), logging to DATA_DIR/pfs.log; returns once it serves, or fails with the
    line of its log that says why."""
    argv = ["up", "--data-dir", str(data), "--fileservers", str(args.fileservers),
            "--port", str(args.port), "--block-size", str(args.block_size),
            "--stripe-blocks", str(args.stripe_blocks), "--lease-seconds", str(args.lease_seconds),
            "--replicas", str(args.replicas), "--log-level", args.log_level, *_recovery_flag(args)]
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
    address = (data / "metaserver.address").read_text().strip()
    print(f"{UP_LINE} in the background (PID {child.pid}): metaserver {address}, "
          f"{args.fileservers} fileservers, data in {data}\n"
          f"  export PFS_METASERVER={address}\n"
          f"Its log is {log_path}; `pfs down --data-dir {data}` stops it.", flush=True)
    return 0


def _recovery_flag(args: argparse.Namespace) -> list[str]:
    return [] if args.recovery_seconds is None else ["--recovery-seconds",
                                                     str(args.recovery_seconds)]


def cmd_down(args: argparse.Namespace) -> int:
    """Stops the `pfs up` holding a data directory: SIGTERM, then waits (bounded) until it has
    let the directory go."""
    from pfs_servers.instance import data_dir_holder
    data = pathlib.Path(args.data_dir).resolve()
    pid = data_dir_holder(data)
    if pid is None:
        print(f"no pfs up runs on {data}: nothing to stop")
        return 0
    try:
        command = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        command = []
    if not pid:
        raise SystemExit(f"{data} is being taken by a process that has not written its PID yet; "
                         "try again in a moment")
    if command and b"up" not in command:
        shown = b" ".join(command).decode(errors="replace")[:120]
        raise SystemExit(f"{data} is held by PID {pid} ({shown}), not by a pfs up: give the "
                         "--data-dir of pfs up")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it has just stopped
    except PermissionError:
        raise SystemExit(f"not allowed to stop PID {pid}, which holds {data}") from None
    deadline = time.monotonic() + args.timeout
    while data_dir_holder(data) is not None:
        if time.monotonic() > deadline:
            raise SystemExit(f"pfs up (PID {pid}) is still running {args.timeout:g} s after "
                             f"SIGTERM; its log may say why (kill -9 {pid} stops it at once: "
                             "what was closed or fsynced is safe)")
        time.sleep(0.1)
    print(f"stopped the pfs up on {data} (PID {pid})")
    return 0


def _restart_crashed(children: list[subprocess.Popen], data: pathlib.Path,
                     env: dict[str, str]) -> bool:
    """A server that died is started again on the same data directory, as a supervisor would;
    the data it acknowledged is on disk, and clients re-learn a fileserver's new address.
    False when one died again right after a restart: something is wrong that a restart will
    not fix (its log says what), so the cluster stops."""
    for i, child in enumerate(children):
        if child.poll() is None:
            continue
        what = " ".join(child.args[3:5])
        if time.monotonic() - getattr(child, "started", 0.0) < CRASH_LOOP_SECONDS:
            log.error("%s exited again (code %s) within %ds of its restart; stopping the "
                      "cluster: see its log above", what, child.returncode, CRASH_LOOP_SECONDS)
            return False
        log.error("%s exited with code %s; restarting it", what, child.returncode)
        children[i] = subprocess.Popen(child.args, cwd=data, env=env)
        children[i].started = time.monotonic()
    return True


def _online(address: str, credentials) -> int:
    """How many fileservers the metaserver at `address` sees online (0 if it does not answer)."""
    from ._proto import metaserver_pb2 as pb
    from ._proto import metaserver_pb2_grpc as pb_grpc
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


# --- the command line -------------------------------------------------------------------------
def _epilog() -> str:
    from .client import DEFAULT_CACHE_BLOCKS, DEFAULT_METASERVER, DEFAULT_RETRY_SECONDS
    return f"""\
environment variables (read by clients and the file commands):
  PFS_METASERVER     host:port of the metaserver; clients learn the fileservers from it
                     (default {DEFAULT_METASERVER}; also the default of fileserver --metaserver)
  PFS_SECRET         the cluster's shared secret, the contents of the servers' --secret-file
                     (default: unset, for a cluster without one; set but empty is an error)
  PFS_TLS_CA         PEM file of the CA that signed the servers' --tls-cert: talk TLS to them;
                     servers use it too, to reach each other (default: unset, plaintext;
                     `pfs up` sets it for the servers it starts)
  PFS_TLS_CERT,      PEM certificate and key a client shows to servers that ask for one
  PFS_TLS_KEY        (--tls-client-ca, mutual TLS) (default: unset, none shown)
  PFS_CACHE_BLOCKS   client cache capacity in blocks, 0 turns the cache off
                     (default {DEFAULT_CACHE_BLOCKS}: 64 MiB with the default 64 KiB blocks)
  PFS_RETRY_SECONDS  seconds a client keeps retrying a fileserver it cannot reach, e.g. one
                     being restarted (default {DEFAULT_RETRY_SECONDS:g})

PFS paths are /-separated from the root; the leading / is optional (a/b is /a/b), and the
URLs pfs prints, pfs:/a/b (or pfs://a/b, pfs:///a/b), are the same path.
"-" is standard input for put and standard output for get.
Errors, argument errors included, are one line "pfs COMMAND: message" and exit status 1;
Ctrl-C exits with status 130.
`pfs COMMAND --help` describes each command."""


_EXAMPLES = """\
Examples:
  pfs up --data-dir ./pfs-data          # a whole local cluster, in the foreground
  pfs up --detach --data-dir ./pfs-data # ... or in the background (pfs down stops it)
  export PFS_METASERVER=127.0.0.1:50050
  pfs mkdir -p results/run1 && pfs put out.bin results/run1/
  pfs ls -l results/run1 ; pfs get results/run1/out.bin copy.bin"""


def _parser() -> argparse.ArgumentParser:
    from pfs_servers.metaserver import (DEFAULT_BLOCK_SIZE, DEFAULT_LEASE_SECONDS,
                                        DEFAULT_STRIPE_BLOCKS)

    from . import tools
    from .client import default_metaserver
    formatter = tools.HelpFormatter
    parser = _Parser(prog="pfs", formatter_class=formatter,
                                     description="PFS, a parallel file system: run its servers "
                                                 "and copy, list and change its files.\n\n"
                                                 + _EXAMPLES,
                                     epilog=_epilog())
    parser.add_argument("--version", action="version", version=f"pfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"],
                       help="what the servers log to stderr; debug shows every token "
                            "revocation (default %(default)s)")
        p.add_argument("--secret-file", help="file holding the cluster's shared secret; "
                                             "clients set PFS_SECRET to it (default: none, "
                                             "loopback only)")
        p.add_argument("--tls-cert", help="PEM certificate: serve TLS; clients set PFS_TLS_CA "
                                          "(default: none, plaintext)")
        p.add_argument("--tls-key", help="PEM private key of --tls-cert (default: none)")
        p.add_argument("--tls-client-ca",
                       help="mutual TLS: accept only connections that show a certificate "
                            "signed by this CA (PEM); clients set PFS_TLS_CERT and "
                            "PFS_TLS_KEY, servers show their --tls-cert (default: none)")
        p.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)

    def cluster_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--block-size", type=tools.at_least_one(int), default=DEFAULT_BLOCK_SIZE,
                       help="bytes per block, the cache unit (default %(default)s)")
        p.add_argument("--stripe-blocks", type=tools.at_least_one(int),
                       default=DEFAULT_STRIPE_BLOCKS,
                       help="blocks per stripe unit (default %(default)s)")
        p.add_argument("--lease-seconds", type=tools.at_least_one(float),
                       default=DEFAULT_LEASE_SECONDS,
                       help="a silent client loses its tokens after this (default %(default)s)")
        p.add_argument("--recovery-seconds", type=tools.at_least_one(float), default=None,
                       help="after a restart, how long clients of before have to reclaim "
                            "their sessions, open files and tokens; at least the lease "
                            "(default: twice the lease)")
        p.add_argument("--replicas", type=tools.at_least_one(int), default=1,
                       help="copies of each stripe unit a new file gets unless it asks, each "
                            "on a fileserver of its own (default %(default)s)")

    def insecure_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--insecure", action="store_true",
                       help="allow listening beyond loopback without a secret (default: off)")

    up = sub.add_parser("up", formatter_class=formatter,
                        help="run a local cluster (metaserver + fileservers)",
                        description="Run a metaserver and N fileservers on this machine, in the "
                                    "foreground,\nwith their data under --data-dir. A server "
                                    "that crashes is restarted on its\ndata directory. Ctrl-C "
                                    "or SIGTERM stops the whole cluster cleanly.\n\n"
                                    "With --detach it runs in the background instead, logging "
                                    "to DATA_DIR/pfs.log;\nthe command returns once the cluster "
                                    "serves, and `pfs down --data-dir D` stops it.")
    up.add_argument("--data-dir", default="pfs-data", help="where everything is stored "
                                                           "(default ./%(default)s)")
    up.add_argument("--fileservers", type=tools.at_least_one(int), default=4,
                    help="number of fileservers to run (default %(default)s)")
    up.add_argument("--port", type=tools.port, default=50050,
                    help="metaserver port; 0 picks a free one and writes host:port to "
                         "DATA_DIR/metaserver.address (default %(default)s)")
    up.add_argument("--detach", action="store_true",
                    help=f"run in the background, logging to DATA_DIR/{DETACHED_LOG}; return "
                         "once the cluster serves (default: off, in the foreground)")
    cluster_flags(up)
    server_flags(up)
    up.add_argument("--tls-ca", help="CA of the servers' certificates (default: --tls-cert "
                                     "itself, for a self-signed one)")
    up.set_defaults(run=cmd_up)

    down = sub.add_parser("down", formatter_class=formatter,
                          help="stop a cluster that pfs up runs (in the background or not)",
                          description="Stop the pfs up that runs on --data-dir: it gets SIGTERM, "
                                      "as from Ctrl-C, and\nstops its servers cleanly. Waits "
                                      "until it has stopped; exit status 1 if it\nhas not "
                                      "within --timeout. Nothing running there is no error.")
    down.add_argument("--data-dir", default="pfs-data", help="the data directory of the pfs up "
                                                             "(default ./%(default)s)")
    down.add_argument("--timeout", type=tools.at_least_one(float), default=30.0,
                      help="seconds to wait for it to stop (default %(default)s)")
    down.set_defaults(run=cmd_down)

    meta = sub.add_parser("metaserver", formatter_class=formatter, help="run the metaserver",
                          description="Run the metaserver alone, for clusters that span hosts: "
                                      "it keeps the\nnamespace, client sessions and tokens. "
                                      "Clients may start once --fileservers\nfileservers are "
                                      "online.")
    meta.add_argument("--data-dir", required=True,
                      help="directory of the namespace database (required)")
    meta.add_argument("--host", default="127.0.0.1",
                      help="address to listen on; beyond loopback needs --secret-file or "
                           "--insecure (default %(default)s)")
    meta.add_argument("--port", type=tools.port, default=50050,
                      help="port to listen on, 0 for any free one (default %(default)s)")
    meta.add_argument("--fileservers", type=tools.at_least_one(int), default=4,
                      help="fileservers that must be online before clients may start "
                           "(default %(default)s)")
    meta.add_argument("--address-file", help="write host:port here once listening "
                                             "(default: none)")
    cluster_flags(meta)
    server_flags(meta)
    insecure_flag(meta)
    meta.set_defaults(run=cmd_metaserver)

    fs = sub.add_parser("fileserver", formatter_class=formatter, help="run one fileserver",
                        description="Run one fileserver: it stores the stripes of files under "
                                    "--data-dir\nand registers with the metaserver.")
    fs.add_argument("--data-dir", required=True, help="directory of its stored objects "
                                                      "(required)")
    fs.add_argument("--metaserver", type=tools.address, default=default_metaserver(),
                    help="host:port of the metaserver (default: $PFS_METASERVER, else "
                         "127.0.0.1:50050; now %(default)s)")
    fs.add_argument("--host", default="127.0.0.1",
                    help="address to listen on; beyond loopback needs --secret-file or "
                         "--insecure (default %(default)s)")
    fs.add_argument("--port", type=tools.port, default=0, help="port to listen on (default: 0, any "
                                                        "free port)")
    fs.add_argument("--advertise", type=tools.address, help="host:port clients should use (default: the host and "
                                        "port it listens on)")
    fs.add_argument("--name", help="its stable name in the cluster: a fileserver that comes back "
                                   "under its name with a lost or wiped data directory keeps its "
                                   "place, known to have lost its data (default: the identity "
                                   "kept in --data-dir)")
    fs.add_argument("--cluster-key-file", default=os.environ.get("PFS_CLUSTER_KEY_FILE"),
                    help="the metaserver's cluster key (its DATA_DIR/cluster.key), which "
                         "proves this fileserver belongs to the cluster; clients never hold "
                         "it (default: $PFS_CLUSTER_KEY_FILE; required)")
    server_flags(fs)
    insecure_flag(fs)
    fs.set_defaults(run=cmd_fileserver)

    tools.add_commands(sub)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; arguments a command does not know are that command's error (argparse
    would make them the top-level parser's)."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parse(argv)
        _setup_logging(getattr(args, "log_level", "warning"))
        if getattr(args, "die_with_parent", False):
            _die_with_parent()
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback
        from .tools import interrupted
        return interrupted(getattr(args, "command", None))
    except SystemExit as e:  # a server's or `pfs up`'s reason to stop: one line, named
        if args is None or not isinstance(e.code, str):
            raise
        print(f"pfs {args.command}: {e.code}", file=sys.stderr, flush=True)
        return 1
    except OSError as e:  # the file commands say theirs; this is the servers' (a data directory)
        if args is None:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pfs {args.command}: {e.strerror or e}{where}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
