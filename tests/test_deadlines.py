"""Attempt timeouts served by one shared timer (``Deadlines``): many attempts in flight, re-arming,
a caller's cancel versus a timeout, the timer's own bookkeeping, and keys made by a timed-out create.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest

from illumass import APITimeoutError, AsyncIllumass
from illumass._deadlines import Deadlines
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


def _client(
    server: FakeIllumass,
    timeout: float,
    *,
    max_retries: int = 0,
    http_session: aiohttp.ClientSession | None = None,
) -> AsyncIllumass:
    return AsyncIllumass(
        server.url,
        email=server.email,
        password=server.password,
        timeout=timeout,
        max_retries=max_retries,
        http_session=http_session,
        **FAST,
    )


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (the state is the server's)."""
    give_up = time.monotonic() + within
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        await asyncio.sleep(0.002)


async def _attempt(deadlines: Deadlines, seconds: float) -> str:
    """What ``Transport.send`` does around an attempt that takes ``seconds``."""
    task = deadlines.start(asyncio.get_running_loop())
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        return "timed out"
    finally:
        deadlines.finish(task)
    return "answered"


# -- through the client, on real sockets -----------------------------------------------------------


async def test_attempts_in_flight_together_each_time_out_at_their_own_deadline(
    server: FakeIllumass,
) -> None:
    """Staggered calls, every other one delayed: exactly those time out, each 0.3 s after it began."""
    slow = [True, False, True, False, True, False]
    ended: dict[int, tuple[float, BaseException | None]] = {}
    async with _client(server, 0.3) as client:
        await client.auth.search_api_keys()  # logged in, connection open
        before = server.stats.requests["searchApiKeys"]

        async def call(i: int) -> None:
            began = time.monotonic()
            try:
                await client.auth.search_api_keys()
            except APITimeoutError as exc:
                ended[i] = (time.monotonic() - began, exc)
            else:
                ended[i] = (time.monotonic() - began, None)

        async def launch(i: int, delayed: bool) -> asyncio.Future[None]:
            fault = server.faults.add("delay", "searchApiKeys", delay=1.0) if delayed else None
            task = asyncio.ensure_future(call(i))
            # Only this call may meet the fault: wait until it did (or, if fast, until it ended).
            await _until(lambda: fault.fired == 1 if fault is not None else i in ended)
            await asyncio.sleep(0.05)  # deadlines ~0.1 s apart: the timer must re-arm between them
            return task

        tasks = [await launch(i, delayed) for i, delayed in enumerate(slow)]
        await asyncio.gather(*tasks)
    assert server.stats.requests["searchApiKeys"] == before + len(slow)  # max_retries=0
    assert {i for i, (_, error) in ended.items() if error is not None} == {
        i for i, delayed in enumerate(slow) if delayed
    }
    for i, delayed in enumerate(slow):
        elapsed, error = ended[i]
        if delayed:
            assert 0.3 <= elapsed < 0.9, (i, elapsed)  # not at an older attempt's deadline
            assert str(error) == "POST /api-keys/_search: no response within 0.3s"
        else:
            assert elapsed < 0.3, (i, elapsed)


async def test_the_timer_rearms_for_an_attempt_that_began_after_the_first(server: FakeIllumass) -> None:
    """Fast attempts leave the timer set for their deadline; B, begun 0.2 s later, times out 0.4 s after."""
    async with _client(server, 0.4) as client:
        await client.auth.login()
        await client.auth.search_api_keys()  # A: answered at once; the timer stays armed
        await asyncio.sleep(0.2)
        server.faults.add("delay", "searchApiKeys", delay=1.0)
        b = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"no response within 0\.4s"):
            await client.auth.search_api_keys()
        done = time.monotonic()
    assert 0.4 <= done - b < 0.9
    assert server.stats.requests["searchApiKeys"] == 2


