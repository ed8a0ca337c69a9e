"""A metaserver as one of several over etcd (`--store etcd://...`): it listens at once, stands
by (refusing every call with the active's address) until it wins the election (election.py),
then loads the store and serves as a restarted metaserver does, recovery window included. Once
its term is over (it lost its etcd lease, or was stopped past it) it refuses every call and
stops: it was deposed, and comes back as a standby if started again.
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from pfs.protocol.transport import ACTIVE_HEADER

from .election import Election

log = logging.getLogger("pfs.metaserver")

#: How often the active looks whether its term is over.
TERM_CHECK_SECONDS = 0.05


class ActiveOnly(grpc.aio.ServerInterceptor):
    """Refuses every call unless this metaserver is the active one, naming the active one."""

    def __init__(self) -> None:
        self.election: Election | None = None  # (set once it listens: its address is known)
        self.serving = False  # the metaserver is loaded and may answer

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        election = self.election
        if handler is None or (self.serving and election.active()):
            return handler

        async def refuse(request, context):
            # (A thread's wait: cut off from etcd, the loop still answers everything else.)
            active = await asyncio.to_thread(election.active_address) if election else ""
            if active and active != election.address:
                context.set_trailing_metadata(((ACTIVE_HEADER, active),))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"this metaserver stands by; "
                                                                 f"the active one is {active}")
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no metaserver is active yet (a "
                                                             "takeover is under way); try again")
        kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                    if getattr(handler, k) is not None)
        if kind.endswith("stream"):
            async def refuse_stream(request, context):
                await refuse(request, context)
                yield  # (a generator, as the method's handler is)
            return handler._replace(**{kind: refuse_stream})
        return handler._replace(**{kind: refuse})


async def take_over(election: Election, stop: asyncio.Event) -> int:
    """Stands by until elected (its epoch) or stopped (0)."""
    campaign = asyncio.ensure_future(asyncio.to_thread(election.campaign))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([campaign, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not campaign.done():
        election.stop()
        await campaign
        return 0
    stopping.cancel()
    return campaign.result()


async def serve_term(election: Election, stop: asyncio.Event) -> bool:
    """Until stopped (True) or the term is over (False: deposed)."""
    while not stop.is_set():
        if not election.active():
            log.error("this metaserver's term as the active one is over (epoch %d): it stops "
                      "granting and exits; start it again to stand by", election.epoch)
            return False
        try:
            await asyncio.wait_for(stop.wait(), TERM_CHECK_SECONDS)
        except asyncio.TimeoutError:
            pass
    return True
