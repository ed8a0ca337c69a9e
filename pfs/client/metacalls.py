"""A session's unary calls to the metaserver, and which of them are made again after a restart.

Invariant: a call is made twice only if the first surely never reached the metaserver, or doing
it twice comes out the same (REPEATABLE); any other call cut off by the metaserver's death fails
with EHOSTDOWN, its outcome unknown.
"""
from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING

import grpc

from pfs.protocol import errnos

if TYPE_CHECKING:
    from .session import MetaSession

#: Seconds a metaserver call other than Acquire may take.
CALL_TIMEOUT = 30.0
#: Calls that may be made again after a metaserver restart whether or not the metaserver of
#: before did them: what they change is in memory only (which the restart forgot: opens) or
#: comes out the same when done twice (a close, a size, a truncate to a size, a missed range).
REPEATABLE = frozenset({"Open", "Close", "Stat", "List", "Status", "ReportSize", "Truncate",
                        "ReportMissed"})


def call(session: "MetaSession", method: str, request, what: str):
    """`call_in_era`'s reply."""
    return call_in_era(session, method, request, what)[0]


def call_in_era(session: "MetaSession", method: str, request, what: str,
                may_grant: bool = False):
    """(reply, the session's era the reply comes from) of a unary metaserver call for this
    session; failures become OSErrors naming `what`.
    A call is never sent while the session recovers (it waits, up to PFS_RETRY_SECONDS, for
    the session to be back: a restarted metaserver must see the reclaim first). A metaserver
    that went away meanwhile (the stream broke: it restarts) is waited for likewise, and the
    call made again once the session is back, if it never reached the metaserver of before or
    is REPEATABLE. The caller must hold no lock that the session's reclaim needs meanwhile.

    A call that `may_grant` a token and ends without an answer gives the session up, as a
    token request does (`MetaSession.unanswered_grant`)."""
    repeatable = method in REPEATABLE
    deadline = time.monotonic() + session.retry_seconds
    while True:
        era = session.era
        if session.recovering and not session.back(deadline):
            # Not sent while the session recovers: a restarted metaserver must have its
            # reclaim first (a call from the data path, say, would find no file open there).
            raise session.unreachable() if not session.lost else errnos.error(
                errno.ENOTCONN, f"{what}: the session was lost: {session.lost}")
        try:
            return getattr(session.stub, method)(request, timeout=CALL_TIMEOUT,
                                                 metadata=session.metadata), era
        except grpc.RpcError as e:
            if not (e.code() == grpc.StatusCode.UNAVAILABLE
                    and (repeatable or _never_sent(e)) and session.back_by(era, deadline)):
                if may_grant:
                    session.unanswered_grant(e, what)
                raise errnos.from_rpc(e, what) from None
        except ValueError:  # the channel was closed: this session has ended here
            raise errnos.error(errno.ENOTCONN, f"{what}: the session has ended") from None


def _never_sent(e: grpc.RpcError) -> bool:
    """Whether a failed call surely never reached the server: gRPC failed it at once, having
    no connection to send it on (its words for that, which have held across its releases)."""
    return "failed to connect" in (e.details() or "")
