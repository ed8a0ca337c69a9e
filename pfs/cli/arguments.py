"""What the command line takes: argparse types, PFS paths as written, the servers' credentials
flags, and the one way a file command registers its parser.

Invariant: an argument is checked when it is parsed, so a bad one is the command's one-line error
(status 1) before anything is contacted; every option's help names its default.
"""
from __future__ import annotations

import argparse
import errno
from typing import Callable

from pfs.protocol import errnos
from pfs.protocol.paths import canonical
from pfs.protocol.transport import Credentials, default_metaserver, read_secret_file

from .console import Console, reporting_errors

#: Help text layout: descriptions and epilogs keep their line breaks.
HelpFormatter = argparse.RawDescriptionHelpFormatter


class Parser(argparse.ArgumentParser):
    """Argument errors as every other failure: one line "pfs COMMAND: message", status 1.
    (Subcommands' parsers are of the class of their parent, so this holds for them too.)"""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_command(sub, name: str, summary: str, description: str,
                run: Callable[[argparse.Namespace, Console], int], human_flag: bool = False,
                graceful: bool = False) -> argparse.ArgumentParser:
    """A file command's parser, its failures reported as one line (console.reporting_errors).
    `human_flag`: -h is --human-readable (as with ls, du and df), and help is --help alone.
    `graceful`: on Ctrl-C the command stops at a safe point, to clean up (commands with a
    session); those that only look (and bench, which runs its own loops) stop at once."""
    p = sub.add_parser(name, help=summary, description=description,
                       formatter_class=HelpFormatter, add_help=not human_flag)
    if human_flag:
        p.add_argument("--help", action="help", help="show this help message and exit")
        p.add_argument("-h", "--human-readable", dest="human", action="store_true",
                       help="sizes as 1.5 KiB, 3.0 GiB (default: in bytes)")
    p.set_defaults(run=reporting_errors(run, graceful=graceful))
    return p


def progress_flags(p: argparse.ArgumentParser) -> None:
    quiet = p.add_mutually_exclusive_group()
    quiet.add_argument("--progress", action="store_true",
                       help="show the bytes copied on stderr as the copy goes, even when "
                            "stderr is not a terminal (default: on a terminal, for copies "
                            "over 32 MiB)")
    quiet.add_argument("-q", "--quiet", action="store_true",
                       help="print neither progress nor the line that sums up the copy; "
                            "errors still (default: off)")


def json_flag(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON (default: text)")


# --- argparse types ---------------------------------------------------------------------------
def _address_problem(address: str) -> str | None:
    """What is wrong with a HOST:PORT to connect to (or a comma-separated list of them:
    several metaservers), or None."""
    if "," in address:
        return next(filter(None, map(_address_problem, address.split(","))), None)
    host, colon, port = address.rpartition(":")
    if not colon or not host:
        return "is not HOST:PORT"
    if not (port.isdigit() and 0 < int(port) < 65536):
        return f"has the port {port!r}; a port is a number from 1 to 65535"
    return None


def address(text: str) -> str:
    """An argparse type: HOST:PORT to connect to."""
    problem = _address_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return text


def port(text: str) -> int:
    """An argparse type: a port to listen on, 0 for any free one."""
    if not (text.isdigit() and int(text) < 65536):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: a number from 0 (any free "
                                         "port) to 65535")
    return int(text)


def at_least_one(kind: type):
    """An argparse type: an int (or float) that is positive."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value
    parse.__name__ = kind.__name__  # what argparse names in its own messages
    return parse


_UNITS = {"": 1, "k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_count(text: str) -> int:
    """An argparse type: a number of bytes, N or N with a binary unit: 10k, 4M, 2G, 1T."""
    digits = text.rstrip("".join(_UNITS))
    unit = text[len(digits):]
    if not digits.isdigit() or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes: N, or N followed "
                                         "by k, M, G or T (binary units)")
    return int(digits) * _UNITS[unit]


def size_test(text: str) -> tuple[int, int]:
    """An argparse type: find's -size, [+|-]N[k|M|G|T]: (-1, N) less than N bytes, (0, N)
    exactly N, (1, N) more than N."""
    sign = {"+": 1, "-": -1}.get(text[:1], 0)
    return sign, byte_count(text[1:] if sign else text)


def metaserver() -> str:
    """The metaserver's address, from PFS_METASERVER (or the default), checked."""
    where = default_metaserver()
    problem = _address_problem(where)
    if problem:
        raise errnos.error(errno.EINVAL, f"PFS_METASERVER={where!r} {problem}")
    return where


def pfs_path(arg: str) -> tuple[str, bool]:
    """A PFS path from the command line: canonical, and whether it ended with `/` (so it must
    be a directory). `pfs:/a/b`, `pfs://a/b` and `pfs:///a/b` are `a/b` (`pfs:x`, with no slash,
    is a name). OSError EINVAL when it is not a valid path."""
    if arg == "pfs:" or arg.startswith("pfs:/"):
        arg = arg[len("pfs:"):].lstrip("/")
    stripped = arg.rstrip("/")
    return canonical(stripped), stripped != arg and stripped != ""


def credentials(args: argparse.Namespace) -> Credentials:
    """What the servers' --secret-file and --tls-* flags say, checked (SystemExit if not)."""
    try:
        secret = read_secret_file(args.secret_file) if getattr(args, "secret_file", None) \
            else None
        if getattr(args, "tls_client_ca", None) and not getattr(args, "tls_cert", None):
            raise SystemExit("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key: the "
                             "servers must serve TLS to ask for their callers' certificates")
        return Credentials(secret=secret, tls_cert=getattr(args, "tls_cert", None),
                           tls_key=getattr(args, "tls_key", None),
                           tls_client_ca=getattr(args, "tls_client_ca", None))
    except ValueError as e:
        raise SystemExit(str(e)) from None
