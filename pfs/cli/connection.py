"""How the commands reach the cluster: a Client session for those that change things, bare
metaserver calls for those that only look.

Invariant: a command's session is finished (files closed, tokens released) however the command
ends; the commands that only look open no session, so they work while the cluster is short of
fileservers; a failure to reach the metaserver is an OSError that says what to do.
"""
from __future__ import annotations

import contextlib
import errno
from typing import Iterator

import grpc

from pfs._proto import metaserver_pb2 as pb
from pfs._proto import metaserver_pb2_grpc as pb_grpc
from pfs.client import Client
from pfs.metadata import Metadata
from pfs.protocol import errnos
from pfs.protocol.transport import Credentials

from .arguments import metaserver, pfs_path
from .console import shown


@contextlib.contextmanager
def session() -> Iterator[Client]:
    """A client for one command, finished (files closed, tokens released) at the end."""
    client = Client(metaserver())
    client.initialize()
    try:
        yield client
    finally:
        client.finish(client.initialize())


def call(method: str, request, what: str):
    """One call to the metaserver outside any session (commands that only look)."""
    with metaserver_stub(what) as stub:
        return getattr(stub, method)(request, timeout=10)


@contextlib.contextmanager
def metaserver_stub(what: str) -> Iterator[pb_grpc.MetaServerStub]:
    """The metaserver's stub, its failures turned into OSErrors that say what to do."""
    where = metaserver()
    try:
        with Credentials().channel(where) as channel:
            yield pb_grpc.MetaServerStub(channel)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.UNAVAILABLE:
            raise errnos.error(errno.EHOSTDOWN, f"no metaserver answers at {where} "
                                                f"({e.details()}): is it running? `pfs up` "
                                                "starts a cluster; PFS_METASERVER says where it "
                                                "is") from None
        raise errnos.from_rpc(e, f"{what} (metaserver {where})") from None
    except ValueError as e:  # a bad PFS_SECRET
        raise errnos.error(errno.EINVAL, str(e)) from None


def stat(path: str) -> pb.FileMeta:
    """The metadata at `path`, outside any session."""
    return call("Stat", pb.StatRequest(path=path), f"stat {shown(path)}").meta


def existing(client: Client, arg: str) -> tuple[str, Metadata]:
    """A PFS path from the command line that must be there (a trailing `/`: as a directory),
    canonical, and its metadata."""
    path, must_be_dir = pfs_path(arg)
    meta = client.stat(path)
    if must_be_dir and not meta.is_dir:
        raise errnos.error(errno.ENOTDIR, f"{shown(path)} is not a directory")
    return path, meta


def lookup(client: Client, path: str) -> Metadata | None:
    """The metadata at `path`, or None when nothing is there."""
    try:
        return client.stat(path)
    except FileNotFoundError:
        return None
