"""Open files and fds: an fd names one OpenFile of this client until its close succeeds; a file is
open here at most once (by_id), and a close never succeeds while a byte written through the fd is
not stored (a failed close keeps the fd for close and fsync only, its bytes and tokens kept).
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pfs._proto import metaserver_pb2 as pb
from pfs.metadata import Recipe
from pfs.protocol.capability import Held
from pfs.protocol.errnos import error
from pfs.protocol.paths import brief, canonical
from pfs.protocol.ranges import RangeMap
from pfs.protocol.receipts import Kept as Receipts
from pfs.protocol.tokenmodes import READ, WRITE

from .args import PFS_READ, open_mode
from .lockcache import Kept
from .namespace import metadata_of
from .state import ClientState

if TYPE_CHECKING:
    from .tokens import Tokens


@dataclass(eq=False)
class OpenFile:
    fd: int
    file_id: int
    name: str
    mode: int
    recipe: Recipe
    size: int  # the newest size this client knows of, its own cached writes included
    size_epoch: int  # the truncates of the file that `size` takes into account
    permissions: int | None  # its mode bits as this client last saw them (Client.permissions)
    written_end: int = 0  # the end of the bytes this client wrote (what it reports as stored)
    tokens: RangeMap = field(default_factory=RangeMap)
    held: Held = field(default_factory=Held)  # the tokens' capabilities, for the fileservers
    stale: set[int] = field(default_factory=set)  # fileservers with a stale copy: not read
    missed: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # what each lacks
    receipts: Receipts = field(default_factory=Receipts)  # of its writes, shown at close
    revoking: list[tuple[int, int]] = field(default_factory=list)  # revocations not yet done
    wrote: bool = False
    closing: bool = False  # a close failed half-way: only close may be retried
    read_next: int = 0  # where a sequential read would start (read-ahead)
    active: list[tuple[int, int]] = field(default_factory=list)  # operations running on it
    refused: str | None = None  # why a restarted metaserver did not give it back

    @property
    def block_size(self) -> int:
        return self.recipe.block_size

    @property
    def stripe_bytes(self) -> int:
        return self.recipe.block_size * self.recipe.stripe_blocks * self.recipe.stripe_width


def learn_stale(f: OpenFile, answer) -> None:
    """Takes the file's stale copies, and what each lacks, from a grant, a reclaim or a
    reported miss. Each is replaced whole, what a copy lacks first, so that a reader on
    another thread never sees a copy stale without what it lacks."""
    missed: dict[int, list[tuple[int, int]]] = {}
    for m in answer.missed:
        missed.setdefault(m.server, []).append((m.start, m.end))
    f.missed = missed
    f.stale = set(answer.stale)


def refused(f: OpenFile) -> OSError:
    return error(errno.ESTALE, f"fd {f.fd}: {f.refused}")


class OpenFiles:
    def __init__(self, state: ClientState, tokens: "Tokens") -> None:
        self._s = state
        self._tokens = tokens

    def open(self, path: str, mode: int) -> int:
        """Opens a file, with the token its mode implies: the tokens kept since this client
        closed it (lockcache.py), else granted with the open if nothing is in the way."""
        open_mode(mode)
        path = canonical(path)
        session = self._s.live_session()
        reply, era = session.open(path, READ if mode == PFS_READ else WRITE,
                                  f"open {brief(path)}")
        meta = reply.meta
        with self._s.lock:
            f = OpenFile(next(self._s.next_fd), meta.file_id, path, mode,
                         metadata_of(meta).recipe, meta.size, meta.size_epoch,
                         meta.mode if meta.HasField("mode") else None)
            self._s.fds[f.fd] = f
            self._s.by_id[f.file_id] = f
            self._reuse_kept(f, era, reply.held)
            if reply.HasField("grant"):  # the token the open implies, if nothing was in its way
                self._tokens.apply(session, f, reply.grant, era)
        return f.fd

    def _reuse_kept(self, f: OpenFile, era: int, held) -> None:
        """Takes the tokens kept since the file's last close here, as far as the metaserver
        still counts them (`held`: it may have taken some for another client's open, and an
        acknowledgement of a revocation may still be on its way to it), unless copies were
        added to the file meanwhile: a WRITE token on a replicated file needs the metaserver's
        durable note first, which a token request makes (the close releases those left here)."""
        kept = self._s.lockcache.take(f.file_id, era)
        if kept is None or f.recipe.replicas != 1:
            return
        for token in held:
            for start, end, mode in kept.tokens.overlapping(token.start, token.end):
                f.tokens.raise_to(start, end, min(mode, token.mode))
        f.held = kept.held

    def close(self, fd: int) -> None:
        """Writes back the file's dirty blocks, drops its cached blocks, and releases its tokens
        or keeps them unused in the lock cache. If some bytes written through it cannot be
        stored, close fails, saying which, and the fd stays open for close and fsync only, its
        bytes and tokens kept: close again to try again. Close never succeeds while a byte
        written through the fd is not stored."""
        s = self._s
        session = s.live_session()
        with s.lock:
            f = s.fds.get(fd) if type(fd) is int else None
            if f is not None and f.refused:  # the metaserver has it closed already
                s.forget(f)
                raise refused(f)
        self._tokens.renew_for_unstored(session, self.open_file(fd))
        with s.lock:
            f = self.file(fd)
            # From here on the fd takes no data operation. The fd, and its tokens, stay so that
            # close can be retried (Close is idempotent), and so that a reclaim meanwhile (the
            # metaserver restarted) claims the file with them: the restarted metaserver must
            # believe the size the Close reports, which only a WRITE token up to it vouches for
            # before the fileservers are back.
            f.closing = True
            s.cache.deny(f)
            s.changed.wait_for(lambda: not f.active)  # other threads' operations on it
            s.cache.close(f)
            with s.unlocked():
                s.dataplane.settle(f)
            request = pb.CloseRequest(
                file_id=f.file_id, size=f.written_end, wrote=f.wrote,
                keep_tokens=s.lockcache.capacity > 0 and f.recipe.replicas == 1,
                release=s.lockcache.releases(),
                receipts=f.receipts.showing(f.recipe, f.written_end))
        era = session.era
        try:
            reply = session.call("Close", request, f"close {brief(f.name)}")
        except OSError:
            with s.lock:
                s.lockcache.unsent(request.release)
            raise
        with s.lock:
            s.forget(f)
            # (Revocations meanwhile capped f.tokens. Kept from a metaserver that restarted
            # since, they would be void.)
            if reply.kept and session.era == era:
                s.lockcache.keep(Kept(f.file_id, f.name, f.tokens, f.held, era))

    def file(self, fd: Any) -> OpenFile:
        """The open file of fd; the caller holds the lock."""
        f = self._s.fds.get(fd) if type(fd) is int else None
        if f is None:
            raise error(errno.EBADF, f"bad file descriptor {fd!r}")
        if f.refused:
            raise refused(f)
        return f

    def open_file(self, fd: Any) -> OpenFile:
        self._s.live_session()
        with self._s.lock:
            return self.file(fd)

    def known_size(self, file_id: int) -> int:
        """The size this client knows of an open file (the metaserver's size queries; on the
        stream's thread, without blocking)."""
        f = self._s.by_id.get(file_id)
        return f.size if f is not None else 0
