"""Adaptive concurrency: fewer requests in flight while the server pushes back (429, 503)."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Final

import attrs

__all__ = ["Backoff", "Pushback"]


@attrs.define
class Backoff:
    """Exponential backoff with jitter: ``base`` seconds doubling up to ``cap``."""

    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), jittered down by up to 25%."""
        delay: float = min(self.cap, self.base * 2.0 ** (retry - 1))
        return delay * (1 - 0.25 * random.random())


_FLOOR: Final = 1.0


class Pushback:
    """An in-flight limit that halves when the server pushes back and grows back by one per
    window of successes (additive increase, multiplicative decrease, as TCP does).

    One cut per congestion event: answers to requests sent before the last cut do not cut again.
    The fast path (room available) does not await.
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self._sent = 0
        self._last_cut = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def acquire_nowait(self) -> int | None:
        """A ticket if there is room now (and nobody waiting), else None."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            self._sent += 1
            return self._sent
        return None

    async def acquire(self) -> int:
        """Wait for room; return a ticket to pass to ``pushed_back``."""
        ticket = self.acquire_nowait()
        if ticket is not None:
            return ticket
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future  # the room is handed over with the wake-up: see _wake
        except BaseException:
            if future.done() and not future.cancelled():
                self.release()  # woken and cancelled at once: pass the room on
            raise
        self._sent += 1
        return self._sent

    def release(self) -> None:
        self.in_flight -= 1
        if self._waiters:
            self._wake()

    def succeeded(self) -> None:
        if self.limit < self.ceiling:
            self.limit = min(self.ceiling, self.limit + 1.0 / self.limit)
            self._wake()

    def pushed_back(self, ticket: int) -> None:
        if ticket > self._last_cut:
            self.limit = max(_FLOOR, self.limit / 2)
            self._last_cut = self._sent

    def _wake(self) -> None:
        room = int(self.limit) - self.in_flight
        while room > 0 and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)
                room -= 1
