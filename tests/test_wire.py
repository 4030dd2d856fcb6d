"""Envelopes, error objects and JWT claims: any input gives a model, an illumass error, or None."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from illumass import (
    APIStatusError,
    AuthenticationError,
    ConflictError,
    IllumassError,
    InvalidCredentialsError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TokenExpiredError,
)
from illumass._jwt import claims
from illumass._wire import structure, unwrap
from illumass.models import ApiKey, ApiKeyPage, AuthToken, TokenInfo

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = ["_id", "_source", "jwt", "ttl", "expiresAt", "description", "fingerprint", "userId", "token",
          "hits", "total", "valid", "state", "kuid", "_kuzzle_info", "createdAt", "error", "result",
          "status", "id", "code", "message"]  # fmt: skip
shaped = st.recursive(
    json_values,
    lambda children: st.dictionaries(st.sampled_from(FIELDS), children, max_size=8),
    max_leaves=30,
)


@given(st.integers(100, 599), shaped)
def test_unwrap_never_raises_foreign_errors(status: int, body: Any) -> None:
    with contextlib.suppress(IllumassError):
        unwrap(status, body, None)


@given(shaped, st.sampled_from([ApiKey, ApiKeyPage, AuthToken, TokenInfo]))
def test_structure_never_raises_foreign_errors(result: Any, cls: type) -> None:
    with contextlib.suppress(InvalidResponseError):
        structure(result, cls)


def envelope(status: int, error: dict[str, Any] | None = None, result: Any = None) -> dict[str, Any]:
    return {"requestId": "rid", "status": status, "error": error, "result": result}


@pytest.mark.parametrize(
    ("status", "error_id", "expected"),
    [
        (401, "security.token.invalid", TokenExpiredError),
        (401, "security.token.expired", TokenExpiredError),
        (401, "plugin.strategy.missing_user", InvalidCredentialsError),
        (401, "security.token.refresh_forbidden", AuthenticationError),
        (401, "security.rights.unauthorized", AuthenticationError),
        (403, "security.rights.forbidden", PermissionDeniedError),
        (400, "services.storage.document_already_exists", ConflictError),
        (404, "services.storage.not_found", NotFoundError),
        (413, "network.http.request_too_large", PayloadTooLargeError),
        (429, "api.process.too_many_requests", RateLimitError),
        (503, "api.process.overloaded", ServiceUnavailableError),
        (500, "core.fatal", ServerError),
        (412, "x.y.z", APIStatusError),
    ],
)
def test_error_mapping(status: int, error_id: str, expected: type[APIStatusError]) -> None:
    error = {"id": error_id, "code": 1, "message": "msg", "status": status, "props": []}
    with pytest.raises(expected) as info:
        unwrap(status, envelope(status, error), None)
    assert type(info.value) is expected
    assert (info.value.status, info.value.error_id, info.value.code, info.value.message) == (
        status,
        error_id,
        1,
        "msg",
    )
    assert info.value.request_id == "rid"


def test_bare_error_object() -> None:
    body = {"code": 50397185, "id": "network.http.request_too_large", "message": "too big", "status": 413}
    with pytest.raises(PayloadTooLargeError) as info:
        unwrap(413, body, "hdr-id")
    assert info.value.request_id == "hdr-id" and info.value.code == 50397185


def test_bare_result_and_envelope() -> None:
    assert unwrap(200, envelope(200, result={"a": 1}), None) == {"a": 1}
    assert unwrap(200, {"raws": {"values": [1]}}, None) == {"raws": {"values": [1]}}
    with pytest.raises(ServerError):
        unwrap(502, None, None)
    with pytest.raises(InvalidResponseError):
        unwrap(400, envelope(400, error="boom"), None)  # type: ignore[arg-type]


def test_the_documented_samples() -> None:
    token = structure(
        {"_id": "0005000000000008", "expiresAt": 1597687105283, "jwt": "<jwt>", "ttl": 3600000}, AuthToken
    )
    assert token.user_id == "0005000000000008" and token.expires_at is not None
    assert token.expires_at.isoformat() == "2020-08-17T17:58:25.283000+00:00"
    page = structure(
        {
            "hits": [
                {
                    "_id": "DZRAl3MBddfEOpjR_qD97afq57a7",
                    "_source": {
                        "description": "NodeRED",
                        "expiresAt": 1598562484153,
                        "fingerprint": "620c3da8",
                        "ttl": 2592000000,
                        "userId": "0005000000000008",
                    },
                }
            ],
            "total": 1,
        },
        ApiKeyPage,
    )
    assert page.hits[0].ttl is not None and page.hits[0].ttl.days == 30
    assert page.hits[0].token is None and page.hits[0].created_at is None


def encode(payload: bytes) -> str:
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


@given(st.text(max_size=200))
def test_claims_of_arbitrary_text(text: str) -> None:
    result = claims(text)
    assert result is None or isinstance(result, dict)


@given(
    st.sampled_from(["", "kauth-", "kapikey-"]),
    # orjson reads integers beyond 64 bits as floats; JWT claims never hold such numbers.
    st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8), max_size=4),
    st.booleans(),
)
def test_claims_round_trip(prefix: str, payload: dict[str, Any], padded: bool) -> None:
    body = encode(json.dumps(payload).encode())
    if padded:
        body += "=" * (-len(body) % 4)
    assert claims(f"{prefix}eyJhbGciOiJIUzI1NiJ9.{body}.c2ln") == payload


@given(st.binary(max_size=64))
def test_claims_of_non_json_payloads(payload: bytes) -> None:
    result = claims(f"kauth-e30.{encode(payload)}.sig")
    assert result is None or isinstance(result, dict)


@given(st.one_of(st.integers(-(2**40), 2**45), st.floats(0, 2**45, allow_nan=False)))
def test_expiry_milliseconds_become_the_exact_instant(millis: int | float) -> None:
    # Small whole milliseconds take a faster, float-based path: it must agree to the microsecond.
    assume(millis != -1)  # never
    source = {"description": "d", "userId": "u", "expiresAt": millis, "ttl": 1, "fingerprint": "f"}
    key = structure({"_id": "k", "_source": source}, ApiKey)
    assert key.expires_at == datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=millis)
