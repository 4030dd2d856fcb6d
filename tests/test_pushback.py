"""Adaptive concurrency (AIMD): the in-flight limit halves on pushback and grows back on success."""

from __future__ import annotations

import anyio
import pytest

from illumass import AsyncIllumass
from illumass._pushback import Pushback
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


async def test_one_cut_per_congestion_event_then_additive_growth() -> None:
    limiter = Pushback(ceiling=8)
    tickets = [await limiter.acquire() for _ in range(8)]
    for ticket in tickets:  # eight refusals of requests sent together: one event, one cut
        limiter.pushed_back(ticket)
        limiter.release()
    assert limiter.limit == 4
    later = await limiter.acquire()
    limiter.pushed_back(later)  # a request sent after the cut: a new event
    limiter.release()
    assert limiter.limit == 2
    for _ in range(4):
        limiter.succeeded()
    assert 3 <= limiter.limit < 4  # +1/limit per success: one more slot per window of successes


async def test_a_full_limit_holds_callers_until_room_is_made() -> None:
    limiter = Pushback(ceiling=2)
    first = await limiter.acquire()
    await limiter.acquire()
    limiter.pushed_back(first)  # limit 1, two in flight
    entered: list[int] = []

    async def third() -> None:
        entered.append(await limiter.acquire())

    async with anyio.create_task_group() as tg:
        tg.start_soon(third)
        await anyio.sleep(0.01)
        limiter.release()
        await anyio.sleep(0.01)
        assert entered == []  # one still in flight: the limit (1) is reached
        limiter.release()
    assert len(entered) == 1 and limiter.in_flight == 1


async def test_overload_slows_the_batch_instead_of_failing_or_pausing_it(server: FakeIllumass) -> None:
    """3% of creates answered 503: every key is made, and the in-flight limit was cut below the
    batch's concurrency rather than the batch pausing or failing."""
    server.latency = 0.01
    server.faults.add("status", "createApiKey", probability=0.03, status=503)
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, max_connections=32, **FAST
    ) as client:
        await client.auth.login()
        results = await client.auth.create_api_keys([f"k{i}" for i in range(600)], concurrency=32)
        limit = client._pipeline.pushback.limit
    assert all(r.ok for r in results) and server.faults.fired("status") > 5
    assert limit < 32  # cut, and not yet grown back to the ceiling
    assert len(server.api_keys) == 600
