"""Queries the metaserver sends down a stream (a client's size, a fileserver's object length)
and the answers that come back up it, matched by a number.

Invariant: an answer reaches only the query of its number, and only while that query waits; a
query not answered in time is None, never a later answer.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Callable


class StreamQueries:
    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}

    async def ask(self, send: Callable[[int], bool], timeout: float) -> int | None:
        """Sends a question numbered n (`send(n)` returns False if it cannot be sent) and waits
        for its answer; None when none comes in time."""
        number = next(self._numbers)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        try:
            if not send(number):
                return None
            return await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            del self._waiting[number]

    def answered(self, number: int, value: int) -> None:
        answer = self._waiting.get(number)
        if answer is not None and not answer.done():
            answer.set_result(value)
