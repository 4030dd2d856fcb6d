"""Every model turns into JSON-safe plain data with to_dict(), secrets left out unless asked for."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from illumass import AsyncIllumass, InvalidSpecError, NotFoundError, ServiceUnavailableError
from illumass._duration import expires_in_param, parse_duration
from illumass._secret import Secret
from illumass.models import ApiKey, ApiKeyPage, ApiKeySpec, AuthToken, ProvisionResult, TokenInfo

pytestmark = pytest.mark.anyio

MARK = "SECRETVALUE"  # in every secret below, in no other field (their alphabet is lower case)
secrets = st.text("abcdef0123456789", min_size=4, max_size=20).map(lambda s: Secret(f"kapikey-{MARK}{s}"))
texts = st.text("abcdefghijklmnopqrstuvwxyz _-.é€", max_size=20)
aware = st.datetimes(timezones=st.just(timezone.utc))
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650))
errors = st.one_of(
    st.none(),
    st.builds(InvalidSpecError, texts),
    st.builds(
        lambda message, status, error_id: NotFoundError(message, status=status, error_id=error_id),
        texts,
        st.integers(400, 599),
        st.none() | texts,
    ),
)
api_keys = st.builds(
    ApiKey,
    id=texts,
    description=texts,
    user_id=texts,
    expires_at=st.none() | aware,
    ttl=st.none() | durations,
    fingerprint=texts,
    token=st.none() | secrets,
    created_at=st.none() | aware,
)
specs = st.builds(
    ApiKeySpec,
    description=texts,
    expires_in=st.none() | st.just(-1) | st.sampled_from(["1h", "30 days", "-1"]) | durations,
    key_id=st.none() | texts,
)
models = st.one_of(
    st.builds(AuthToken, jwt=secrets, user_id=texts, expires_at=st.none() | aware, ttl=st.none() | durations),
    api_keys,
    st.builds(ApiKeyPage, hits=st.lists(api_keys, max_size=3), total=st.integers(0, 10_000)),
    st.builds(
        TokenInfo, valid=st.booleans(), state=st.none() | texts, expires_at=st.none() | aware, user_id=texts
    ),
    specs,
    st.builds(
        ProvisionResult,
        index=st.integers(0, 10**6),
        spec=specs,
        api_key=st.none() | api_keys,
        error=errors,
        attempts=st.integers(1, 10),
    ),
)


@given(models)
def test_to_dict_is_json_and_hides_secrets(model: Any) -> None:
    data = model.to_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert MARK not in text
    assert MARK not in repr(data)


@given(models)
def test_include_secrets_shows_them(model: Any) -> None:
    shown = model.to_dict(include_secrets=True)
    text = json.dumps(shown, allow_nan=False)
    assert all(secret in text for secret in _secrets_in(model))
    assert shown.keys() == model.to_dict().keys()


def _secrets_in(model: Any) -> list[str]:
    found: list[str] = []
    if isinstance(model, AuthToken):
        found.append(model.jwt.get_secret_value())
    elif isinstance(model, ApiKey) and model.token is not None:
        found.append(model.token.get_secret_value())
    elif isinstance(model, ApiKeyPage):
        for hit in model.hits:
            found += _secrets_in(hit)
    elif isinstance(model, ProvisionResult) and model.api_key is not None:
        found += _secrets_in(model.api_key)
    return found


NOW = datetime(2026, 11, 28, 11, 30, 15, 250_000, tzinfo=timezone.utc)
TOKEN = "kapikey-eyJhbGciOiJIUzI1NiJ9.e30.c2ln"


def test_values_of_an_api_key() -> None:
    key = ApiKey("k1", "CI", "u1", NOW, timedelta(hours=1, milliseconds=500), "ab12", Secret(TOKEN), NOW)
    assert key.to_dict() == {
        "id": "k1",
        "description": "CI",
        "user_id": "u1",
        "expires_at": "2026-11-28T11:30:15.250000+00:00",
        "ttl": 3600.5,
        "fingerprint": "ab12",
        "token": None,
        "created_at": "2026-11-28T11:30:15.250000+00:00",
    }
    assert key.to_dict(include_secrets=True)["token"] == TOKEN
    assert datetime.fromisoformat(key.to_dict()["expires_at"]) == NOW
    never = ApiKey("k2", "forever", "u1", None, None, "cd34")
    assert never.to_dict()["expires_at"] is None and never.to_dict()["ttl"] is None


def test_values_of_a_failed_result() -> None:
    error = ServiceUnavailableError(
        "overloaded", status=503, error_id="api.process.overloaded", request_id="r1"
    )
    result = ProvisionResult(3, ApiKeySpec("x", expires_in="2d"), None, error, 4)
    assert result.to_dict() == {
        "index": 3,
        "spec": {"description": "x", "expires_in": "2d", "key_id": None},
        "api_key": None,
        "error": {
            "type": "ServiceUnavailableError",
            "message": "overloaded",
            "status": 503,
            "error_id": "api.process.overloaded",
        },
        "attempts": 4,
        "ok": False,
    }
    spec_error = ProvisionResult(
        0, ApiKeySpec(""), None, InvalidSpecError("description must not be empty"), 0
    )
    assert spec_error.to_dict()["error"] == {
        "type": "InvalidSpecError",
        "message": "description must not be empty",
        "status": None,
        "error_id": None,
    }


@given(st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=365_000)))
def test_a_spec_dict_means_the_same_lifetime(lifetime: timedelta) -> None:
    # A timedelta goes out as milliseconds with a unit, so ApiKeySpec(**d) is the same key again,
    # not a bare number that expires_in would refuse (or read as milliseconds).
    data = ApiKeySpec("x", expires_in=lifetime).to_dict()
    again = ApiKeySpec(**data)
    assert isinstance(again.expires_in, str) and again.expires_in.endswith("ms")
    assert parse_duration(expires_in_param(again.expires_in, allow_never=True)) == parse_duration(
        expires_in_param(lifetime, allow_never=True)
    )


@pytest.mark.parametrize("junk", [object(), float("nan"), [1], b"1h", 3600])
def test_an_invalid_spec_still_serialises(junk: object) -> None:
    # Specs are checked when their item runs; the report of an invalid one must still be JSON.
    spec = ApiKeySpec(junk, expires_in=junk, key_id=junk)  # type: ignore[arg-type]
    result = ProvisionResult(0, spec, None, InvalidSpecError("bad spec"), 0)
    json.dumps(result.to_dict(), allow_nan=False)


async def test_models_from_the_server_serialise(client: AsyncIllumass) -> None:
    token = await client.auth.login()
    key = await client.auth.create_api_key("to_dict", expires_in="1d")
    page = await client.auth.search_api_keys()
    info = await client.auth.check_token(key.token)
    results = await client.auth.create_api_keys(["bulk", ApiKeySpec("", expires_in="1h")])
    secrets = [token.jwt.get_secret_value(), key.token.get_secret_value() if key.token else ""]
    secrets += [r.api_key.token.get_secret_value() for r in results if r.api_key and r.api_key.token]
    assert len(secrets) == 3 and all(secrets)
    for model in (token, key, page, info, *results):
        text = json.dumps(model.to_dict(), allow_nan=False)
        assert not any(secret in text for secret in secrets)
    assert json.loads(json.dumps(key.to_dict(include_secrets=True)))["token"] == secrets[1]
    assert [r.to_dict()["ok"] for r in results] == [True, False]
    assert key.to_dict()["ttl"] == 86_400.0
