"""The namespace as a client sees it: the metaserver's calls on paths (every path is checked by
`canonical` before it is sent), and the helpers built on them that the Pythonic layer, fsspec and
the command line share: directory paging (`entries`), tree walks (`walk`) and `makedirs`.

A directory is listed a page at a time, as the metaserver sends it (a directory may hold millions
of entries); nothing here keeps a listing: every call asks the metaserver, so it sees the
namespace of the moment, whatever other clients do.
"""
from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Callable, Iterator

from pfs._proto import metaserver_pb2 as pb
from pfs.metadata import Metadata, Recipe
from pfs.protocol.paths import base, brief, canonical, parent

from .args import stripe_width
from .state import ClientState

if TYPE_CHECKING:
    from .front import Client


def metadata_of(meta: pb.FileMeta) -> Metadata:
    r = meta.recipe
    return Metadata(filename=meta.path, file_size=meta.size, ctime=meta.ctime, mtime=meta.mtime,
                    recipe=Recipe(r.stripe_width, r.block_size, r.stripe_blocks, list(r.servers),
                                  r.replicas or 1),
                    is_dir=meta.is_dir,
                    **{k: getattr(meta, k) if meta.HasField(k) else None
                       for k in ("mode", "uid", "gid", "atime")},
                    symlink_target=meta.symlink_target if meta.is_symlink else None,
                    file_id=meta.file_id, special=meta.special_type or None,
                    rdev=meta.rdev if meta.special_type else None,
                    nlink=meta.nlink if meta.HasField("nlink") else 2 if meta.is_dir else 1)


def new_attributes(mode: int | None, uid: int | None, gid: int | None) -> pb.NewAttributes:
    return pb.NewAttributes(mode=mode, uid=uid, gid=gid)


def entries(list_page: Callable[[pb.ListRequest], pb.ListReply],
            path: str) -> Iterator[pb.FileMeta]:
    """The entries of the directory `path` (canonical), by name, a page at a time:
    `list_page(request)` makes one List call (inside a session or outside any)."""
    after = ""
    while True:
        page = list_page(pb.ListRequest(path=path, after=after))
        yield from page.entries
        if not page.more:
            return
        after = base(page.entries[-1].path)


def walk(client: "Client", top: str) -> Iterator[tuple[str, list[Metadata]]]:
    """(directory, its entries) of the tree at `top` (canonical), top first, breadth first."""
    pending = collections.deque([top])
    while pending:
        here = pending.popleft()
        listed = client.listdir(here)
        yield here, listed
        pending.extend(m.filename for m in listed if m.is_dir)


def makedirs(client: "Client", path: str) -> None:
    """Creates the directory `path` (canonical) and its missing ancestors. A directory that
    exists already, or that another client creates meanwhile, is fine; so is a *file* at `path`
    or above: whoever then creates something under it gets NotADirectoryError."""
    missing = []
    while path:
        try:
            client.mkdir(path)
        except FileExistsError:
            break
        except FileNotFoundError:
            missing.append(path)
            path = parent(path)
            continue
        break
    for path in reversed(missing):
        try:
            client.mkdir(path)
        except FileExistsError:
            pass


def create_with_parents(client: "Client", path: str, width: int | None,
                        replicas: int = 0) -> None:
    """Creates the file `path` (canonical), and its missing parent directories."""
    try:
        client.create(path, width, replicas)
    except FileNotFoundError:
        if not parent(path):
            raise
        makedirs(client, parent(path))
        client.create(path, width, replicas)