async def test_a_callers_cancel_far_from_the_deadline_is_not_a_timeout(server: FakeIllumass) -> None:
    """wait_for's cancel and a plain task.cancel() mid-attempt stay cancels, not APITimeoutError."""
    async with _client(server, 5.0) as client:
        await client.auth.search_api_keys()
        server.faults.add("delay", "searchApiKeys", delay=1.0, times=2)
        began = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):  # not APITimeoutError, which is no TimeoutError
            await asyncio.wait_for(client.auth.search_api_keys(), 0.1)
        assert time.monotonic() - began < 0.5

        task = asyncio.ensure_future(client.auth.search_api_keys())
        await _until(lambda: server.faults.fired("delay") == 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

        began = time.monotonic()
        await client.auth.search_api_keys()  # nothing left over cancels the next attempt
        assert time.monotonic() - began < 0.5
    assert server.stats.requests["searchApiKeys"] == 4  # the cancelled calls were not retried


async def test_closing_the_client_disarms_the_timer(server: FakeIllumass) -> None:
    """After aclose() no 30 s timer is left on the loop for the last attempt's deadline."""
    client = _client(server, 30.0)
    await client.auth.search_api_keys()
    deadlines = client._pipeline.transport._deadlines
    timer = deadlines._timer
    assert timer is not None and not timer.cancelled()
    await client.aclose()
    assert deadlines._timer is None and timer.cancelled()


async def test_a_call_in_flight_when_the_client_closes_still_times_out(server: FakeIllumass) -> None:
    """A call on the caller's own session, in flight across aclose(), still ends at its timeout."""
    async with aiohttp.ClientSession() as session:
        client = _client(server, 0.3, http_session=session)
        await client.auth.search_api_keys()
        server.faults.add("delay", "searchApiKeys", delay=1.0)
        began = time.monotonic()
        call = asyncio.ensure_future(client.auth.search_api_keys())
        await _until(lambda: server.faults.fired("delay") == 1)
        await client.aclose()
        try:
            with pytest.raises(APITimeoutError):
                await call
        finally:
            await asyncio.gather(call, return_exceptions=True)
        assert time.monotonic() - began < 0.9


async def test_a_call_answered_across_aclose_leaves_no_timer(server: FakeIllumass) -> None:
    """The 30 s timer a call kept across aclose() is disarmed when that call is answered."""
    async with aiohttp.ClientSession() as session:
        client = _client(server, 30.0, http_session=session)
        await client.auth.search_api_keys()
        server.faults.add("delay", "searchApiKeys", delay=0.2)
        call = asyncio.ensure_future(client.auth.search_api_keys())
        await _until(lambda: server.faults.fired("delay") == 1)
        await client.aclose()
        deadlines = client._pipeline.transport._deadlines
        assert deadlines._timer is not None  # still timing the call in flight
        await call
        assert deadlines._timer is None


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_a_timed_out_create_leaves_no_key(max_retries: int) -> None:
    """The server stores the key, but its answer waits for an index refresh past the timeout: revoked."""
    async with FakeIllumass(seed=1, refresh_interval=30.0, api_key_cap=None) as server:
        try:
            async with _client(server, 0.3, max_retries=max_retries) as client:
                await client.auth.login()
                creating = asyncio.ensure_future(client.auth.create_api_key("too slow"))
                await _until(lambda: bool(server.api_keys))  # made; the answer waits ~30 s
                [key_id] = server.api_keys
                with pytest.raises(APITimeoutError, match=r"no response within 0\.3s"):
                    await creating
        finally:
            server.refresh()  # answer the requests still waiting for a refresh
        assert server.api_keys == {}
        deletes = [r.path for r in server.stats.recent if r.action == "deleteApiKey"]
        assert deletes and set(deletes) == {f"/v4/api-keys/{key_id}"}
        assert server.stats.requests["createApiKey"] >= 1


# -- Deadlines itself, in a running loop -----------------------------------------------------------


async def test_an_attempt_that_outlives_its_deadline_times_out() -> None:
    """The deadline's cancel is reported as expired, and taken back (the task is not left cancelling)."""
    deadlines = Deadlines(0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = asyncio.create_task(_attempt(deadlines, 5.0))
    assert await task == "timed out"
    assert 0.05 <= loop.time() - began < 1.0
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 0
    assert not deadlines._pending and not deadlines._expired


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 cannot tell a caller's cancel from ours")
async def test_a_callers_cancel_at_the_deadline_propagates() -> None:
    """The deadline fires and the caller cancels before the task runs again: CancelledError wins."""
    deadlines = Deadlines(0.0)
    reported: list[bool] = []
    started = asyncio.Event()

    async def attempt() -> None:
        task = deadlines.start(asyncio.get_running_loop())
        started.set()
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            reported.append(deadlines.expired(task))
            raise
        finally:
            deadlines.finish(task)

    task = asyncio.create_task(attempt())
    await started.wait()
    deadlines._expire(asyncio.get_running_loop())  # its deadline (0 s) has passed: the timer cancels
    assert task in deadlines._expired
    task.cancel()  # and so does the caller, in the same turn
    with pytest.raises(asyncio.CancelledError):
        await task
    assert reported == [False] and task.cancelled()
    assert not deadlines._pending and not deadlines._expired


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps no count of cancels")
async def test_a_deadline_cancel_that_the_attempt_swallowed_is_taken_back() -> None:
    """An attempt that ends otherwise after its deadline fired leaves its task not cancelling."""
    deadlines = Deadlines(0.0)

    async def attempt() -> int:
        task = deadlines.start(asyncio.get_running_loop())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(5.0)
        finally:
            deadlines.finish(task)
        if sys.version_info >= (3, 11):  # as the skip says; mypy checks for 3.10
            return task.cancelling()
        return -1

    assert await asyncio.create_task(attempt()) == 0


async def test_a_finished_attempt_is_forgotten() -> None:
    """finish() drops the task: its deadline passes without cancelling it, and the timer disarms."""
    deadlines = Deadlines(0.05)

    async def work() -> str:
        task = deadlines.start(asyncio.get_running_loop())
        deadlines.finish(task)
        await asyncio.sleep(0.2)  # well past the deadline
        assert not deadlines.expired(task)
        return "done"

    assert await asyncio.create_task(work()) == "done"
    assert deadlines._timer is None  # it fired, found nothing pending, and was not re-armed
    assert await asyncio.create_task(_attempt(deadlines, 5.0)) == "timed out"  # start() re-arms it


async def test_close_leaves_no_timer_armed() -> None:
    deadlines = Deadlines(30.0)
    assert await asyncio.create_task(_attempt(deadlines, 0.0)) == "answered"
    timer = deadlines._timer
    assert timer is not None  # still set for the finished attempt's deadline
    deadlines.close()
    assert deadlines._timer is None and timer.cancelled()
    deadlines.close()  # twice is harmless


async def test_start_outside_a_task_is_refused() -> None:
    deadlines = Deadlines(1.0)
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    def callback() -> None:  # a loop callback runs in no task
        try:
            deadlines.start(asyncio.get_running_loop())
        except RuntimeError as exc:
            outcome.set_result(exc)
        else:
            outcome.set_result(None)

    loop.call_soon(callback)
    error = await outcome
    assert isinstance(error, RuntimeError) and str(error) == "an attempt must run in a task"
    assert deadlines._timer is None and not deadlines._pending


async def test_a_cancelled_callers_create_times_out_in_its_own_task() -> None:
    """The caller leaves a create in flight; the create's deadline then ends that create, in the
    task that carries it on, and never cancels the caller, which went on with other work."""
    async with FakeIllumass(seed=1, refresh_interval=30.0, api_key_cap=None) as server:
        try:
            async with _client(server, 0.5) as client:
                await client.auth.login()
                creating = asyncio.ensure_future(client.auth.create_api_key("left"))
                await _until(lambda: bool(server.api_keys))  # made; the answer waits ~30 s

                async def caller_goes_on() -> str:
                    creating.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await creating
                    await asyncio.sleep(0.7)  # past the create's deadline (0.5 s)
                    return "not cancelled"

                assert await asyncio.ensure_future(caller_goes_on()) == "not cancelled"
                # The create timed out and its key is being revoked (answered at the refresh).
                assert server.stats.requests["deleteApiKey"] == 1
                server.refresh()
        finally:
            server.refresh()
        assert server.api_keys == {}
