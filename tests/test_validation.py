"""Bad arguments fail with ValueError/TypeError before any request is sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from illumass import AsyncIllumass, InvalidSpecError, Secret
from illumass._config import Config, resolve
from illumass.models import ApiKeySpec
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
    ("zero expires_in", lambda c: c.auth.create_api_key("d", expires_in=0), ValueError),  # type: ignore[arg-type]
    ("negative expires_in", lambda c: c.auth.create_api_key("d", expires_in="-5m"), ValueError),
    ("zero timedelta", lambda c: c.auth.create_api_key("d", expires_in=timedelta(0)), ValueError),
    ("bool expires_in", lambda c: c.auth.create_api_key("d", expires_in=True), TypeError),  # type: ignore[arg-type]
    ("bare int expires_in", lambda c: c.auth.create_api_key("d", expires_in=3600), ValueError),  # type: ignore[arg-type]
    ("bare float expires_in", lambda c: c.auth.create_api_key("d", expires_in=3.6e6), ValueError),  # type: ignore[arg-type]
    ("unitless expires_in", lambda c: c.auth.create_api_key("d", expires_in="3600"), ValueError),
    ("past year 9999", lambda c: c.auth.create_api_key("d", expires_in="300000y"), ValueError),
    ("over 1000 years", lambda c: c.auth.create_api_key("d", expires_in=timedelta(days=366_000)), ValueError),
    ("never login", lambda c: c.auth.login(expires_in=-1), ValueError),
    ("bare number login", lambda c: c.auth.login(expires_in=3600), ValueError),  # type: ignore[arg-type]
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
    ("bare number bulk expires_in", lambda c: c.auth.create_api_keys(["a"], expires_in=3600), ValueError),  # type: ignore[arg-type]
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
        ({"login_expires_in": 3600}, ValueError),
        ({"login_expires_in": "3600"}, ValueError),
        ({"login_expires_in": "2000y"}, ValueError),
        ({"api_key": "k", "email": "a@b.c"}, ValueError),
        ({"api_key": "kapikey-a b"}, ValueError),
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


async def test_bare_number_in_a_spec_fails_that_item_only(
    client: AsyncIllumass, server: FakeIllumass
) -> None:
    bad = ApiKeySpec("bare", expires_in=3600)  # type: ignore[arg-type]
    results = await client.auth.create_api_keys([bad, ApiKeySpec("ok", expires_in="1h")])
    assert isinstance(results[0].error, InvalidSpecError)
    assert "timedelta" in str(results[0].error)
    assert results[1].ok
    assert server.stats.requests["createApiKey"] == 1  # the bare-number item was never sent


SESSION = "kauth-" + "s" * 40
API_KEY = "kapikey-" + "k" * 40
LEGACY = "eyJhbGciOiJIUzI1NiJ9." + "l" * 40


def _resolve(**kwargs: Any) -> Config:
    settings: dict[str, Any] = {
        "email": None,
        "password": None,
        "api_key": None,
        "login_expires_in": "1h",
        "timeout": 30.0,
        "max_retries": 2,
        "max_connections": 10,
        "allow_insecure_http": False,
        **kwargs,
    }
    return resolve("https://api.illumass.com/v4", **settings)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("ILLUMASS_EMAIL", "ILLUMASS_PASSWORD", "ILLUMASS_API_KEY", "ILLUMASS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("token", [SESSION, Secret(SESSION)])
def test_session_token_as_api_key_is_refused(clean_env: pytest.MonkeyPatch, token: str | Secret) -> None:
    with pytest.raises(ValueError, match="session token") as info:
        AsyncIllumass(api_key=token)
    assert "session_token=" in str(info.value)
    assert SESSION not in str(info.value) and SESSION not in repr(info.value)
    with pytest.raises(ValueError, match="session token"):
        _resolve(api_key=token, allow_unprefixed_tokens=True)  # the escape hatch is for old servers only


def test_session_token_in_the_api_key_variable_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ILLUMASS_API_KEY", SESSION)
    with pytest.raises(ValueError, match="ILLUMASS_API_KEY holds a session token") as info:
        AsyncIllumass()
    assert SESSION not in str(info.value)


def test_unprefixed_api_key_needs_the_escape_hatch(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="allow_unprefixed_tokens") as info:
        AsyncIllumass(api_key=LEGACY)
    assert LEGACY not in str(info.value)
    config = _resolve(api_key=LEGACY, allow_unprefixed_tokens=True)
    assert config.api_key == Secret(LEGACY)
    assert config.allow_unprefixed_tokens is True
    assert LEGACY not in repr(config)


def test_api_key_with_its_prefix_is_accepted(clean_env: pytest.MonkeyPatch) -> None:
    config = _resolve(api_key=API_KEY)
    assert config.api_key == Secret(API_KEY)
    assert config.session_token is None
    assert config.allow_unprefixed_tokens is False
    assert AsyncIllumass(api_key=API_KEY).base_url == "https://api.illumass.com/v4"


def test_session_token_mode(clean_env: pytest.MonkeyPatch) -> None:
    alone = _resolve(session_token=SESSION)
    assert alone.session_token == Secret(SESSION)
    assert (alone.api_key, alone.email, alone.password) == (None, None, None)
    assert SESSION not in repr(alone)
    renewable = _resolve(session_token=Secret(SESSION), email="a@b.c", password="pw")
    assert renewable.session_token == Secret(SESSION)
    assert (renewable.email, renewable.password) == ("a@b.c", Secret("pw"))


def test_session_token_leaves_the_api_key_variable_alone(clean_env: pytest.MonkeyPatch) -> None:
    # An explicit session token chooses the mode; the environment only fills email and password.
    clean_env.setenv("ILLUMASS_API_KEY", API_KEY)
    clean_env.setenv("ILLUMASS_EMAIL", "env@b.c")
    clean_env.setenv("ILLUMASS_PASSWORD", "env-pw")
    config = _resolve(session_token=SESSION)
    assert config.api_key is None
    assert (config.email, config.password) == ("env@b.c", Secret("env-pw"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"session_token": SESSION, "api_key": API_KEY}, "not both"),
        ({"session_token": API_KEY}, "api_key="),
        ({"session_token": LEGACY}, "allow_unprefixed_tokens"),
        ({"session_token": ""}, "empty"),
        ({"session_token": SESSION + "\n"}, "whitespace"),
    ],
)
def test_session_token_checks(clean_env: pytest.MonkeyPatch, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        _resolve(**kwargs)
    assert "s" * 40 not in str(info.value) and "k" * 40 not in str(info.value)


def test_legacy_session_token_with_the_escape_hatch(clean_env: pytest.MonkeyPatch) -> None:
    assert _resolve(session_token=LEGACY, allow_unprefixed_tokens=True).session_token == Secret(LEGACY)


def test_escape_hatch_must_be_a_bool(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(TypeError):
        _resolve(api_key=API_KEY, allow_unprefixed_tokens="yes")
