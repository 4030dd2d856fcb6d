"""FakeIllumass speaks Kuzzle 2.56 as the real server does; checked with plain aiohttp.

Every expectation here was first observed on the real Kuzzle 2.56.0 behind the harness's /v4 front
(shared/kuzzle), then asserted against the fake.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from illumass._jwt import claims
from illumass.testing import FakeIllumass, StoredApiKey
from illumass.testing.__main__ import main as fake_main
from illumass.testing.__main__ import parse_cap

from .conftest import http, served

pytestmark = pytest.mark.anyio

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def server() -> AsyncIterator[FakeIllumass]:
    """A default FakeIllumass except for index refreshes, which are instant here: the
    near-real-time behaviour has tests of its own, and the others need not wait for ticks."""
    async with FakeIllumass(seed=1, refresh_interval=0) as fake:
        yield fake


async def call(
    server: FakeIllumass,
    method: str,
    path: str,
    *,
    token: str | None = None,
    json: Any = None,
    data: bytes | io.BytesIO | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    skip_auto_headers: tuple[str, ...] = (),
) -> tuple[int, Any]:
    """One request; a bodiless POST/DELETE carries a JSON content type, as the SDK sends it
    (aiohttp would otherwise label it application/octet-stream, which Kuzzle refuses)."""
    hdrs = dict(headers or {})
    if json is None and data is None and method != "GET" and not skip_auto_headers:
        hdrs.setdefault("Content-Type", "application/json")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            server.url + path,
            json=json,
            data=data,
            params=params,
            headers=hdrs,
            skip_auto_headers=skip_auto_headers,
        ) as resp,
    ):
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = await resp.text()
        return resp.status, body


async def login(server: FakeIllumass, expires_in: str | None = None) -> dict[str, Any]:
    params = {"expiresIn": expires_in} if expires_in else None
    status, body = await call(
        server, "POST", "/login", json={"email": server.email, "password": server.password}, params=params
    )
    assert status == 200, body
    return body["result"]  # type: ignore[no-any-return]


async def create(server: FakeIllumass, jwt: str, description: str = "d", **params: str) -> dict[str, Any]:
    status, body = await call(
        server, "POST", "/api-keys/_create", token=jwt, json={"description": description}, params=params
    )
    assert status == 200, body
    return body["result"]  # type: ignore[no-any-return]


async def search(server: FakeIllumass, jwt: str, query: Any = None, **params: str) -> tuple[int, Any]:
    return await call(server, "POST", "/api-keys/_search", token=jwt, json=query, params=params)


async def ids(server: FakeIllumass, jwt: str, query: Any = None, **params: str) -> list[str]:
    status, body = await search(server, jwt, query, **params)
    assert status == 200, body
    return [h["_id"] for h in body["result"]["hits"]]


def error_of(body: Any) -> tuple[Any, ...]:
    return (body["error"]["status"], body["error"]["id"], body["error"]["code"])


# Kuzzle's routed envelope for the auth controller (JSON.stringify drops its undefined
# collection/index).
ENVELOPE_KEYS = {"action", "controller", "error", "headers", "requestId", "result", "status", "volatile"}


# -- login, sessions --------------------------------------------------------------------------------


async def test_login_envelope_and_token(server: FakeIllumass) -> None:
    status, body = await call(
        server, "POST", "/login", json={"email": server.email, "password": server.password}
    )
    assert status == 200
    assert set(body) == ENVELOPE_KEYS
    assert body["controller"] == "auth" and body["action"] == "login" and body["error"] is None
    assert body["headers"] == {} and body["volatile"] is None
    result = body["result"]
    assert result["_id"] == server.user_id()
    assert result["ttl"] == 3_600_000  # Kuzzle's default: 1h
    assert result["jwt"].startswith("kauth-")
    payload = claims(result["jwt"])
    assert payload is not None and list(payload) == ["_id", "iat", "exp"]  # exactly, no nonce
    assert payload["_id"] == server.user_id()
    assert payload["exp"] - payload["iat"] == 3600
    assert abs(result["expiresAt"] - (time.time() * 1000 + 3_600_000)) < 5000
    assert server.stats.logins == 1


async def test_login_bad_and_missing_credentials(server: FakeIllumass) -> None:
    status, body = await call(server, "POST", "/login", json={"email": server.email, "password": "nope"})
    assert status == 401
    assert body["error"] == {
        "code": 67305492,
        "id": "plugin.strategy.missing_user",
        "message": "wrong username or password",
        "props": ["wrong username or password"],
        "status": 401,
    }
    for credentials in ({"email": server.email}, None):
        status, body = await call(server, "POST", "/login", json=credentials)
        assert (status, body["error"]["message"]) == (401, "Missing credentials")


@pytest.mark.parametrize(
    ("expires_in", "status", "error_id"),
    [
        ("0", 400, "api.assert.invalid_argument"),
        ("abc", 400, "api.assert.invalid_argument"),
        ("2h", 200, None),
    ],
)
async def test_login_expires_in_rules(
    server: FakeIllumass, expires_in: str, status: int, error_id: str | None
) -> None:
    got, body = await call(
        server,
        "POST",
        "/login",
        json={"email": server.email, "password": server.password},
        params={"expiresIn": expires_in},
    )
    assert got == status
    assert (body["error"] or {}).get("id") == error_id


async def test_max_ttl() -> None:
    async with FakeIllumass(max_ttl="1h") as server:
        status, body = await call(
            server,
            "POST",
            "/login",
            json={"email": server.email, "password": server.password},
            params={"expiresIn": "2h"},
        )
    assert status == 400 and body["error"]["id"] == "security.token.ttl_exceeded"


async def test_login_and_check_token_refuse_a_stale_bearer(server: FakeIllumass) -> None:
    credentials = {"email": server.email, "password": server.password}
    revoked = (await login(server, "2h"))["jwt"]
    assert (await call(server, "POST", "/logout", token=revoked))[0] == 200
    for stale in ("kauth-garbage.x.y", "garbage", revoked):
        status, body = await call(server, "POST", "/login", json=credentials, token=stale)
        assert (status, body["error"]["id"], body["error"]["code"]) == (
            401,
            "security.token.invalid",
            117506049,
        )
        status, body = await call(server, "POST", "/_checkToken", json={"token": revoked}, token=stale)
        assert (status, body["error"]["id"]) == (401, "security.token.invalid")
    status, body = await call(server, "POST", "/login", json=credentials, params={"jwt": "garbage"})
    assert status == 401  # ?jwt= is a bearer too
    # Only "Bearer ..." (any case) is read; other schemes and an empty bearer are anonymous.
    for header in ("Basic Zm9vOmJhcg==", "Bearer ", "Token x"):
        status, _ = await call(server, "POST", "/login", json=credentials, headers={"Authorization": header})
        assert status == 200


async def test_same_second_tokens_are_identical(server: FakeIllumass) -> None:
    # Kuzzle's JWT is {_id, iat, exp}: two tokens of one user issued in one second are one token.
    for _ in range(100):
        first, second = await asyncio.gather(login(server), login(server))
        if claims(first["jwt"])["iat"] == claims(second["jwt"])["iat"]:  # type: ignore[index]
            break
    else:
        pytest.fail("never two logins in the same second")
    assert first["jwt"] == second["jwt"]
    jwt = first["jwt"]
    for _ in range(100):
        a, b = await asyncio.gather(create(server, jwt, expiresIn="1h"), create(server, jwt, expiresIn="1h"))
        if claims(a["_source"]["token"])["iat"] == claims(b["_source"]["token"])["iat"]:  # type: ignore[index]
            break
    else:
        pytest.fail("never two creates in the same second")
    assert a["_id"] != b["_id"]
    assert a["_source"]["token"] == b["_source"]["token"]
    assert a["_source"]["fingerprint"] == b["_source"]["fingerprint"]


async def test_logout(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    key_token = (await create(server, jwt))["_source"]["token"]
    status, body = await call(server, "POST", "/logout", token=key_token)
    assert status == 200 and body["result"] == {"acknowledged": True}  # with a key: revokes nothing
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200
    status, body = await call(server, "POST", "/logout", token=jwt)
    assert status == 200 and body["result"] == {"acknowledged": True}
    status, body = await call(server, "GET", "/_me", token=jwt)
    assert (status, body["error"]["id"]) == (401, "security.token.invalid")
    status, body = await call(server, "POST", "/logout", token=jwt)
    assert (status, body["error"]["id"]) == (401, "security.token.invalid")
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200  # API keys survive
    status, body = await call(server, "POST", "/logout")
    assert body["error"] == {
        "code": 117637121,
        "id": "security.rights.unauthorized",
        "message": 'Unauthorized: authentication required to execute the action "auth:logout". -1',
        "props": ["auth", "logout", "-1"],
        "status": 401,
    }


async def test_logout_global_keeps_api_keys(server: FakeIllumass) -> None:
    one, two = (await login(server, "1h"))["jwt"], (await login(server, "2h"))["jwt"]
    key_token = (await create(server, one))["_source"]["token"]
    assert (await call(server, "POST", "/logout", token=one, params={"global": "false"}))[0] == 200
    assert (await call(server, "GET", "/_me", token=two))[0] == 401  # a flag: present means true
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200


async def test_check_token(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    _, body = await call(server, "POST", "/_checkToken", json={"token": jwt})
    assert body["result"]["valid"] is True and body["result"]["kuid"] == server.user_id()
    _, body = await call(server, "POST", "/_checkToken", json={"token": "kauth-nope"})
    assert body["result"] == {"valid": False, "state": "Invalid token."}
    for anonymous in ({}, {"token": ""}, None):
        _, body = await call(server, "POST", "/_checkToken", json=anonymous)
        assert body["result"] == {"valid": True, "expiresAt": None, "kuid": "-1"}
    status, body = await call(server, "POST", "/_checkToken", json={"token": None})
    assert body["error"]["props"] == ["body.token", "string"] and status == 400
    key = await create(server, jwt, expiresIn="1h")
    _, body = await call(server, "POST", "/_checkToken", json={"token": key["_source"]["token"]})
    assert body["result"] == {
        "valid": True,
        "expiresAt": key["_source"]["expiresAt"],
        "kuid": server.user_id(),
    }


async def test_refresh_token(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await call(server, "POST", "/_refreshToken", token=jwt, params={"expiresIn": "2h"})
    assert status == 200 and body["result"]["ttl"] == 7_200_000 and body["result"]["jwt"] != jwt
    key_token = (await create(server, jwt))["_source"]["token"]
    status, body = await call(server, "POST", "/_refreshToken", token=key_token)
    assert (status, body["error"]["id"], body["error"]["props"]) == (
        401,
        "security.token.refresh_forbidden",
        ["API Key"],
    )


@pytest.mark.parametrize("kind", ["session", "api key"])
async def test_expired_tokens_are_invalid(kind: str) -> None:
    # Kuzzle >= 2.34 catches the expiry as an invalid token; the switch models older servers.
    for error_id in ("security.token.invalid", "security.token.expired"):
        async with FakeIllumass(expired_error_id=error_id, refresh_interval=0) as server:
            jwt = (await login(server, "1s"))["jwt"]
            token = (
                jwt if kind == "session" else (await create(server, jwt, expiresIn="1s"))["_source"]["token"]
            )
            server.clock_offset = 5  # the server's clock moves past exp
            status, body = await call(server, "GET", "/_me", token=token)
            assert (status, body["error"]["id"]) == (401, error_id)
            _, body = await call(server, "POST", "/_checkToken", json={"token": token})
            assert body["result"]["valid"] is False


async def test_get_current_user(server: FakeIllumass) -> None:
    status, body = await call(server, "GET", "/_me")
    assert status == 200 and body["result"] == {
        "_id": "-1",
        "_source": {"profileIds": ["anonymous"], "name": "Anonymous"},
        "strategies": [[]],
    }
    jwt = (await login(server))["jwt"]
    _, body = await call(server, "GET", "/_me", token=jwt)
    assert body["result"]["_id"] == server.user_id()
    _, body = await call(server, "GET", "/_me", params={"jwt": jwt})
    assert body["result"]["_id"] == server.user_id()


async def test_pre_2_14_tokens_have_no_prefix() -> None:
    async with FakeIllumass(token_prefixes=False) as server:
        jwt = (await login(server))["jwt"]
        assert jwt.startswith("eyJ")
        assert (await call(server, "GET", "/_me", token=jwt))[0] == 200
        key = await create(server, jwt, refresh="false")  # a cache lookup: no refresh to wait for
        assert key["_source"]["token"].startswith("eyJ")
        assert (await call(server, "GET", "/_me", token=key["_source"]["token"]))[0] == 200


# -- API keys: create, delete -----------------------------------------------------------------------


async def test_create_api_key_shape_and_fingerprint(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await call(
        server,
        "POST",
        "/api-keys/_create",
        token=jwt,
        json={"description": "d"},
        params={"_id": "k1", "expiresIn": "1h"},
    )
    assert status == 200 and set(body) == ENVELOPE_KEYS
    result = body["result"]
    assert result["_id"] == "k1"
    source = result["_source"]
    assert source["token"].startswith("kapikey-")
    assert list(claims(source["token"]) or {}) == ["_id", "iat", "exp"]
    assert source["fingerprint"] == hashlib.sha256(source["token"].encode()).hexdigest()
    assert source["ttl"] == 3_600_000 and source["userId"] == server.user_id()
    assert set(source["_kuzzle_info"]) == {"author", "createdAt", "updatedAt", "updater"}


async def test_api_keys_never_expire_by_default() -> None:
    # Kuzzle's createApiKey default is -1; Illumass documents 1h, which the switch models.
    for default, ttl in (("-1", -1), ("1h", 3_600_000)):
        async with FakeIllumass(api_key_default_expires_in=default, refresh_interval=0) as server:
            source = (await create(server, (await login(server))["jwt"]))["_source"]
            assert source["ttl"] == ttl
            assert (source["expiresAt"] == -1) == (ttl == -1)
            assert ("exp" in (claims(source["token"]) or {})) == (ttl != -1)


async def test_create_errors(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    args: dict[str, Any] = {"token": jwt, "params": {"_id": "same"}}
    assert (await call(server, "POST", "/api-keys/_create", json={"description": "a"}, **args))[0] == 200
    status, body = await call(server, "POST", "/api-keys/_create", json={"description": "a"}, **args)
    assert error_of(body) == (400, "services.storage.document_already_exists", 16842769)
    assert status == 400
    # The description is checked before the lifetime, the lifetime before the _id.
    status, body = await call(
        server, "POST", "/api-keys/_create", token=jwt, json={}, params={"expiresIn": "0", "_id": "same"}
    )
    assert (status, body["error"]["id"], body["error"]["props"]) == (
        400,
        "api.assert.missing_argument",
        ["body.description"],
    )
    status, body = await call(
        server,
        "POST",
        "/api-keys/_create",
        token=jwt,
        json={"description": "a"},
        params={"expiresIn": "0", "_id": "same"},
    )
    assert (status, body["error"]["id"]) == (400, "api.assert.invalid_argument")
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": 5})
    assert (status, body["error"]["id"]) == (400, "api.assert.invalid_type")
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt)
    assert (status, body["error"]["id"]) == (400, "api.assert.body_required")
    status, body = await call(server, "POST", "/api-keys/_create", json={"description": "a"})
    assert (status, body["error"]["id"]) == (401, "security.rights.unauthorized")
    status, body = await call(
        server, "POST", "/api-keys/_create", token=jwt, json={"description": "x"}, params={"_id": ""}
    )
    assert status == 200 and len(body["result"]["_id"]) == 36  # an empty _id is generated


async def test_delete_and_twin_keys(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    key = await create(server, jwt, _id="k1")
    key_token = key["_source"]["token"]
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200
    status, body = await call(server, "DELETE", "/api-keys/k1", token=jwt)
    assert status == 200 and body["result"] == {"_id": "k1"}
    status, body = await call(server, "GET", "/_me", token=key_token)
    assert (status, body["error"]["id"]) == (401, "security.token.invalid")
    status, body = await call(server, "DELETE", "/api-keys/k1", token=jwt)
    assert body["error"]["message"] == 'Document "k1" not found in "kuzzle":"api-keys".'
    assert error_of(body) == (404, "services.storage.not_found", 16842763) and status == 404
    # Twins (same token): deleting one leaves the token valid while the other exists.
    for _ in range(100):
        a, b = await asyncio.gather(create(server, jwt, expiresIn="2h"), create(server, jwt, expiresIn="2h"))
        if a["_source"]["token"] == b["_source"]["token"]:
            break
    else:
        pytest.fail("never two creates in the same second")
    twin = a["_source"]["token"]
    assert (await call(server, "DELETE", f"/api-keys/{a['_id']}", token=jwt))[0] == 200
    assert (await call(server, "GET", "/_me", token=twin))[0] == 200
    assert (await call(server, "DELETE", f"/api-keys/{b['_id']}", token=jwt))[0] == 200
    assert (await call(server, "GET", "/_me", token=twin))[0] == 401


async def test_delete_another_users_key() -> None:
    users = {"a@example.com": "pa", "b@example.com": "pb"}
    async with FakeIllumass(users, refresh_interval=0) as server:
        _, body = await call(server, "POST", "/login", json={"email": "a@example.com", "password": "pa"})
        a = body["result"]["jwt"]
        _, body = await call(server, "POST", "/login", json={"email": "b@example.com", "password": "pb"})
        b = body["result"]["jwt"]
        await create(server, a, _id="mine")
        status, body = await call(server, "DELETE", "/api-keys/mine", token=b)
        assert status == 404 and body["error"]["props"] == ["mine"]
        assert (
            body["error"]["message"]
            == f'ApiKey "mine" not found for user "{server.user_id("b@example.com")}".'
        )
        status, body = await call(
            server, "POST", "/api-keys/_create", token=b, json={"description": "x"}, params={"_id": "mine"}
        )
        assert body["error"]["id"] == "services.storage.document_already_exists"  # ids are global
        assert await ids(server, b) == []


# -- API-key verification: the first 10 keys --------------------------------------------------------


async def distinct_keys(server: FakeIllumass, jwt: str, count: int) -> list[str]:
    """``count`` keys with distinct tokens (lifetimes a second apart), created in order."""
    return [
        (await create(server, jwt, _id=f"k{i}", expiresIn=f"{3600 + i}s"))["_source"]["token"]
        for i in range(count)
    ]


async def test_api_key_verification_looks_at_the_first_10_keys(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    tokens = await distinct_keys(server, jwt, 12)
    statuses = [(await call(server, "GET", "/_me", token=t))[0] for t in tokens]
    assert statuses == [200] * 10 + [401, 401]
    assert [server.accepts(t) for t in tokens] == [True] * 10 + [False, False]
    _, body = await call(server, "GET", "/_me", token=tokens[11])
    assert error_of(body) == (401, "security.token.invalid", 117506049)
    # Expired keys keep their place; a deleted key frees it.
    assert (await call(server, "DELETE", "/api-keys/k0", token=jwt))[0] == 200
    assert (await call(server, "GET", "/_me", token=tokens[10]))[0] == 200
    assert (await call(server, "GET", "/_me", token=tokens[11]))[0] == 401


async def test_api_key_cap_switch() -> None:
    async with FakeIllumass(api_key_cap=None, refresh_interval=0) as server:
        jwt = (await login(server))["jwt"]
        tokens = await distinct_keys(server, jwt, 12)
        assert [(await call(server, "GET", "/_me", token=t))[0] for t in tokens] == [200] * 12
    async with FakeIllumass(api_key_cap=2, refresh_interval=0) as server:
        jwt = (await login(server))["jwt"]
        tokens = await distinct_keys(server, jwt, 3)
        assert [server.accepts(t) for t in tokens] == [True, True, False]


# -- near-real-time index ---------------------------------------------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Let the server (on this loop) run until ``condition()`` holds."""
    while not condition():  # noqa: ASYNC110 - the state is the server's, not an event we own
        await asyncio.sleep(0.001)


