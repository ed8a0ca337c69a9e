"""The commands that run servers: up and down (a local cluster, supervisor.py), metaserver and
fileserver (one server each, for clusters that span hosts).

Invariant: server code (pfs_servers) is imported only inside the commands that start or stop
servers, never to register them, so `pfs --help` and the file commands load none of it; a
server's reason to stop is a SystemExit with one line, which main prints as "pfs CMD: ...".
"""
from __future__ import annotations

import argparse
import os
import pathlib
import signal
import time
from typing import Callable

from pfs.metadata import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_STRIPE_BLOCKS,
)
from pfs.protocol.transport import default_metaserver

from .arguments import HelpFormatter, address, at_least_one, credentials, port
from .supervisor import DETACHED_LOG, cmd_up


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
                     credentials=credentials(args), allow_insecure=args.insecure,
                     on_ready=ready, store=args.store, cluster_key_file=args.cluster_key_file,
                     etcd_tls=dict(ca_file=args.etcd_ca, cert_file=args.etcd_cert,
                                   key_file=args.etcd_key))
    return 0


def cmd_fileserver(args: argparse.Namespace) -> int:
    from pfs_servers import fileserver
    if not args.cluster_key_file:
        raise SystemExit("give it the metaserver's cluster key: "
                         "--cluster-key-file (the metaserver's DATA_DIR/cluster.key) or "
                         "PFS_CLUSTER_KEY_FILE")
    fileserver.serve(pathlib.Path(args.data_dir), args.metaserver,
                     pathlib.Path(args.cluster_key_file), host=args.host, port=args.port,
                     advertise=args.advertise, name=args.name, credentials=credentials(args),
                     allow_insecure=args.insecure)
    return 0


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


# --- the command line -------------------------------------------------------------------------
def _server_command(sub, name: str, summary: str, description: str,
                    run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A server command's parser. Its failures are main's to report: a server's reason to stop
    is a SystemExit, its data directory's trouble an OSError."""
    p = sub.add_parser(name, formatter_class=HelpFormatter, help=summary,
                       description=description)
    p.set_defaults(run=run)
    return p


def _server_flags(p: argparse.ArgumentParser) -> None:
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


#: How a setting the data directory remembers is defaulted, in --help.
_AS_REMEMBERED = "default: as at the last start on DATA_DIR, else %s"
#: The settings a cluster remembers in its data directory (README, "Settings are remembered"):
#: flag, type, what it sets, its default at the first start.
_REMEMBERED_SETTINGS = (
    ("--fileservers", at_least_one(int), "fileservers that must have joined before clients "
                                         "may start; `pfs up` runs that many", 4),
    ("--block-size", at_least_one(int), "bytes per block, the cache unit; fixed at the first "
                                        "start", DEFAULT_BLOCK_SIZE),
    ("--stripe-blocks", at_least_one(int), "blocks per stripe unit of new files",
     DEFAULT_STRIPE_BLOCKS),
    ("--lease-seconds", at_least_one(float), "a silent client loses its tokens after this",
     DEFAULT_LEASE_SECONDS),
    ("--recovery-seconds", at_least_one(float), "after a restart, how long clients of before "
                                                "have to reclaim their sessions, open files and "
                                                "tokens; at least the lease", "twice the lease"),
    ("--replicas", at_least_one(int), "copies of each stripe unit a new file gets unless it "
                                      "asks, each on a fileserver of its own", 1),
)


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    """The remembered settings: None when not given, so that a restart keeps what was
    recorded."""
    for flag, kind, what, default in _REMEMBERED_SETTINGS:
        p.add_argument(flag, type=kind, help=f"{what} ({_AS_REMEMBERED % default})")


def _listening_flags(p: argparse.ArgumentParser, default_port: int | None, port_help: str) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; beyond loopback needs --secret-file or "
                        "--insecure (default %(default)s)")
    p.add_argument("--port", type=port, default=default_port, help=port_help)


def _cluster_key_flag(p: argparse.ArgumentParser, key_help: str) -> None:
    p.add_argument("--cluster-key-file", default=os.environ.get("PFS_CLUSTER_KEY_FILE"),
                   help=key_help)


def _insecure_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true",
                   help="allow listening beyond loopback without a secret (default: off)")


