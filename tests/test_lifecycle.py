"""The token lifecycle: proactive and reactive re-login, single flight, what never re-logs in."""

from __future__ import annotations

import logging

import anyio
import pytest

from illumass import (
    AsyncIllumass,
    AuthenticationError,
    PermissionDeniedError,
    Secret,
    TokenExpiredError,
)
from illumass._auth import _lifetime
from illumass.testing import FakeIllumass

from .conftest import FAST

pytestmark = pytest.mark.anyio


async def test_renews_ahead_of_expiry(server: FakeIllumass) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, login_expires_in="2s"
    ) as client:
        await client.auth.search_api_keys()
        await anyio.sleep(1.1)  # past min(300 s, ttl/2) = 1 s
        await client.auth.search_api_keys()
    assert server.stats.logins == 2
    assert server.stats.requests["searchApiKeys"] == 2  # renewed before sending: nothing rejected


async def test_relogs_in_and_replays_after_401(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.forget_sessions()
    await client.auth.create_api_key("after the flush")
    assert server.stats.logins == 2
    assert server.stats.requests["createApiKey"] == 2  # rejected once, replayed once
    assert len(server.api_keys) == 1


@pytest.mark.parametrize("error_id", ["security.token.invalid", "security.token.expired"])
async def test_expired_token_of_either_kuzzle_era(error_id: str) -> None:
    async with (
        FakeIllumass(expired_error_id=error_id) as server,
        AsyncIllumass(server.url, email=server.email, password=server.password) as client,
    ):
        await client.auth.search_api_keys()
        server.faults.add("status", "searchApiKeys", status=401, error_id=error_id)
        await client.auth.search_api_keys()
        assert server.stats.logins == 2


async def test_single_flight_login_under_200_concurrent_calls(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    await client.auth.search_api_keys()
    server.forget_sessions()
    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(client.auth.search_api_keys)
    assert server.stats.logins == 2


async def test_single_flight_first_login(client: AsyncIllumass, server: FakeIllumass) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(client.auth.search_api_keys)
    assert server.stats.logins == 1


async def test_replays_only_once(client: AsyncIllumass, server: FakeIllumass) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=401, error_id="security.token.invalid", times=2)
    with pytest.raises(TokenExpiredError):
        await client.auth.search_api_keys()
    assert server.stats.logins == 2


@pytest.mark.parametrize(
    ("status", "error_id", "error"),
    [
        (401, "security.token.refresh_forbidden", AuthenticationError),
        (401, "security.rights.unauthorized", AuthenticationError),
        (403, "security.rights.forbidden", PermissionDeniedError),
    ],
)
async def test_never_relogs_in_on(
    client: AsyncIllumass, server: FakeIllumass, status: int, error_id: str, error: type[Exception]
) -> None:
    await client.auth.search_api_keys()
    server.faults.add("status", "searchApiKeys", status=status, error_id=error_id)
    with pytest.raises(error) as info:
        await client.auth.search_api_keys()
    assert not isinstance(info.value, TokenExpiredError)
    assert server.stats.logins == 1


async def test_revoked_api_key_is_a_clear_error(client: AsyncIllumass, server: FakeIllumass) -> None:
    key = await client.auth.create_api_key("bot")
    assert key.token is not None
    async with AsyncIllumass(server.url, api_key=key.token) as bot:
        await bot.auth.search_api_keys()
        await client.auth.delete_api_key(key.id)
        with pytest.raises(AuthenticationError, match="API key was rejected: it has expired or been revoked"):
            await bot.auth.search_api_keys()
    assert server.stats.logins == 1  # only `client`'s


@pytest.mark.parametrize("offset", [-7200.0, 7200.0])
async def test_wrong_server_clock_changes_nothing(offset: float) -> None:
    async with (
        FakeIllumass(clock_offset=offset) as server,
        AsyncIllumass(server.url, email=server.email, password=server.password) as client,
    ):
        for _ in range(5):
            await client.auth.search_api_keys()
        assert server.stats.logins == 1
        assert server.stats.requests["searchApiKeys"] == 5


async def test_failed_renewal_keeps_the_valid_token(
    server: FakeIllumass, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncIllumass(
        server.url, email=server.email, password=server.password, login_expires_in="3s", max_retries=0, **FAST
    ) as client:
        await client.auth.search_api_keys()
        await anyio.sleep(1.6)
        server.faults.add("status", "login", status=503)
        with caplog.at_level(logging.WARNING, "illumass"):
            await client.auth.search_api_keys()  # the old token still works
        assert "token renewal failed" in caplog.text
        assert server.stats.logins == 1


def test_lifetime_fallbacks() -> None:
    import base64
    import json

    def jwt(payload: dict[str, object]) -> Secret:
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        return Secret(f"kauth-eyJhbGciOiJIUzI1NiJ9.{body}.sig")

    assert _lifetime({"ttl": 60_000, "expiresAt": 0}, jwt({}), 1000.0) == 60.0
    assert _lifetime({"ttl": -1}, jwt({}), 1000.0) is None
    assert _lifetime({"expiresAt": 1_030_000}, jwt({}), 1000.0) == 30.0
    assert _lifetime({"expiresAt": -1}, jwt({"exp": 5}), 1000.0) is None
    assert _lifetime({}, jwt({"exp": 1045}), 1000.0) == 45.0
    assert _lifetime({}, jwt({"_id": "u"}), 1000.0) is None
    assert _lifetime({"ttl": "soon"}, Secret("not a jwt"), 1000.0) is None