async def wait_stored(server: FakeIllumass, key_id: str, present: bool = True) -> None:
    await until(lambda: (key_id in server.api_keys) == present)


async def test_create_waits_for_the_refresh_by_default() -> None:
    async with FakeIllumass(refresh_interval=3600) as server:  # no tick during the test
        assert server.refresh_interval == 3600
        jwt = (await login(server))["jwt"]
        for value in (None, "wait_for", "true", "False", "", "null"):
            params = {"_id": f"w-{value}"} | ({} if value is None else {"refresh": value})
            task = asyncio.create_task(create(server, jwt, **params))
            await wait_stored(server, params["_id"])
            assert not task.done()  # stored (GET by id sees it), waiting for the refresh
            assert params["_id"] not in await ids(server, jwt)
            server.refresh()
            key = await task
            assert key["_id"] in await ids(server, jwt)
            assert (await call(server, "GET", "/_me", token=key["_source"]["token"]))[0] == 200


async def test_refresh_false_is_searchable_at_the_next_tick() -> None:
    async with FakeIllumass(refresh_interval=3600) as server:
        jwt = (await login(server))["jwt"]
        key = await create(server, jwt, _id="nrt", refresh="false")
        token = key["_source"]["token"]
        assert await ids(server, jwt) == []
        status, body = await call(server, "GET", "/_me", token=token)
        assert (status, body["error"]["id"]) == (401, "security.token.invalid")
        # Real-time by id: the _id is taken, and the key can be deleted, at once.
        status, body = await call(
            server, "POST", "/api-keys/_create", token=jwt, json={"description": "x"}, params={"_id": "nrt"}
        )
        assert body["error"]["id"] == "services.storage.document_already_exists"
        server.refresh()
        assert await ids(server, jwt) == ["nrt"]
        assert (await call(server, "GET", "/_me", token=token))[0] == 200


