"""The `pfs` user commands: put, get, ls, stat, rm, status, bench. Errors say what to do."""
from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import os
import sys
from typing import Iterator

import grpc

from . import errors
from ._proto import metaserver_pb2 as pb
from ._proto import metaserver_pb2_grpc as pb_grpc
from .client import DEFAULT_METASERVER, PFS_READ, PFS_READ_WRITE, Client
from .transport import Credentials

#: Bytes moved per call by put/get: a multiple of the default stripe unit over 4 servers.
COPY_CHUNK = 8 << 20


@contextlib.contextmanager
def _session() -> Iterator[Client]:
    """A client for one command, finished (files closed, tokens released) at the end."""
    client = Client()
    client.initialize()
    try:
        yield client
    finally:
        client.finish(client.initialize())


def _progress(done: int, total: int) -> None:
    """A running count on stderr for copies of more than a few chunks."""
    if total > 4 * COPY_CHUNK:
        end = "\n" if done >= total else ""
        print(f"\r  {done >> 20} / {total >> 20} MiB", end=end, file=sys.stderr, flush=True)


def cmd_put(args: argparse.Namespace) -> int:
    with _session() as client:
        total = os.path.getsize(args.local)
        client.create(args.name, args.stripe_width)
        fd = client.open(args.name, PFS_READ_WRITE)
        offset = 0
        with open(args.local, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                offset += client.write(fd, chunk, len(chunk), offset)
                _progress(offset, total)
        client.close(fd)
        print(f"{args.local} -> pfs:{args.name} ({offset} bytes)")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    with _session() as client:
        fd = client.open(args.name, PFS_READ)
        total = client.fstat(fd).file_size
        buf, offset = bytearray(COPY_CHUNK), 0
        with open(args.local, "wb") as f:
            while n := client.read(fd, buf, len(buf), offset):
                f.write(memoryview(buf)[:n])
                offset += n
                _progress(offset, total)
        client.close(fd)
        print(f"pfs:{args.name} -> {args.local} ({offset} bytes)")
    return 0


def _meta_line(name: str, size: int, mtime: float, width: int) -> str:
    when = datetime.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M:%S")
    return f"{size:>14}  {when}  w={width:<3} {name}"


def _metaserver() -> str:
    return os.environ.get("PFS_METASERVER") or DEFAULT_METASERVER


def _call(method: str, request, what: str):
    """One call to the metaserver outside any session (tools that only look)."""
    address = _metaserver()
    try:
        with Credentials().channel(address) as channel:
            return getattr(pb_grpc.MetaServerStub(channel), method)(request, timeout=10)
    except grpc.RpcError as e:
        raise errors.from_rpc(e, f"{what} (metaserver {address})") from None
    except ValueError as e:  # a bad PFS_SECRET
        raise errors.error(errno.EINVAL, str(e)) from None


def cmd_ls(args: argparse.Namespace) -> int:
    for meta in _call("List", pb.ListRequest(), "list files").files:
        print(_meta_line(meta.name, meta.size, meta.mtime, meta.recipe.stripe_width))
    return 0


def cmd_stat(args: argparse.Namespace) -> int:
    meta = _call("Stat", pb.StatRequest(name=args.name), f"stat {args.name!r}").meta
    r = meta.recipe
    print(f"name:          {meta.name}\nsize:          {meta.size}\n"
          f"ctime:         {datetime.datetime.fromtimestamp(meta.ctime)}\n"
          f"mtime:         {datetime.datetime.fromtimestamp(meta.mtime)}\n"
          f"block size:    {r.block_size}\nstripe blocks: {r.stripe_blocks}\n"
          f"stripe width:  {r.stripe_width}\nfileservers:   {list(r.servers)}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    with _session() as client:
        client.delete(args.name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = _call("Status", pb.StatusRequest(), "status")
    online = sum(1 for f in reply.fileservers if f.online)
    print(f"metaserver {_metaserver()}: {reply.files} files, {reply.sessions} client sessions, "
          f"block {reply.block_size} B x {reply.stripe_blocks} per stripe unit")
    print(f"fileservers: {online} online of {reply.expected_fileservers} expected")
    for f in reply.fileservers:
        print(f"  [{f.index}] {f.address:<22} {'online' if f.online else 'OFFLINE'}")
    return 0 if online >= reply.expected_fileservers else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run
    return run(args.size_mib, args.rounds)


def _reporting_errors(run):
    """Turns an OSError into one line on stderr and exit status 1."""
    @functools.wraps(run)
    def wrapper(args):
        try:
            return run(args)
        except OSError as e:
            print(f"pfs {args.command}: {e.strerror or e}", file=sys.stderr)
            return 1
    return wrapper


def add_commands(sub) -> None:
    p = sub.add_parser("put", help="copy a local file into PFS")
    p.add_argument("local")
    p.add_argument("name")
    p.add_argument("--stripe-width", type=int, default=4)
    p.set_defaults(run=_reporting_errors(cmd_put))
    p = sub.add_parser("get", help="copy a PFS file to a local file")
    p.add_argument("name")
    p.add_argument("local")
    p.set_defaults(run=_reporting_errors(cmd_get))
    sub.add_parser("ls", help="list files").set_defaults(run=_reporting_errors(cmd_ls))
    p = sub.add_parser("stat", help="show a file's metadata")
    p.add_argument("name")
    p.set_defaults(run=_reporting_errors(cmd_stat))
    p = sub.add_parser("rm", help="delete a file")
    p.add_argument("name")
    p.set_defaults(run=_reporting_errors(cmd_rm))
    sub.add_parser("status", help="show the cluster's servers").set_defaults(run=_reporting_errors(cmd_status))
    p = sub.add_parser("bench", help="measure striped read/write throughput")
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.set_defaults(run=_reporting_errors(cmd_bench))
