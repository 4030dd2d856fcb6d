"""token_claims reads (user id, iat, exp) from a Kuzzle token without verifying it, and never raises."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from illumass import AsyncIllumass
from illumass._jwt import TokenClaims, token_claims

pytestmark = pytest.mark.anyio

HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


def encode(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def token(payload: object, prefix: str = "kapikey-") -> str:
    return f"{prefix}{HEADER}.{encode(json.dumps(payload).encode())}.c2lnbmF0dXJl"


@pytest.mark.parametrize("prefix", ["kapikey-", "kauth-", ""])
def test_claims_of_a_token(prefix: str) -> None:
    claims = token_claims(token({"_id": "kuid-1", "iat": 1_700_000_000, "exp": 1_700_003_600}, prefix))
    assert claims == TokenClaims("kuid-1", 1_700_000_000, 1_700_003_600)
    assert claims == ("kuid-1", 1_700_000_000, 1_700_003_600)  # a plain tuple too


def test_a_token_that_never_expires_has_no_exp() -> None:
    assert token_claims(token({"_id": "u", "iat": 5})) == TokenClaims("u", 5, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "kapikey-",
        "a.b",
        "a.b.c.d",
        "kapikey-x.!!!.y",
        token([1, 2]),
        token("text"),
        token({}),
        token({"iat": 1}),
        token({"_id": "", "iat": 1}),
        token({"_id": 7, "iat": 1}),
        token({"_id": "u"}),
        token({"_id": "u", "iat": 1.5}),
        token({"_id": "u", "iat": True}),
        token({"_id": "u", "iat": "1"}),
        token({"_id": "u", "iat": 1, "exp": "2"}),
        token({"_id": "u", "iat": 1, "exp": False}),
        token({"_id": "u", "iat": 2**70}),  # beyond what orjson reads as an int
        f"kapikey-{HEADER}.{encode(b'{' * 2000)}.sig",  # nested deeper than any parser allows
        "kapikey-é.ü.ß",
    ],
)
def test_garbage_gives_none(text: str) -> None:
    assert token_claims(text) is None


@given(st.text(max_size=300))
@example("kauth-..")
@example("kapikey-a.\x00.b")
def test_arbitrary_text_never_raises(text: str) -> None:
    result = token_claims(text)
    assert result is None or isinstance(result, TokenClaims)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(
    st.sampled_from(["", "kauth-", "kapikey-"]),
    st.fixed_dictionaries(
        {}, optional={"_id": json_values | st.text(), "iat": json_values, "exp": json_values}
    ),
)
def test_payloads_of_any_shape(prefix: str, payload: dict[str, Any]) -> None:
    result = token_claims(token(payload, prefix))
    well_formed = (
        isinstance(payload.get("_id"), str)
        and payload["_id"] != ""
        and type(payload.get("iat")) is int
        and (payload.get("exp") is None or type(payload.get("exp")) is int)
    )
    if well_formed:
        assert result == TokenClaims(payload["_id"], payload["iat"], payload.get("exp"))
    else:
        assert result is None


@given(st.binary(max_size=64))
def test_non_json_payloads(payload: bytes) -> None:
    result = token_claims(f"kapikey-{HEADER}.{encode(payload)}.sig")
    assert result is None or isinstance(result, TokenClaims)


async def test_claims_of_keys_the_server_issues(client: AsyncIllumass) -> None:
    key = await client.auth.create_api_key("claims", expires_in="2h")
    never = await client.auth.create_api_key("claims forever", expires_in=-1)
    assert key.token is not None and never.token is not None and key.expires_at is not None
    claims = token_claims(key.token.get_secret_value())
    assert claims is not None and claims.exp is not None
    assert claims.user_id == key.user_id
    assert claims.exp - claims.iat == 7200
    assert abs(claims.exp - key.expires_at.timestamp()) < 3
    forever = token_claims(never.token.get_secret_value())
    assert forever is not None and forever.exp is None and forever.user_id == never.user_id