async def test_deletes_are_not_refreshed_by_default() -> None:
    async with FakeIllumass(refresh_interval=3600) as server:
        jwt = (await login(server))["jwt"]
        key = await create(server, jwt, _id="gone", refresh="false")
        server.refresh()
        assert (await call(server, "DELETE", "/api-keys/gone", token=jwt))[0] == 200
        assert await ids(server, jwt) == ["gone"]  # still listed
        # Verification still finds it in the index, then fails to load it: 404, not 401.
        status, body = await call(server, "GET", "/_me", token=key["_source"]["token"])
        assert (status, body["error"]["id"], body["error"]["props"]) == (
            404,
            "services.storage.not_found",
            ["gone", "kuzzle", "api-keys"],
        )
        status, body = await call(server, "POST", "/_checkToken", json={"token": key["_source"]["token"]})
        assert status == 404
        server.refresh()
        assert await ids(server, jwt) == []
        assert (await call(server, "GET", "/_me", token=key["_source"]["token"]))[0] == 401
        # refresh=wait_for on delete waits for the refresh.
        await create(server, jwt, _id="gone2", refresh="false")
        server.refresh()
        task = asyncio.create_task(
            call(server, "DELETE", "/api-keys/gone2", token=jwt, params={"refresh": "wait_for"})
        )
        await wait_stored(server, "gone2", present=False)
        assert not task.done()
        server.refresh()
        assert (await task)[0] == 200
        assert await ids(server, jwt) == []