class Namespace:
    """The metaserver's namespace calls for one Client."""

    def __init__(self, state: ClientState) -> None:
        self._s = state

    def _call(self, method: str, request, what: str):
        return self._s.live_session().call(method, request, what)

    def create(self, path: str, width: int | None, replicas: int = 0,
               attributes: pb.NewAttributes | None = None) -> None:
        path = canonical(path)
        stripe_width(width, replicas)
        self._call("Create", pb.CreateRequest(path=path, stripe_width=width or 0,
                                              replicas=replicas, attributes=attributes),
                   f"create {brief(path)}")

    def set_layout(self, path: str, stripe_width: int, stripe_blocks: int,
                   replicas: int) -> tuple[int, int]:
        path = canonical(path)
        reply = self._call("SetLayout", pb.SetLayoutRequest(path=path, layout=pb.Layout(
            stripe_width=stripe_width, stripe_blocks=stripe_blocks, replicas=replicas)),
            f"setstripe {brief(path)}")
        return reply.copies_to_make, reply.copies_dropped

    def mkdir(self, path: str, attributes: pb.NewAttributes | None = None) -> None:
        path = canonical(path)
        self._call("Mkdir", pb.MkdirRequest(path=path, attributes=attributes),
                   f"mkdir {brief(path)}")

    def symlink(self, target: str, path: str, attributes: pb.NewAttributes) -> None:
        path = canonical(path)
        self._call("Symlink", pb.SymlinkRequest(path=path, target=target,
                                                attributes=attributes),
                   f"symlink {brief(path)}")

    def mknod(self, path: str, special: int, rdev: int, attributes: pb.NewAttributes) -> None:
        path = canonical(path)
        self._call("Mknod", pb.MknodRequest(path=path, special_type=special, rdev=rdev,
                                            attributes=attributes), f"mknod {brief(path)}")

    def setattr(self, path: str, **changes) -> Metadata:
        path = canonical(path)
        return self._set(pb.SetAttrRequest(path=path, **changes), path)

    def fsetattr(self, file_id: int, name: str, **changes) -> Metadata:
        return self._set(pb.SetAttrRequest(file_id=file_id, **changes), name)

    def _set(self, request: pb.SetAttrRequest, name: str) -> Metadata:
        return self._learned(self._call("SetAttr", request,
                                        f"set the attributes of {brief(name)}").meta)

    def rmdir(self, path: str) -> None:
        path = canonical(path)
        self._call("Rmdir", pb.RmdirRequest(path=path), f"rmdir {brief(path)}")

    def rename(self, old: str, new: str, open_ok: bool = False) -> None:
        old, new = canonical(old), canonical(new)
        self._call("Rename", pb.RenameRequest(old_path=old, new_path=new, open_ok=open_ok),
                   f"rename {brief(old)} to {brief(new)}")
        with self._s.lock:
            self._s.lockcache.renamed(old, new)

    def delete(self, path: str, open_ok: bool = False) -> None:
        """Removes a file; first gives up the open files of it whose close failed here."""
        s = self._s
        path = canonical(path)
        session = s.live_session()
        with s.lock:
            stuck = [f for f in s.fds.values() if f.closing and f.name == path]
            for f in stuck:
                s.cache.discard(f)
                s.dataplane.discard(f)
        for f in stuck:
            session.call("Close", pb.CloseRequest(file_id=f.file_id), f"close {brief(f.name)}")
            with s.lock:
                s.forget(f)
        session.call("Delete", pb.DeleteRequest(path=path, open_ok=open_ok),
                     f"delete {brief(path)}")
        with s.lock:
            s.lockcache.deleted(path)

    def fstat(self, file_id: int, name: str) -> Metadata:
        return self._learned(self._call("Stat", pb.StatRequest(file_id=file_id),
                                              f"fstat {brief(name)}").meta)

    def stat(self, path: str) -> Metadata:
        path = canonical(path)
        return self._learned(self._call("Stat", pb.StatRequest(path=path),
                                              f"stat {brief(path)}").meta)

    def _learned(self, meta: pb.FileMeta) -> Metadata:
        """The metadata, with the size this client's own cached writes give the file (the
        metaserver does not ask us about those); a file open here learns its mode bits."""
        result = metadata_of(meta)
        with self._s.lock:
            f = self._s.by_id.get(meta.file_id)
            if f is not None:
                f.permissions = result.mode
                if f.size_epoch == meta.size_epoch:
                    result.file_size = max(result.file_size, f.size)
        return result

    def listdir(self, path: str = "") -> list[Metadata]:
        path = canonical(path)
        session = self._s.live_session()
        return [metadata_of(m) for m in entries(
            lambda request: session.call("List", request, f"list {brief(path)}"), path)]
