"""Bad arguments fail with ValueError/TypeError before any request is sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from illumass import AsyncIllumass
from illumass.testing import FakeIllumass

pytestmark = pytest.mark.anyio

Call = Callable[[AsyncIllumass], Awaitable[Any]]

BAD_CALLS: list[tuple[str, Call, type[Exception]]] = [
    ("empty description", lambda c: c.auth.create_api_key(""), ValueError),
    ("blank description", lambda c: c.auth.create_api_key("   "), ValueError),
    ("non-str description", lambda c: c.auth.create_api_key(42), TypeError),  # type: ignore[arg-type]
    ("huge description", lambda c: c.auth.create_api_key("x" * (1024 * 1024)), ValueError),
    ("escaped huge description", lambda c: c.auth.create_api_key("\x01" * 200_000), ValueError),
    ("unparsable expires_in", lambda c: c.auth.create_api_key("d", expires_in="1h30m"), ValueError),
    ("zero expires_in", lambda c: c.auth.create_api_key("d", expires_in=0), ValueError),
    ("negative expires_in", lambda c: c.auth.create_api_key("d", expires_in="-5m"), ValueError),
    ("zero timedelta", lambda c: c.auth.create_api_key("d", expires_in=timedelta(0)), ValueError),
    ("bool expires_in", lambda c: c.auth.create_api_key("d", expires_in=True), TypeError),
    ("never login", lambda c: c.auth.login(expires_in=-1), ValueError),
    ("empty key id", lambda c: c.auth.create_api_key("d", key_id=""), ValueError),
    ("slash key id", lambda c: c.auth.create_api_key("d", key_id="a/b"), ValueError),
    ("dotdot key id", lambda c: c.auth.delete_api_key(".."), ValueError),
    ("query key id", lambda c: c.auth.delete_api_key("a?b=c"), ValueError),
    ("space key id", lambda c: c.auth.delete_api_key("a b"), ValueError),
    ("int key id", lambda c: c.auth.delete_api_key(7), TypeError),  # type: ignore[arg-type]
    ("negative from_", lambda c: c.auth.search_api_keys(from_=-1), ValueError),
    ("float size", lambda c: c.auth.search_api_keys(size=1.5), TypeError),  # type: ignore[arg-type]
    ("bool size", lambda c: c.auth.search_api_keys(size=True), TypeError),
    ("list query", lambda c: c.auth.search_api_keys([1]), TypeError),  # type: ignore[arg-type]
    ("empty token", lambda c: c.auth.find_api_key(""), ValueError),
    ("int token", lambda c: c.auth.check_token(5), TypeError),  # type: ignore[arg-type]
    ("half credentials", lambda c: c.auth.login("a@b.c"), ValueError),
    ("bad method", lambda c: c.request("TRACE", "/_me"), ValueError),
    ("relative path", lambda c: c.request("GET", "_me"), ValueError),
    ("dotdot path", lambda c: c.request("GET", "/a/../login"), ValueError),
    ("query in path", lambda c: c.request("GET", "/_me?x=1"), ValueError),
    ("bad param", lambda c: c.request("GET", "/_me", params={"x": [1]}), TypeError),  # type: ignore[dict-item]
    ("zero concurrency", lambda c: c.auth.create_api_keys(["a"], concurrency=0), ValueError),
    ("float concurrency", lambda c: c.auth.create_api_keys(["a"], concurrency=2.0), TypeError),  # type: ignore[arg-type]
    ("negative bulk retries", lambda c: c.auth.create_api_keys(["a"], max_retries=-1), ValueError),
    ("str specs", lambda c: c.auth.create_api_keys("abc"), TypeError),
    ("bad bulk expires_in", lambda c: c.auth.create_api_keys(["a"], expires_in="soon"), ValueError),
]


@pytest.mark.parametrize(("name", "call", "error"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
async def test_rejected_before_any_request(
    client: AsyncIllumass, server: FakeIllumass, name: str, call: Call, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await call(client)
    assert sum(server.stats.requests.values()) == 0


async def test_iterators_and_streams_check_eagerly(client: AsyncIllumass, server: FakeIllumass) -> None:
    with pytest.raises(ValueError):
        client.auth.iter_api_keys(page_size=0)
    with pytest.raises(ValueError):
        client.auth.provision(["a"], concurrency=0)
    with pytest.raises(TypeError):
        client.auth.provision(5)  # type: ignore[arg-type]
    assert sum(server.stats.requests.values()) == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_url": "ftp://example.com/v4"}, ValueError),
        ({"base_url": "http://api.illumass.com/v4"}, ValueError),
        ({"base_url": "https://user:pw@api.illumass.com/v4"}, ValueError),
        ({"base_url": 5}, TypeError),
        ({"max_retries": -1}, ValueError),
        ({"max_retries": 1.0}, TypeError),
        ({"max_connections": 0}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"timeout": "30"}, TypeError),
        ({"login_expires_in": "forever"}, ValueError),
        ({"api_key": "k", "email": "a@b.c"}, ValueError),
        ({"password": ""}, ValueError),
    ],
)
def test_constructor_checks(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        AsyncIllumass(**kwargs)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/v4",
        "http://localhost:8000/v4",
        "http://[::1]:80/v4",
        "https://api.illumass.com/v4/",
    ],
)
def test_allowed_urls(url: str) -> None:
    assert AsyncIllumass(url).base_url == url.rstrip("/")


def test_insecure_http_opt_in() -> None:
    client = AsyncIllumass("http://illumass.internal/v4", allow_insecure_http=True)
    assert client.base_url == "http://illumass.internal/v4"


def test_default_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ILLUMASS_BASE_URL", raising=False)
    assert AsyncIllumass().base_url == "https://api.illumass.com/v4"
