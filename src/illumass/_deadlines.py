"""Attempt timeouts served by one event-loop timer.

aiohttp's own timeout schedules and cancels a timer for every request, which cost about 6% of the
client's CPU per ``create_api_key``. Every attempt of a transport has the same timeout, so
attempts expire in the order they start: one timer, set for the oldest attempt's deadline, serves
them all.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

__all__ = ["DEADLINE", "Deadlines"]

_RESOLUTION = time.get_clock_info("monotonic").resolution


class _Message(str):
    __slots__ = ()


DEADLINE = _Message("illumass: the attempt's deadline passed")
"""The message of the cancels that deadlines send (told apart by identity, not by value)."""


class Deadlines:
    """Cancels the task of an attempt that outlives ``seconds``; the attempt reports a timeout.

    ``start()`` before an attempt, ``finish()`` after it (always), and ``expired()`` when the
    attempt raised CancelledError: True if this timeout (and nothing else) cancelled it, as
    ``asyncio.timeout`` decides. ``finish()`` and ``expired()`` take the task running the
    attempt at that time: an attempt may move to another task (see ``moved()``). On Python 3.10,
    which cannot tell cancels apart, a caller's cancel that meets the deadline is reported as the
    timeout.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._pending: dict[asyncio.Task[Any], tuple[float, int]] = {}  # in start order: oldest first
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any]:
        """Start timing the attempt of the task running on ``loop`` (one attempt at a time)."""
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("an attempt must run in a task")
        deadline = loop.time() + self.seconds
        self._pending[task] = (deadline, _cancelling(task))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire, loop)
        return task

    def finish(self, task: asyncio.Task[Any] | None) -> None:
        """Stop timing ``task``'s attempt."""
        if task is None:
            return
        self._pending.pop(task, None)
        if task in self._expired:  # cancelled, but it ended otherwise: take the cancel back
            self._expired.discard(task)
            _uncancel(task)
        if self._closed:
            self.close()  # the last attempt that crossed close() is done

    def expired(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether the CancelledError ``task`` raised came from its deadline alone; if so, the
        cancel is taken back. Call it once, from the attempt's CancelledError handler."""
        if task is None or task not in self._expired:
            return False
        self._expired.discard(task)
        return _uncancel(task) <= self._pending[task][1]

    def moved(self, old: asyncio.Task[Any], new: asyncio.Task[Any], *, resend: bool) -> None:
        """The attempt ``old`` was running goes on in ``new`` (see ``_detach``); its deadline follows.

        If the deadline already cancelled ``old``, that cancel is taken back from ``old`` and,
        when ``resend``, sent to ``new`` (otherwise the attempt already received it).
        """
        if old not in self._pending:
            return
        self._pending = {  # same order: the attempts' deadlines stay in start order
            (new if task is old else task): ((entry[0], _cancelling(new)) if task is old else entry)
            for task, entry in self._pending.items()
        }
        if old in self._expired:
            self._expired.discard(old)
            _uncancel(old)
            self._expired.add(new)
            if resend:
                new.cancel(DEADLINE)

    def close(self) -> None:
        """Disarm the timer, now or once the attempts still pending (which keep their deadlines)
        are done."""
        self._closed = True
        if self._timer is not None and not self._pending:
            self._timer.cancel()
            self._timer = None

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = loop.time() + _RESOLUTION  # asyncio may run a timer up to the clock's resolution early
        for task, (deadline, _) in self._pending.items():
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire, loop)
                return
            if task not in self._expired:
                self._expired.add(task)
                task.cancel(DEADLINE)


if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return task.uncancel()

else:  # Python 3.10: no Task.uncancel

    def _cancelling(task: asyncio.Task[Any]) -> int:
        return 0

    def _uncancel(task: asyncio.Task[Any]) -> int:
        return 0