async def test_refresh_ticks_publish_writes() -> None:
    # A short interval: a default create answers at the tick, so it is searchable on return.
    async with FakeIllumass(refresh_interval=0.02) as server:
        jwt = (await login(server))["jwt"]
        for i in range(3):
            key = await create(server, jwt, _id=f"t{i}")
            assert key["_id"] in await ids(server, jwt)
        await create(server, jwt, _id="later", refresh="false")
        await asyncio.sleep(0.05)  # past the next tick, which publishes it: no refresh() call
        assert "later" in await ids(server, jwt)


# -- search -----------------------------------------------------------------------------------------


async def test_search_pages_and_total_counts_the_page(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    for i in range(5):
        await create(server, jwt, f"key {i}")
    status, body = await search(server, jwt, {}, **{"from": "3", "size": "10"})
    assert status == 200
    assert body["result"]["total"] == 2 == len(body["result"]["hits"])
    hit = body["result"]["hits"][0]
    assert set(hit) == {"_id", "_source"}
    assert set(hit["_source"]) == {"description", "expiresAt", "fingerprint", "ttl", "userId"}
    assert len(await ids(server, jwt)) == 5
    assert len(await ids(server, jwt, None, size="2")) == 2
    assert len(await ids(server, jwt, None, size="2abc")) == 2  # parseFloat
    for size in ("x", "1.5", ""):
        status, body = await search(server, jwt, {}, size=size)
        assert (status, body["error"]["id"], body["error"]["props"]) == (
            400,
            "api.assert.invalid_type",
            ["size", "integer"],
        )
    status, body = await search(server, jwt, {}, lang="sql")
    assert (status, body["error"]["id"]) == (400, "api.assert.invalid_argument")


async def test_fingerprint_is_not_searchable(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    key = await create(server, jwt)
    fingerprint = key["_source"]["fingerprint"]
    for query in (
        {"term": {"fingerprint": fingerprint}},
        {"match": {"fingerprint": fingerprint}},
        {"exists": {"field": "fingerprint"}},
        {"prefix": {"fingerprint": fingerprint[:8]}},
        {"term": {"_kuzzle_info.author": server.user_id()}},
    ):
        assert await ids(server, jwt, query) == [], query
    assert await ids(server, jwt, {"exists": {"field": "ttl"}}) == [key["_id"]]


async def test_search_dsl(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    keys = [
        await create(server, jwt, f"Key number {i}", _id=f"k{i}", expiresIn=f"{3600 + i}s") for i in range(6)
    ]
    await create(server, jwt, "never", _id="never", expiresIn="-1")
    at = [k["_source"]["expiresAt"] for k in keys]
    assert await ids(server, jwt) == ["k0", "k1", "k2", "k3", "k4", "k5", "never"]  # insertion order
    cases: list[tuple[Any, list[str]]] = [
        ({"match_all": {}}, ["k0", "k1", "k2", "k3", "k4", "k5", "never"]),
        ({"term": {"_id": "k3"}}, ["k3"]),
        ({"ids": {"values": ["k4", "k1", "zz"]}}, ["k1", "k4"]),
        ({"terms": {"_id": ["k2", "k5"]}}, ["k2", "k5"]),
        ({"term": {"userId": server.user_id()}}, ["k0", "k1", "k2", "k3", "k4", "k5", "never"]),
        ({"range": {"expiresAt": {"gt": at[1], "lte": at[3]}}}, ["k2", "k3"]),
        ({"range": {"expiresAt": {"gte": at[4]}}}, ["k4", "k5"]),
        ({"range": {"expiresAt": {"lt": at[1]}}}, ["k0", "never"]),
        ({"range": {"ttl": {"gte": 3_602_000, "lt": 3_604_000}}}, ["k2", "k3"]),
        ({"term": {"ttl": 3_605_000}}, ["k5"]),
        ({"term": {"expiresAt": -1}}, ["never"]),
        ({"match": {"description": "NUMBER 2"}}, ["k0", "k1", "k2", "k3", "k4", "k5"]),
        ({"match": {"description": {"query": "number 2", "operator": "and"}}}, ["k2"]),
        ({"term": {"description": "key"}}, ["k0", "k1", "k2", "k3", "k4", "k5"]),
        ({"term": {"description": "Key"}}, []),  # a term is not analysed; text is lowercased
        (
            {
                "bool": {
                    "must": [{"match": {"description": "key"}}],
                    "must_not": {"ids": {"values": ["k0"]}},
                    "filter": [{"range": {"ttl": {"lt": 3_603_000}}}],
                }
            },
            ["k1", "k2"],
        ),
        ({"bool": {"should": [{"term": {"_id": "k1"}}, {"term": {"_id": "k4"}}]}}, ["k1", "k4"]),
        (
            {"bool": {"must": {"match_all": {}}, "should": {"term": {"_id": "k1"}}}},
            ["k0", "k1", "k2", "k3", "k4", "k5", "never"],
        ),
        ({"bool": {"must": {"bool": {"should": [{"ids": {"values": ["k2"]}}]}}}}, ["k2"]),
        ({"nested": {"path": "x", "query": {"term": {"_id": "k0"}}}}, ["k0"]),
        ({"constant_score": {"filter": {"term": {"_id": "k5"}}}}, ["k5"]),
        ({"match_none": {}}, []),
    ]
    for query, expected in cases:
        assert await ids(server, jwt, query, size="100") == expected, query
    assert await ids(server, jwt, [], size="100") == await ids(server, jwt, None, size="100")
    assert await ids(server, jwt, {"equals": {"_id": "k3"}}, lang="koncorde") == ["k3"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"foo": {"x": 1}}, "unknown query [foo]"),
        ({"query": {"match_all": {}}}, "unknown query [query]"),  # the body is the query itself
        ({"sort": ["ttl"]}, "unknown query [sort]"),
        ({"term": {"_id": "a"}, "match_all": {}}, "[_na] query malformed, must start with start_object"),
        ([{"match_all": {}}], "[_na] query malformed, must start with start_object"),
        ({"bool": {"must": [{"nope": {}}]}}, "unknown query [nope]"),
    ],
)
async def test_search_refuses_bad_queries(server: FakeIllumass, query: Any, message: str) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await search(server, jwt, query)
    assert status == 400
    assert body["error"] == {
        "code": 16842785,
        "id": "services.storage.unexpected_bad_request",
        "message": message,
        "props": [message],
        "status": 400,
    }


