"""A coroutine awaited through ``keep_going``: it runs in the caller's task, and a caller's cancel
hands it, where it stands, to a task that carries it on (every state a cancel can meet it in)."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from illumass._deadlines import DEADLINE, Deadlines
from illumass._detach import Rest, keep_going

pytestmark = pytest.mark.anyio

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("_VAR", default="unset")


class _Work:
    """A coroutine that waits for ``gate`` and records which task ran each of its steps."""

    def __init__(self) -> None:
        self.gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.seen: list[str] = []
        self.adopted: list[asyncio.Task[Any]] = []
        self.owners: list[asyncio.Task[Any] | None] = []
        self.coros: list[Any] = []

    async def run(self, *, bare_yield: bool = False) -> str:
        self.tasks.append(asyncio.current_task())
        if bare_yield:
            await asyncio.sleep(0)
        value = await self.gate
        self.tasks.append(asyncio.current_task())
        self.seen.append(_VAR.get())
        _VAR.set("changed by the work")
        return value

    def adopt(self, rest: Rest[str]) -> None:
        self.owners.append(rest.owner)
        self.adopted.append(rest.start())

    def call(self, **kwargs: Any) -> asyncio.Task[str]:
        async def caller() -> str:
            coro = self.run(**kwargs)
            self.coros.append(coro)
            return await keep_going(coro, self.adopt)

        return asyncio.ensure_future(caller())


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_without_a_cancel_it_runs_in_the_callers_task_and_returns() -> None:
    work = _Work()
    caller = work.call()
    await _turns()
    work.gate.set_result("done")
    assert await caller == "done"
    assert work.tasks == [caller, caller] and not work.adopted


async def test_its_exceptions_reach_the_caller() -> None:
    work = _Work()
    caller = work.call()
    await _turns()
    work.gate.set_exception(LookupError("nope"))
    with pytest.raises(LookupError, match="nope"):
        await caller
    assert not work.adopted


async def test_a_cancel_while_it_waits_hands_it_over_and_the_caller_raises_at_once() -> None:
    work = _Work()
    _VAR.set("the caller's")
    caller = work.call()
    await _turns()
    caller.cancel("bye")
    with pytest.raises(asyncio.CancelledError) as raised:
        await caller
    if sys.version_info >= (3, 11):  # 3.10 drops a cancel's message on the way to the awaiter
        assert raised.value.args == ("bye",)
    assert not work.gate.done()  # the caller did not wait for the work
    [adopted] = work.adopted
    assert work.owners == [caller]
    work.gate.set_result("finished anyway")
    assert await adopted == "finished anyway"
    assert work.tasks == [caller, adopted]
    assert work.seen == ["the caller's"]  # it goes on in (a copy of) the caller's context
    assert _VAR.get() == "the caller's"
    if sys.version_info >= (3, 11):
        assert caller.cancelling() == 1  # the caller's one cancel, nothing more


async def test_a_cancel_as_its_future_completes_hands_over_the_result() -> None:
    """The future is done and the caller's wake-up queued when the cancel comes."""
    work = _Work()
    caller = work.call()
    await _turns()
    work.gate.set_result("arrived")
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    [adopted] = work.adopted
    assert await adopted == "arrived"


async def test_a_cancel_at_a_bare_yield_hands_it_over() -> None:
    work = _Work()
    caller = work.call(bare_yield=True)
    await asyncio.sleep(0)  # the caller ran to its bare yield and is ready to run again
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    [adopted] = work.adopted
    work.gate.set_result("later")
    assert await adopted == "later"


async def test_a_deadline_cancel_reaches_the_work_itself() -> None:
    work = _Work()
    caller = work.call()
    await _turns()
    caller.cancel(DEADLINE)
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work.gate.cancelled() and not work.adopted


async def test_asyncio_timeout_gives_the_caller_timeouterror_at_once() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is new in 3.11")
    work = _Work()
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await keep_going(work.run(), work.adopt)
    assert loop.time() - began < 1.0 and not work.gate.done()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    work.gate.set_result("done")
    assert await work.adopted[0] == "done"


async def test_an_anyio_cancel_scope_leaves_at_once() -> None:
    work = _Work()
    with anyio.move_on_after(0.05) as scope:
        await keep_going(work.run(), work.adopt)
    assert scope.cancelled_caught and not work.gate.done()
    work.gate.set_result("done")
    assert await work.adopted[0] == "done"


async def test_a_cancel_sent_to_the_adopting_task_before_it_ran_reaches_the_work() -> None:
    """The adopting task's coroutine is the rest itself: a throw before its first step is not lost."""
    work = _Work()
    caller = work.call()
    await _turns()
    caller.cancel()
    [adopted] = work.adopted
    adopted.cancel(DEADLINE)
    with pytest.raises(asyncio.CancelledError):
        await adopted
    # The work itself received it, at its await, and ended there: not left suspended.
    assert inspect.getcoroutinestate(work.coros[0]) == inspect.CORO_CLOSED
    assert len(work.tasks) == 1 and not work.gate.done()
    with pytest.raises(asyncio.CancelledError):
        await caller


# -- Deadlines follow an attempt that moves ----------------------------------------------------------


async def _hold(deadlines: Deadlines, gate: asyncio.Future[None], *, start: bool = True) -> str:
    """An attempt, as Transport.send runs one, that asks the current task at its end."""
    loop = asyncio.get_running_loop()
    if start:
        deadlines.start(loop)
    try:
        await gate
    except asyncio.CancelledError:
        if not deadlines.expired(asyncio.current_task(loop)):
            raise
        return "timed out"
    finally:
        deadlines.finish(asyncio.current_task(loop))
    return "answered"


