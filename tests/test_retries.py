"""Retries, backoff, Retry-After, timeouts, and exactly-once API-key creation."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from illumass import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncIllumass,
    BadRequestError,
    IllumassError,
    InvalidResponseError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)
from illumass._pushback import Backoff
from illumass._transport import _retry_after
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


async def test_retries_503_then_succeeds(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=503, times=2)
    await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 4


@pytest.mark.parametrize(
    ("status", "error_id", "error"),
    [
        (503, "api.process.overloaded", ServiceUnavailableError),
        (429, "api.process.too_many_requests", RateLimitError),
        (504, "core.gateway_timeout", ServerError),
    ],
)
async def test_gives_up_after_max_retries(
    client: AsyncIllumass, server: FakeIllumass, status: int, error_id: str, error: type[Exception]
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=status, error_id=error_id, times=10)
    with pytest.raises(error) as info:
        await client.auth.search_api_keys()
    assert isinstance(info.value, APIStatusError) and info.value.status == status
    assert server.stats.requests["searchApiKeys"] == 1 + 3  # max_retries=2


async def test_max_retries_zero(server: FakeIllumass) -> None:
    async with AsyncIllumass(server.url, email=server.email, password=server.password, max_retries=0) as c:
        server.faults.add("status", "login", status=503)
        with pytest.raises(ServiceUnavailableError):
            await c.auth.login()
    assert server.stats.requests["login"] == 1


async def test_no_retry_on_other_4xx(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=400, error_id="api.assert.invalid_type")
    with pytest.raises(BadRequestError):
        await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 2


async def test_honours_retry_after(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=429, retry_after="0.3")
    started = time.monotonic()
    await client.auth.search_api_keys()
    assert time.monotonic() - started >= 0.3  # the fast test backoff alone would wait ~1 ms


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=429, retry_after="3600")
    with pytest.raises(RateLimitError):
        await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 2


def test_retry_after_parsing() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("1.5") == 1.5
    assert _retry_after("-3") == 0.0
    assert _retry_after(None) is None and _retry_after("soon") is None and _retry_after("nan") is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= (_retry_after(date) or 0) <= 31


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    backoff = Backoff()
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]:
        delays = [backoff.delay(retry) for _ in range(200)]
        assert all(0.75 * full <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0  # jittered


async def test_429_pauses_every_request(client: AsyncIllumass, server: FakeIllumass) -> None:
    import anyio

    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=429, retry_after="0.3")
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.auth.search_api_keys)
        await anyio.sleep(0.05)
        tg.start_soon(client.auth.search_api_keys)  # sent during the pause: must wait for it
    assert time.monotonic() - started >= 0.3
    sent = [r for r in server.stats.recent if r.action == "searchApiKeys"]
    assert len(sent) == 4


async def test_connection_dropped_before_action_is_retried(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("drop_before", "searchApiKeys")
    await client.auth.search_api_keys()


async def test_lost_response_is_not_replayed_for_unsafe_calls(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("drop_after", "searchApiKeys")
    with pytest.raises(APIConnectionError):
        await client.request("POST", "/api-keys/_search", json={})
    assert server.stats.requests["searchApiKeys"] == 2
    assert server.faults.fired("drop_after") == 1


async def test_lost_logout_response_is_replayed(client: AsyncIllumass, server: FakeIllumass) -> None:
    """Logging out twice is harmless: a lost answer is retried, and the session ends."""
    await client.auth.search_api_keys()
    assert client.auth.token is not None
    session = client.auth.token.jwt.get_secret_value()
    server.faults.add("drop_after", "logout")
    await client.auth.logout()
    assert server.stats.requests["logout"] == 2 and session not in server.sessions


async def test_timeout_per_attempt(server: FakeIllumass) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, timeout=0.2, max_retries=1, **FAST
    ) as client:
        await client.auth.search_api_keys()
        server.faults.add("delay", "searchApiKeys", delay=1.0, times=2)
        with pytest.raises(APITimeoutError, match=r"no response within 0\.2s"):
            await client.auth.search_api_keys()
    assert server.stats.requests["searchApiKeys"] == 3


async def test_html_502_is_retried_then_reported(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("html_502", "searchApiKeys", times=3)
    with pytest.raises(ServerError) as info:
        await client.auth.search_api_keys()
    assert info.value.status == 502 and info.value.error_id is None


async def test_garbled_bodies(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("truncated_json", "searchApiKeys")
    await client.auth.search_api_keys()  # retried
    server.faults.add("bare_json", "searchApiKeys", times=3)
    with pytest.raises(InvalidResponseError):
        await client.auth.search_api_keys()


async def test_bare_error_body_is_understood(client: AsyncIllumass) -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        await client.request("POST", "/api-keys/_search", json={"query": "x" * (1024 * 1024)})
    assert info.value.error_id == "network.http.request_too_large" and info.value.status == 413


async def test_unreachable_server() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AsyncIllumass(f"http://127.0.0.1:{port}/v4", email="a@b.c", password="p", **FAST) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.auth.login()
    assert not isinstance(info.value, APITimeoutError)
    assert info.value.__cause__ is None  # no raw aiohttp exception attached


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[str, list[str]]]:
    hits: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        if request.path.startswith("/v4"):
            raise web.HTTPFound("/elsewhere/login")
        return web.json_response({"status": 200, "error": None, "result": {}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v4", hits
    await runner.cleanup()


async def test_redirects_are_not_followed(redirecting: tuple[str, list[str]]) -> None:
    url, hits = redirecting
    async with AsyncIllumass(url, email="a@b.c", password="secret-pw") as client:
        with pytest.raises(APIStatusError, match="redirects are not followed") as info:
            await client.auth.login()
    assert info.value.status == 302
    assert hits == ["/v4/login"]


# -- exactly-once creation ------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["drop_after", "truncated_json"])
async def test_lost_create_response_yields_exactly_one_key(
    client: AsyncIllumass, server: FakeIllumass, fault: str
) -> None:
    await client.auth.search_api_keys()
    server.faults.add(fault, "createApiKey")  # type: ignore[arg-type]
    key = await client.auth.create_api_key("exactly once")
    assert list(server.api_keys) == [key.id]
    assert key.token is not None and key.token.get_secret_value() == server.api_keys[key.id].token
    assert server.stats.requests["deleteApiKey"] == 1  # the orphan of the lost attempt


async def test_unreadable_created_key_is_revoked_not_retried(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    """A 2xx whose body is not a key: the key it made is revoked, the call fails once."""
    await client.auth.search_api_keys()
    server.faults.add("bare_json", "createApiKey")
    with pytest.raises(InvalidResponseError):
        await client.auth.create_api_key("garbled")
    assert server.faults.fired("bare_json") == 1
    assert server.stats.requests["createApiKey"] == 1 and server.api_keys == {}


async def test_lost_create_with_caller_id(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.faults.add("drop_after", "createApiKey")
    key = await client.auth.create_api_key("mine", key_id="ci-runner-1")
    assert key.id == "ci-runner-1" and list(server.api_keys) == ["ci-runner-1"]
    assert key.token is not None and key.token.get_secret_value() == server.api_keys["ci-runner-1"].token


async def test_gateway_error_on_create_still_one_key(client: AsyncIllumass, server: FakeIllumass) -> None:
    server.faults.add("html_502", "createApiKey")
    server.faults.add("status", "createApiKey", status=504)
    key = await client.auth.create_api_key("through a flaky gateway")
    assert list(server.api_keys) == [key.id]


async def test_create_that_finally_fails_leaves_no_key(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("drop_after", "createApiKey")
    server.faults.add("drop_before", "createApiKey", times=2)
    with pytest.raises(APIConnectionError):
        await client.auth.create_api_key("doomed")
    assert server.api_keys == {}


async def test_response_lost_every_time_ends_in_an_error_and_no_key(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("drop_after", "createApiKey", times=1000)
    with pytest.raises(IllumassError, match="responses were lost until the retry budget ran out"):
        await client.auth.create_api_key("never confirmed")
    assert server.api_keys == {}
