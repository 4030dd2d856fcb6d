"""FakeIllumass speaks Kuzzle 2.x as the reference describes; checked with plain aiohttp."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import aiohttp
import pytest

from illumass._jwt import claims
from illumass.testing import FakeIllumass

from .conftest import http, served

pytestmark = pytest.mark.anyio


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
) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=json, data=data, params=params, headers=hdrs) as resp,
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


ENVELOPE_KEYS = {
    "requestId",
    "status",
    "error",
    "controller",
    "action",
    "collection",
    "index",
    "volatile",
    "result",
}


async def test_login_envelope_and_token(server: FakeIllumass) -> None:
    status, body = await call(
        server, "POST", "/login", json={"email": server.email, "password": server.password}
    )
    assert status == 200
    assert set(body) == ENVELOPE_KEYS
    assert body["controller"] == "auth" and body["action"] == "login" and body["error"] is None
    result = body["result"]
    assert result["_id"] == server.user_id()
    assert result["ttl"] == 3_600_000  # Illumass default: 1h
    assert result["jwt"].startswith("kauth-")
    payload = claims(result["jwt"])
    assert payload is not None and payload["_id"] == server.user_id()
    assert payload["exp"] - payload["iat"] == 3600
    assert abs(result["expiresAt"] - (time.time() * 1000 + 3_600_000)) < 5000
    assert server.stats.logins == 1


async def test_login_bad_credentials(server: FakeIllumass) -> None:
    status, body = await call(server, "POST", "/login", json={"email": server.email, "password": "nope"})
    assert status == 401
    assert body["error"]["id"] == "plugin.strategy.missing_user"
    assert body["error"]["code"] == 67305492
    assert body["error"]["status"] == 401
    assert set(body["error"]) == {"code", "id", "message", "props", "status"}


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


async def test_login_verifies_a_sent_token(server: FakeIllumass) -> None:
    status, body = await call(
        server,
        "POST",
        "/login",
        json={"email": server.email, "password": server.password},
        token="kauth-garbage.x.y",
    )
    assert status == 401 and body["error"]["id"] == "security.token.invalid"


async def test_create_api_key_shape_and_fingerprint(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await call(
        server, "POST", "/api-keys/_create", token=jwt, json={"description": "d"}, params={"_id": "k1"}
    )
    assert status == 200
    result = body["result"]
    assert result["_id"] == "k1"
    source = result["_source"]
    assert source["token"].startswith("kapikey-")
    assert source["fingerprint"] == hashlib.sha256(source["token"].encode()).hexdigest()
    assert source["ttl"] == 3_600_000 and source["userId"] == server.user_id()
    assert "createdAt" in source["_kuzzle_info"]


async def test_create_never_expiring_key_has_no_exp(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    _, body = await call(
        server, "POST", "/api-keys/_create", token=jwt, json={"description": "d"}, params={"expiresIn": "-1"}
    )
    source = body["result"]["_source"]
    assert source["ttl"] == -1 and source["expiresAt"] == -1
    assert "exp" not in (claims(source["token"]) or {})


async def test_create_errors(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    args: dict[str, Any] = {"token": jwt, "params": {"_id": "same"}}
    assert (await call(server, "POST", "/api-keys/_create", json={"description": "a"}, **args))[0] == 200
    status, body = await call(server, "POST", "/api-keys/_create", json={"description": "a"}, **args)
    assert (status, body["error"]["id"], body["error"]["code"]) == (
        400,
        "services.storage.document_already_exists",
        16842769,
    )
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={})
    assert (status, body["error"]["id"]) == (400, "api.assert.missing_argument")
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt)
    assert (status, body["error"]["id"]) == (400, "api.assert.body_required")
    status, body = await call(server, "POST", "/api-keys/_create", json={"description": "a"})
    assert (status, body["error"]["id"]) == (401, "security.rights.unauthorized")


async def test_search_pages_and_total_counts_the_page(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    for i in range(5):
        await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": f"key {i}"})
    status, body = await call(
        server, "POST", "/api-keys/_search", token=jwt, json={}, params={"from": "3", "size": "10"}
    )
    assert status == 200
    assert body["result"]["total"] == 2 == len(body["result"]["hits"])
    hit = body["result"]["hits"][0]
    assert set(hit) == {"_id", "_source"} and "token" not in hit["_source"]
    _, body = await call(server, "POST", "/api-keys/_search", token=jwt, json={"match": {"description": "3"}})
    assert [h["_source"]["description"] for h in body["result"]["hits"]] == ["key 3"]
    fp = server.keys_of()[1].fingerprint
    _, body = await call(server, "POST", "/api-keys/_search", token=jwt, json={"term": {"fingerprint": fp}})
    assert [h["_source"]["fingerprint"] for h in body["result"]["hits"]] == [fp]
    status, body = await call(server, "POST", "/api-keys/_search", token=jwt, json={}, params={"size": "x"})
    assert (status, body["error"]["id"]) == (400, "api.assert.invalid_type")


async def test_delete_revokes(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    _, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "d"})
    key_id, key_token = body["result"]["_id"], body["result"]["_source"]["token"]
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200
    status, body = await call(server, "DELETE", f"/api-keys/{key_id}", token=jwt)
    assert status == 200 and body["result"] == {"_id": key_id}
    status, body = await call(server, "GET", "/_me", token=key_token)
    assert (status, body["error"]["id"]) == (401, "security.token.invalid")
    status, body = await call(server, "DELETE", f"/api-keys/{key_id}", token=jwt)
    assert (status, body["error"]["id"], body["error"]["code"]) == (
        404,
        "services.storage.not_found",
        16842763,
    )


async def test_logout_revokes_session_but_not_api_keys(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    _, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "d"})
    key_token = body["result"]["_source"]["token"]
    status, body = await call(server, "POST", "/logout", token=jwt)
    assert status == 200 and body["result"] == {"acknowledged": True}
    assert (await call(server, "GET", "/_me", token=jwt))[0] == 401
    assert (await call(server, "GET", "/_me", token=key_token))[0] == 200
    status, body = await call(server, "POST", "/logout")
    assert (status, body["error"]["id"]) == (401, "security.rights.unauthorized")


async def test_check_token(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    _, body = await call(server, "POST", "/_checkToken", json={"token": jwt})
    assert body["result"]["valid"] is True and body["result"]["kuid"] == server.user_id()
    _, body = await call(server, "POST", "/_checkToken", json={"token": "kauth-nope"})
    assert body["result"] == {"valid": False, "state": "Invalid token."}
    _, body = await call(server, "POST", "/_checkToken", json={})
    assert body["result"] == {"valid": True, "expiresAt": None, "kuid": "-1"}


async def test_refresh_token(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    status, body = await call(server, "POST", "/_refreshToken", token=jwt, params={"expiresIn": "2h"})
    assert status == 200 and body["result"]["ttl"] == 7_200_000 and body["result"]["jwt"] != jwt
    _, body = await call(server, "POST", "/api-keys/_create", token=jwt, json={"description": "d"})
    key_token = body["result"]["_source"]["token"]
    status, body = await call(server, "POST", "/_refreshToken", token=key_token)
    assert (status, body["error"]["id"]) == (401, "security.token.refresh_forbidden")


async def test_expiry_is_enforced_with_the_configured_id() -> None:
    for error_id in ("security.token.invalid", "security.token.expired"):
        async with FakeIllumass(expired_error_id=error_id) as server:
            result = await login(server, "1s")
            server.clock_offset = 5  # the server's clock moves past exp
            status, body = await call(server, "GET", "/_me", token=result["jwt"])
            assert (status, body["error"]["id"]) == (401, error_id)


async def test_pre_2_14_tokens_have_no_prefix() -> None:
    async with FakeIllumass(token_prefixes=False) as server:
        jwt = (await login(server))["jwt"]
        assert jwt.startswith("eyJ")
        assert (await call(server, "GET", "/_me", token=jwt))[0] == 200


async def test_bare_error_bodies(server: FakeIllumass) -> None:
    jwt = (await login(server))["jwt"]
    headers = {"Content-Type": "application/json"}
    status, body = await call(server, "POST", "/api-keys/_search", token=jwt, data=b"{nope", headers=headers)
    assert status == 400 and body["id"] == "network.http.body_parse_failed" and "result" not in body
    big = io.BytesIO(b'{"description": "' + b"x" * (1024 * 1024) + b'"}')
    status, body = await call(server, "POST", "/api-keys/_create", token=jwt, data=big, headers=headers)
    assert status == 413 and body["id"] == "network.http.request_too_large"


async def test_unknown_route(server: FakeIllumass) -> None:
    status, body = await call(server, "GET", "/nope")
    assert (status, body["error"]["id"]) == (404, "network.http.url_not_found")


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


async def test_latency_and_high_water_mark() -> None:
    import anyio

    async with FakeIllumass(latency=0.05) as server:
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call, server, "POST", "/_checkToken")
        assert time.perf_counter() - started >= 0.05
        assert server.stats.max_in_flight == 5


def test_threaded_server_and_forget_sessions() -> None:
    with FakeIllumass() as server:
        assert server.url.endswith("/v4")
        _, body = http("POST", server.url + "/login", {"email": server.email, "password": server.password})
        jwt = body["result"]["jwt"]
        assert http("GET", server.url + "/_me", token=jwt)[0] == 200
        server.forget_sessions()
        assert http("GET", server.url + "/_me", token=jwt)[0] == 401


def test_pytest_fixture(illumass_server: FakeIllumass) -> None:
    assert illumass_server.url.startswith("http://127.0.0.1:")


def test_module_entry_point_serves() -> None:
    with served("illumass.testing", "--user", "a@b.c:pw", "--latency", "1") as url:
        assert http("POST", url + "/login", {"email": "a@b.c", "password": "pw"})[0] == 200