@pytest.mark.parametrize(
    ("params", "window"), [({"size": "10001"}, 10001), ({"from": "9999", "size": "2"}, 10001)]
)
async def test_result_window(server: FakeIllumass, params: dict[str, str], window: int) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await search(server, jwt, {}, **params)
    assert error_of(body) == (400, "services.storage.unexpected_bad_request", 16842785) and status == 400
    assert body["error"]["message"] == (
        f"Result window is too large, from + size must be less than or equal to: [10000] but was [{window}]. "
        "See the scroll api for a more efficient way to request large data sets. This limit can be set "
        "by changing the [index.max_result_window] index level setting."
    )
    assert (await search(server, jwt, {}, size="10000"))[0] == 200
    assert (await search(server, jwt, {}, **{"from": "10000", "size": "0"}))[0] == 200


async def test_search_many_keys_by_expiry_partitions() -> None:
    # Paging through one query scans the keys once, not once per page.
    async with FakeIllumass(refresh_interval=0) as server:
        jwt = (await login(server))["jwt"]
        user = server.user_id()
        for i in range(3000):
            server.index.add(_stored(i, user))
        seen: list[str] = []
        for low in range(0, 3000, 1000):
            query = {"range": {"expiresAt": {"gte": low, "lt": low + 1000}}}
            for page in range(0, 1000, 250):
                seen += await ids(server, jwt, query, **{"from": str(page), "size": "250"})
        assert seen == [f"s{i}" for i in range(3000)]


