"""Proxies from the environment: read once when the session opens, NO_PROXY honoured."""

from __future__ import annotations

import socket

import pytest

from illumass import APIConnectionError, AsyncIllumass
from illumass.testing import FakeIllumass

pytestmark = pytest.mark.anyio


def dead_url() -> str:
    """A loopback base URL nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v4"


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


async def test_requests_go_through_the_environment_proxy(
    no_proxy_env: pytest.MonkeyPatch, server: FakeIllumass
) -> None:
    # The "proxy" is FakeIllumass itself: it answers the absolute-form requests a proxy receives.
    no_proxy_env.setenv("HTTP_PROXY", server.url.removesuffix("/v4"))
    async with AsyncIllumass(dead_url(), email=server.email, password=server.password) as client:
        await client.auth.search_api_keys()
    assert server.stats.requests["login"] == 1
    assert server.stats.requests["searchApiKeys"] == 1


async def test_no_proxy_and_trust_env_false_go_direct(
    no_proxy_env: pytest.MonkeyPatch, server: FakeIllumass
) -> None:
    no_proxy_env.setenv("HTTP_PROXY", server.url.removesuffix("/v4"))
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")
    async with AsyncIllumass(dead_url(), email=server.email, password=server.password, max_retries=0) as c:
        with pytest.raises(APIConnectionError):
            await c.auth.login()
    no_proxy_env.delenv("NO_PROXY")
    async with AsyncIllumass(
        dead_url(), email=server.email, password=server.password, max_retries=0, trust_env=False
    ) as c:
        with pytest.raises(APIConnectionError):
            await c.auth.login()
    assert server.stats.requests["login"] == 0