def _adopter(deadlines: Deadlines) -> tuple[Callable[[Rest[str]], None], list[asyncio.Task[str]]]:
    """An ``adopt`` that moves the attempt's deadline, as KeyMaker's does, and the tasks it started."""
    adopted: list[asyncio.Task[str]] = []

    def adopt(rest: Rest[str]) -> None:
        task = rest.start()
        adopted.append(task)
        assert rest.owner is not None
        deadlines.moved(rest.owner, task, resend=not rest.waited)

    return adopt, adopted


async def test_a_moved_attempts_deadline_cancels_its_new_task_not_the_caller() -> None:
    deadlines = Deadlines(0.1)
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    adopt, adopted = _adopter(deadlines)

    async def caller() -> str:
        with pytest.raises(asyncio.CancelledError):
            await keep_going(_hold(deadlines, gate), adopt)
        current = asyncio.current_task()
        assert current is not None
        if sys.version_info >= (3, 11):
            current.uncancel()
        await asyncio.sleep(0.3)  # past the attempt's deadline: it must not cancel this task
        return "the caller went on"

    task = asyncio.ensure_future(caller())
    await _turns()
    task.cancel()
    assert await task == "the caller went on"
    assert await adopted[0] == "timed out"
    assert not deadlines._pending and not deadlines._expired


async def test_a_deadline_that_already_cancelled_the_caller_is_taken_back_and_resent() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("3.10 keeps no count of cancels")
    deadlines = Deadlines(0.0)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    old = asyncio.ensure_future(_hold(deadlines, gate))
    new = asyncio.ensure_future(_hold(deadlines, loop.create_future(), start=False))
    await _turns()
    deadlines._expire(loop)  # the deadline cancels the attempt's task, and before that task
    assert old in deadlines._expired and old.cancelling() == 1  # runs again, the attempt moves
    deadlines.moved(old, new, resend=True)
    assert old.cancelling() == 0 and new in deadlines._expired
    assert await new == "timed out"
    assert not deadlines._pending and not deadlines._expired
    old.cancel()
    with pytest.raises(asyncio.CancelledError):
        await old


async def test_a_deadline_then_an_anyio_scope_cancel_in_one_turn_leaves_the_scope() -> None:
    """The deadline cancels the attempt's future, then the caller's scope cancels the caller: the
    caller gets its own CancelledError (anyio knows it by its message), the attempt the deadline's."""
    deadlines = Deadlines(1000.0)
    loop = asyncio.get_running_loop()
    gate: asyncio.Future[None] = loop.create_future()
    adopt, adopted = _adopter(deadlines)

    scopes: list[anyio.CancelScope] = []

    async def caller() -> bool:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await keep_going(_hold(deadlines, gate), adopt)
        return scope.cancelled_caught

    task = asyncio.ensure_future(caller())
    await _turns()

    def both() -> None:
        deadlines._expired.add(task)  # what Deadlines._expire does for an overdue attempt
        task.cancel(DEADLINE)
        scopes[0].cancel()

    loop.call_soon(both)
    assert await task is True
    assert await adopted[0] == "timed out"
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0


def test_a_cancel_while_the_loop_is_stopped_reaches_the_work() -> None:
    """asyncio.run() cancels every task once its main coroutine is done, with the loop stopped: a
    task started then could not run. The cancel goes to the work, as without keep_going."""
    loop = asyncio.new_event_loop()
    try:
        work: list[_Work] = []

        async def begin() -> asyncio.Task[str]:
            work.append(_Work())
            caller = work[0].call()
            await _turns()
            return caller

        caller = loop.run_until_complete(begin())
        caller.cancel()  # the loop is not running
        [outcome] = loop.run_until_complete(asyncio.gather(caller, return_exceptions=True))
        assert isinstance(outcome, asyncio.CancelledError)
        assert not work[0].adopted
        assert inspect.getcoroutinestate(work[0].coros[0]) == inspect.CORO_CLOSED
    finally:
        loop.close()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
async def test_the_adopting_task_does_not_start_eagerly() -> None:
    """With an eager task factory the rest would run before its deadline moved to its task."""
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    try:
        deadlines = Deadlines(1000.0)
        gate: asyncio.Future[None] = loop.create_future()
        adopt, adopted = _adopter(deadlines)

        async def caller() -> str:
            return await keep_going(_hold(deadlines, gate), adopt)

        task = asyncio.ensure_future(caller())
        await _turns()
        gate.set_result(None)
        task.cancel()  # the answer is in, and the caller not yet woken
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await adopted[0] == "answered"
        assert not deadlines._pending and not deadlines._expired
    finally:
        loop.set_task_factory(factory)


async def test_the_rest_resumes_after_the_callbacks_its_future_already_had() -> None:
    """The future completes in the turn of the hand-over: its earlier callbacks run first (asyncio's
    sock_connect relies on its own running before the awaiting coroutine goes on)."""
    work = _Work()
    steps_seen: list[int] = []
    work.gate.add_done_callback(lambda _: steps_seen.append(len(work.tasks)))
    caller = work.call()
    await _turns()
    caller.cancel()
    work.gate.set_result("done")
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert await work.adopted[0] == "done"
    assert steps_seen == [1]  # the callback ran before the work's step after its await