def _stored(i: int, user_id: str) -> StoredApiKey:
    token = f"kapikey-{i}"
    return StoredApiKey(
        f"s{i}", user_id, "bulk", token, hashlib.sha256(token.encode()).hexdigest(), i, 1000, 0
    )


# -- HTTP details -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status", "error_id", "message"),
    [
        ("application/json", 200, None, None),
        ("application/json; charset=utf-8", 200, None, None),
        ("application/json;charset=UTF-8", 200, None, None),
        ("application/x-www-form-urlencoded", 200, None, None),
        ("multipart/form-data", 200, None, None),
        (
            "text/plain",
            400,
            "network.http.unsupported_content",
            'Invalid request content-type. Expected "application/json", got: "text/plain".',
        ),
        (
            "application/octet-stream",
            400,
            "network.http.unsupported_content",
            'Invalid request content-type. Expected "application/json", got: "application/octet-stream".',
        ),
        (
            "application/JSON",
            400,
            "network.http.unsupported_content",
            'Invalid request content-type. Expected "application/json", got: "application/JSON".',
        ),
        (
            "text/plain; charset=latin1",
            400,
            "network.http.unsupported_content",
            'Invalid request content-type. Expected "application/json", got: "text/plain".',
        ),
        (
            "application/json; charset=latin1",
            400,
            "network.http.unsupported_charset",
            'Unsupported request charset. Expected "utf-8", got: "latin1".',
        ),
        (
            "application/json ; charset=UTF8",
            400,
            "network.http.unsupported_charset",
            'Unsupported request charset. Expected "utf-8", got: "utf8".',
        ),
    ],
)
async def test_request_content_types(
    server: FakeIllumass, content_type: str, status: int, error_id: str | None, message: str | None
) -> None:
    jwt = (await login(server))["jwt"]
    # With and without a body: Kuzzle checks the header either way. ("{}" is no empty form.)
    bodies = (b"{}", b"") if error_id or "json" in content_type else (b"",)
    for data in bodies:
        got, body = await call(
            server, "POST", "/api-keys/_search", token=jwt, data=data, headers={"Content-Type": content_type}
        )
        assert got == status, body
        if error_id is None:
            assert body["result"] == {"hits": [], "total": 0}
        else:
            # A bare error object: no envelope, no requestId.
            assert body == {
                "code": body["code"],
                "id": error_id,
                "message": message,
                "props": [message.split('"')[-2]],  # type: ignore[union-attr]
                "status": 400,
            }


