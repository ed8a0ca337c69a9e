"""The `pfs` command: run servers (`up`, `down`, `metaserver`, `fileserver`) and use files.

    pfs up --data-dir ./pfs-data          # a whole local cluster, in the foreground
    pfs up --detach --data-dir D / pfs down --data-dir D    # ... or in the background
    pfs mkdir -p a/b / pfs ls [-l] [PATH] / pfs stat PATH / pfs mv SRC DST / pfs rm [-r] PATH
    pfs put [-r] [--force] LOCAL PATH     # atomic; "-" is stdin
    pfs get [-r] PATH LOCAL               # "-" is stdout
    pfs cat PATH / pfs cp SRC DST / pfs du PATH / pfs df
    pfs ls -R 'logs/*' / pfs find DIR -name PAT -size +N / pfs head|tail -c N PATH
    pfs touch PATH / pfs checksum PATH    # CRC32C of the file's bytes
    pfs status                            # the cluster's fileservers and sessions
    pfs bench                             # striped throughput against this cluster

Invariant: every failure is one line, "pfs COMMAND: message", with exit status 1, argument errors
included; Ctrl-C is status 130. Each module of COMMAND_GROUPS registers its own subcommands
(`register(sub)`); this one only assembles them and runs the one named. `pfs --help` lists the
environment variables.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pfs import __version__
from pfs.metadata import DEFAULT_CACHE_BLOCKS, DEFAULT_LOCK_CACHE_FILES, DEFAULT_RETRY_SECONDS
from pfs.protocol.transport import DEFAULT_METASERVER

from . import servers
from .arguments import HelpFormatter, Parser
from .console import interrupted
from .supervisor import die_with_parent

#: The modules of commands, in the order `pfs --help` lists them. They are imported when a run
#: needs them: a server command (servers.COMMANDS) loads its own group alone, so that a server
#: process holds none of the client's cache, data path and sessions, which the others import.
COMMAND_GROUPS = ("servers", "files", "namespace", "find", "layouts", "cluster", "mount",
                  "bench", "units")

_EPILOG = f"""\
environment variables (read by clients and the file commands):
  PFS_METASERVER     host:port of the metaserver; clients learn the fileservers from it
                     (default {DEFAULT_METASERVER}; also the default of fileserver --metaserver)
  PFS_SECRET_FILE    a file holding the cluster's secret (the servers' --secret-file); read
                     before PFS_SECRET (default: unset)
  PFS_SECRET         the cluster's shared secret, the contents of the servers' --secret-file
                     (default: unset, for a cluster without one; set but empty is an error)
  PFS_TLS_CA         PEM file of the CA that signed the servers' --tls-cert: talk TLS to them;
                     servers use it too, to reach each other (default: unset, plaintext;
                     `pfs up` sets it for the servers it starts)
  PFS_TLS_CERT,      PEM certificate and key a client shows to servers that ask for one
  PFS_TLS_KEY        (--tls-client-ca, mutual TLS) (default: unset, none shown)
  PFS_CACHE_BLOCKS   client cache capacity in blocks, 0 turns the cache off
                     (default {DEFAULT_CACHE_BLOCKS}: 64 MiB with the default 64 KiB blocks)
  PFS_LOCK_CACHE_FILES  closed files a client keeps its tokens for, unused, so that a reopen
                     asks for none; 0 releases them at close (default {DEFAULT_LOCK_CACHE_FILES})
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


def _parser(groups: tuple[str, ...] = COMMAND_GROUPS) -> argparse.ArgumentParser:
    parser = Parser(prog="pfs", formatter_class=HelpFormatter,
                    description="PFS, a parallel file system: run its servers and copy, list "
                                "and change its files.\n\n" + _EXAMPLES,
                    epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"pfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in groups:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; arguments a command does not know are that command's error (argparse
    would make them the top-level parser's)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(("servers",) if argv[:1] and argv[0] in servers.COMMANDS
                     else COMMAND_GROUPS)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        subparsers.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        args = _parse(argv)
        _setup_logging(getattr(args, "log_level", "warning"))
        if getattr(args, "die_with_parent", False):
            die_with_parent()
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback
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
