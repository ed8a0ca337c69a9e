"""An open's grant that waits, briefly, while tokens other clients keep unused after closing the
file (pfs/client/lockcache.py) are revoked: their holders answer that at once. A grant numbered
for the opener is always returned (never dropped on a timeout); a request not granted within
the patience is withdrawn, and the open goes without one (the client asks when it needs it).
"""
from __future__ import annotations

import asyncio

from .tokens import Grant, TokenManager

#: Seconds an open waits for kept tokens to be given up: a holder that answers later is busy.
PATIENCE_SECONDS = 1.0


async def grant_within(tokens: TokenManager, client_id: int, file_id: int, start: int,
                       end: int, mode: int, seconds: float = PATIENCE_SECONDS) -> Grant | None:
    """[start, end) in `mode` for the client if granted within `seconds`, else None."""
    answer = asyncio.get_running_loop().create_future()

    def done(grant, error) -> None:
        if not answer.done():
            answer.set_exception(error) if error else answer.set_result(grant)
    pending = tokens.request(client_id, file_id, start, end, mode, done)
    try:
        await asyncio.wait({answer}, timeout=seconds)  # (the answer is not cancelled)
    finally:
        tokens.cancel(pending)  # (nothing, once granted)
    return answer.result() if answer.done() and answer.exception() is None else None