async def test_bodies_without_a_content_type(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    # No Content-Type at all: Kuzzle reads the body as JSON.
    status, body = await call(
        server,
        "POST",
        "/api-keys/_create",
        token=jwt,
        data=b'{"description": "raw"}',
        skip_auto_headers=("Content-Type",),
    )
    assert status == 200 and body["result"]["_source"]["description"] == "raw"
    # aiohttp labels a bodiless POST application/octet-stream, which Kuzzle refuses.
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.url + "/logout", headers={"Authorization": f"Bearer {jwt}"}) as resp,
    ):
        assert resp.status == 400 and (await resp.json())["id"] == "network.http.unsupported_content"


async def test_form_bodies(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    form = aiohttp.FormData({"description": "from a form"})
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + "/api-keys/_create", data=form, headers={"Authorization": f"Bearer {jwt}"}
        ) as resp,
    ):
        assert (await resp.json())["result"]["_source"]["description"] == "from a form"
    multipart = aiohttp.FormData({"description": "multi"})
    multipart.add_field("file", b"xyz", filename="f.txt", content_type="text/plain")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + "/api-keys/_create", data=multipart, headers={"Authorization": f"Bearer {jwt}"}
        ) as resp,
    ):
        assert (await resp.json())["result"]["_source"]["description"] == "multi"


async def test_bare_error_bodies(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await call(server, "POST", "/api-keys/_search", token=jwt, data=b"{nope", headers=JSON)
    assert status == 400 and "result" not in body
    assert body == {
        "code": 50397196,
        "id": "network.http.body_parse_failed",
        "message": "Unable to convert the HTTP body to JSON: {nope",
        "props": ["{nope"],
        "status": 400,
    }
    big = io.BytesIO(b'{"description": "' + b"x" * (1024 * 1024) + b'"}')
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt, data=big, headers=JSON)
    assert status == 413 and body["id"] == "network.http.request_too_large" and body["code"] == 50397185
    # JSON that is not an object or array: an envelope with no route and an id-less error.
    status, body = await call(server, "POST", "/api-keys/_search", token=jwt, data=b'"x"', headers=JSON)
    assert status == 400 and body["action"] is None and body["controller"] is None
    assert body["error"] == {"message": 'Attribute body must be of type "object" or "array"', "status": 400}


@pytest.mark.parametrize(
    ("method", "path", "kuzzle_path"),
    [
        ("GET", "/nope", "/nope"),
        ("GET", "/api-keys/_search", "/api-keys/_search"),  # a wrong method is an unknown route
        ("PATCH", "/_me", "/_me"),
        ("GET", "/_checkToken", "/_checkToken"),
        ("DELETE", "/api-keys/", "/api-keys"),
    ],
)
async def test_unknown_routes(server: FakeIllumass, method: str, path: str, kuzzle_path: str) -> None:
    status, body = await call(server, method, path)
    assert status == 404 and set(body) == ENVELOPE_KEYS
    assert body["action"] is None and body["controller"] is None
    assert body["error"] == {
        "code": 50397191,
        "id": "network.http.url_not_found",
        "message": f"API URL not found: {kuzzle_path}.",
        "props": [kuzzle_path],
        "status": 404,
    }


async def test_response_headers(server: FakeIllumass) -> None:
    rid = {"X-Kuzzle-Request-Id": "rid-1"}
    async with aiohttp.ClientSession() as session, session.get(server.url + "/_me", headers=rid) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert resp.headers["X-Kuzzle-Request-Id"] == "rid-1"
        assert (await resp.json())["requestId"] == "rid-1"
        assert "Retry-After" not in resp.headers
        # Through the /v4 front, Kuzzle's `Connection: close` is dropped (a hop-by-hop header).
        assert resp.headers.get("Connection", "keep-alive").lower() == "keep-alive"
    async with (
        FakeIllumass(keep_alive=False) as bare,
        aiohttp.ClientSession() as session,
        session.get(bare.url + "/_me") as resp,
    ):
        assert resp.headers["Connection"] == "close"  # Kuzzle itself, without a proxy