def _register_up_and_down(sub) -> None:
    up = _server_command(sub, "up", "run a local cluster (metaserver + fileservers)", """\
Run a metaserver and N fileservers on this machine, in the foreground,
with their data under --data-dir. A server that crashes is restarted on its
data directory. Ctrl-C or SIGTERM stops the whole cluster cleanly.

The settings (--port, --fileservers, --block-size, --stripe-blocks,
--lease-seconds, --recovery-seconds, --replicas) are remembered in
DATA_DIR/meta/settings.json: a restart without them runs as before, and one
that gives another value says what changed (the block size never changes).

With --detach it runs in the background instead, logging to DATA_DIR/pfs.log;
the command returns once the cluster serves, and `pfs down --data-dir D` stops it.""", cmd_up)
    up.add_argument("--data-dir", default="pfs-data", help="where everything is stored "
                                                           "(default ./%(default)s)")
    up.add_argument("--port", type=port,
                    help="metaserver port; 0 picks a free one and writes host:port to "
                         f"DATA_DIR/metaserver.address ({_AS_REMEMBERED % 50050})")
    up.add_argument("--detach", action="store_true",
                    help=f"run in the background, logging to DATA_DIR/{DETACHED_LOG}; return "
                         "once the cluster serves (default: off, in the foreground)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address every server listens on (clients and fileservers of other "
                         "machines reach them there); beyond loopback needs --secret-file or "
                         "--insecure (default %(default)s)")
    _insecure_flag(up)
    _cluster_flags(up)
    _server_flags(up)
    up.add_argument("--tls-ca", help="CA of the servers' certificates (default: --tls-cert "
                                     "itself, for a self-signed one)")
    up.add_argument("--ha", action="store_true",
                    help="a failover demo: a 3-member etcd (DATA_DIR/etcd; etcd from "
                         "install-system-packages.sh) and two metaservers sharing it, on --port "
                         "and the next port, one active and one standing by; kill the active "
                         "one and the other takes over (default: off, one metaserver on SQLite)")

    down = _server_command(sub, "down", "stop a cluster that pfs up runs (in the background or "
                                        "not)", """\
Stop the pfs up that runs on --data-dir: it gets SIGTERM, as from Ctrl-C, and
stops its servers cleanly. Waits until it has stopped; exit status 1 if it
has not within --timeout. Nothing running there is no error.""", cmd_down)
    down.add_argument("--data-dir", default="pfs-data", help="the data directory of the pfs up "
                                                             "(default ./%(default)s)")
    down.add_argument("--timeout", type=at_least_one(float), default=30.0,
                      help="seconds to wait for it to stop (default %(default)s)")


def _register_metaserver(sub) -> None:
    meta = _server_command(sub, "metaserver", "run the metaserver", """\
Run the metaserver alone, for clusters that span hosts: it keeps the
namespace, client sessions and tokens. Clients may start once --fileservers
fileservers are online. Its settings are remembered in DATA_DIR/settings.json
(see `pfs up --help`).""", cmd_metaserver)
    meta.add_argument("--data-dir", required=True,
                      help="directory of the namespace database (required)")
    _listening_flags(meta, None, f"port to listen on, 0 for any free one ({_AS_REMEMBERED % 50050})")
    meta.add_argument("--address-file", help="write host:port here once listening "
                                             "(default: none)")
    meta.add_argument("--store", help="where the metadata lives: sqlite (in --data-dir; the "
                      "default) or etcd://HOST:PORT[,HOST:PORT...], an etcd v3 cluster several "
                      "metaservers share, one active, the others standing by (default: sqlite)")
    _cluster_key_flag(meta, "the cluster key (default: DATA_DIR/cluster.key, made at the first "
                            "start); with etcd required, the same file on every metaserver")
    meta.add_argument("--etcd-ca", help="TLS to etcd: the CA certificate of its members "
                                        "(default: none, plain gRPC)")
    meta.add_argument("--etcd-cert", help="TLS to etcd: this metaserver's client certificate, "
                                          "if etcd asks for one (default: none)")
    meta.add_argument("--etcd-key", help="the key of --etcd-cert (default: none)")
    _cluster_flags(meta)
    _server_flags(meta)
    _insecure_flag(meta)


def _register_fileserver(sub) -> None:
    fs = _server_command(sub, "fileserver", "run one fileserver", """\
Run one fileserver: it stores the stripes of files under --data-dir
and registers with the metaserver.""", cmd_fileserver)
    fs.add_argument("--data-dir", required=True, help="directory of its stored objects "
                                                      "(required)")
    fs.add_argument("--metaserver", type=address, default=default_metaserver(),
                    help="host:port of the metaserver (default: $PFS_METASERVER, else "
                         "127.0.0.1:50050; now %(default)s)")
    _listening_flags(fs, 0, "port to listen on (default: 0, any free port)")
    fs.add_argument("--advertise", type=address, help="host:port clients should use (default: "
                                                      "the host and port it listens on)")
    fs.add_argument("--name", help="its stable name in the cluster: a fileserver that comes back "
                                   "under its name with a lost or wiped data directory keeps its "
                                   "place, known to have lost its data (default: the identity "
                                   "kept in --data-dir)")
    _cluster_key_flag(fs, "the metaserver's cluster key (its DATA_DIR/cluster.key), which proves "
                          "this fileserver belongs to the cluster; clients never hold it "
                          "(default: $PFS_CLUSTER_KEY_FILE; required)")
    _server_flags(fs)
    _insecure_flag(fs)


#: The commands registered here: a run of one of them loads no other group, so a server
#: process holds no client code (pfs/cli/__init__.py).
COMMANDS = ("up", "down", "metaserver", "fileserver")


def register(sub) -> None:
    """up, down, metaserver, fileserver."""
    _register_up_and_down(sub)
    _register_metaserver(sub)
    _register_fileserver(sub)