# -- faults and counters ----------------------------------------------------------------------------


async def test_faults_and_counters(server: FakeIllumass) -> None:
    server.faults.add(
        "status", "login", status=429, error_id="api.process.too_many_requests", retry_after="3"
    )
    status, body = await call(
        server, "POST", "/login", json={"email": server.email, "password": server.password}
    )
    assert (status, body["error"]["id"]) == (429, "api.process.too_many_requests")
    server.faults.add("html_502", "login")
    status, body = await call(
        server, "POST", "/login", json={"email": server.email, "password": server.password}
    )
    assert status == 502 and "<html>" in body
    jwt = (await login(server))["jwt"]
    server.faults.add("drop_after", "createApiKey")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "lost"})
    assert [k.description for k in server.keys_of()] == ["lost"]  # the action ran
    server.faults.add("drop_before", "createApiKey")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "never"})
    assert len(server.keys_of()) == 1  # it did not
    server.faults.add("truncated_json", "createApiKey")
    status, text = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "cut"})
    assert status == 200 and isinstance(text, str)
    server.faults.add("bare_json", "createApiKey")
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "bare"})
    assert body == {"unexpected": True}
    assert len(server.keys_of()) == 3
    assert server.stats.requests["createApiKey"] == 4
    assert server.stats.requests["login"] == 3
    assert server.stats.logins == 1
    assert server.faults.fired() == 6


async def test_probabilistic_faults_are_seeded() -> None:
    async def run() -> list[int]:
        async with FakeIllumass(seed=7) as server:
            server.faults.add("status", probability=0.5)
            return [(await call(server, "POST", "/_checkToken", json={}))[0] for _ in range(20)]

    first, second = await run(), await run()
    assert first == second and set(first) == {200, 503}


async def test_high_water_mark_with_latency() -> None:
    async with FakeIllumass(latency=0.05) as server:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call, server, "POST", "/_checkToken")
        assert time.perf_counter() - started >= 0.05
        assert server.stats.max_in_flight == 5
        assert server.stats.in_flight == 0


async def test_high_water_mark_without_latency(server: FakeIllumass) -> None:
    # Requests sent together on warm connections reach the server in the same turn of the loop:
    # all are counted, although each is answered without any latency.
    async def check(session: aiohttp.ClientSession) -> None:
        async with session.post(server.url + "/_checkToken", json={}) as resp:
            assert resp.status == 200

    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(check(session) for _ in range(20)))  # opens the connections
        server.stats.max_in_flight = 0
        await asyncio.gather(*(check(session) for _ in range(20)))
    assert 1 < server.stats.max_in_flight <= 20 and server.stats.in_flight == 0
    # One request held at the server (a delay fault) while another runs to completion.
    server.stats.max_in_flight = 0
    server.faults.add("delay", "getCurrentUser", delay=0.2)
    held = asyncio.create_task(call(server, "GET", "/_me"))
    await until(lambda: server.stats.in_flight == 1)
    assert (await call(server, "POST", "/_checkToken", json={}))[0] == 200
    assert server.stats.max_in_flight == 2
    assert (await held)[0] == 200
    assert server.stats.in_flight == 0


def test_threaded_server_and_forget_sessions() -> None:
    with FakeIllumass(refresh_interval=3600) as server:
        assert server.url.endswith("/v4")
        _, body = http("POST", server.url + "/login", {"email": server.email, "password": server.password})
        jwt = body["result"]["jwt"]
        assert http("GET", server.url + "/_me", token=jwt)[0] == 200
        _, body = http(
            "POST", server.url + "/api-keys/_create?refresh=false", {"description": "d"}, token=jwt
        )
        key_token = body["result"]["_source"]["token"]
        assert not server.accepts(key_token)
        server.refresh()  # from another thread than the server's
        assert server.accepts(key_token)
        server.forget_sessions()
        assert http("GET", server.url + "/_me", token=jwt)[0] == 401
        assert http("GET", server.url + "/_me", token=key_token)[0] == 200


def test_pytest_fixture(illumass_server: FakeIllumass) -> None:
    assert illumass_server.url.startswith("http://127.0.0.1:")


def test_module_entry_point_serves() -> None:
    with served("illumass.testing", "--user", "a@b.c:pw", "--latency", "1") as url:
        assert http("POST", url + "/login", {"email": "a@b.c", "password": "pw"})[0] == 200


def test_module_entry_point_prints_credentials() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "illumass.testing", "--api-key-cap", "none", "--refresh-interval", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v4")
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "demo@illumass.test" in lines[1] and "demo-password" in lines[1], lines
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(10) == 0
        finally:
            proc.kill()
            proc.stdout.close()


@pytest.mark.parametrize(
    "args",
    [["--user", "no-colon"], ["--user", ":pw"], ["--api-key-cap", "many"], ["--api-key-cap", "-1"]],
)
def test_module_entry_point_refuses_bad_arguments(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        fake_main(args)
    assert exit_.value.code == 2
    assert "expected" in capsys.readouterr().err


def test_api_key_cap_values() -> None:
    assert parse_cap("none") is None and parse_cap("NONE") is None
    assert parse_cap("0") == 0 and parse_cap("25") == 25
