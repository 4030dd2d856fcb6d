"""FakeIllumass against the real Kuzzle 2.56: the same raw requests, the same answers.

Each case below is replayed, in order, against FakeIllumass (in-process, default settings, which
are meant to be the real server's) and against the real server, each prepared the same way. What
is compared: the HTTP status, the body's shape (Kuzzle envelope, bare error object as Kuzzle sends
for errors raised before routing, or other), the error id, and the set of keys of the result (plus
the number of hits for searches). Any difference fails the test unless ALLOWED names the case with
its reason; an ALLOWED case that no longer differs fails too (except harness artifacts), so the
list stays true.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import pytest

from illumass import fingerprint
from illumass.testing import FakeIllumass

from .conftest import Kuzzle, Response, raw_request

pytestmark = pytest.mark.kuzzle


FRONT_ADDS_CONTENT_TYPE = (
    "harness artifact: shared/kuzzle/v4front.py forwards with aiohttp, which adds "
    "`Content-Type: application/octet-stream` to a POST that has none, and Kuzzle refuses that; "
    "Kuzzle itself (KZ_PORT) accepts this request, as FakeIllumass does"
)

ALLOWED: dict[str, str] = {
    "no content type": FRONT_ADDS_CONTENT_TYPE,
    "bodiless, no content type": FRONT_ADDS_CONTENT_TYPE,
}
"""Cases where FakeIllumass may answer differently from the real server, and why."""


class Context(NamedTuple):
    """What a case may refer to, prepared on each server the same way."""

    url: str
    email: str
    password: str
    tokens: Mapping[str, str]


class Case(NamedTuple):
    name: str
    method: str
    path: str
    token: str | None = None  # a key of Context.tokens, or None: no Authorization
    body: Any = None  # a JSON body, or a callable(Context) giving one
    params: Mapping[str, str] | None = None
    data: bytes | None = None  # a raw body instead of JSON
    content_type: str | None = "application/json"


def creds(ctx: Context) -> dict[str, str]:
    return {"email": ctx.email, "password": ctx.password}


def token_of(name: str) -> Callable[[Context], dict[str, str]]:
    return lambda ctx: {"token": ctx.tokens[name]}


CASES: list[Case] = [
    # -- login ------------------------------------------------------------------------------
    Case("login ok", "POST", "/login", body=creds, params={"expiresIn": "1h"}),
    Case("login without expiresIn", "POST", "/login", body=creds),
    Case("login wrong password", "POST", "/login", body=lambda c: {"email": c.email, "password": "nope"}),
    Case("login unknown user", "POST", "/login", body={"email": "nobody@example.com", "password": "x"}),
    Case("login missing body", "POST", "/login", data=b"", content_type="application/json"),
    Case("login empty body", "POST", "/login", body={}),
    Case("login bad expiresIn", "POST", "/login", body=creds, params={"expiresIn": "abc"}),
    Case("login expiresIn 0", "POST", "/login", body=creds, params={"expiresIn": "0"}),
    Case("login stale bearer", "POST", "/login", token="stale", body=creds),
    Case("login valid bearer", "POST", "/login", token="session", body=creds, params={"expiresIn": "5m"}),
    # -- search (before creates, so both servers hold the same two keys) ---------------------------
    Case("search ok", "POST", "/api-keys/_search", token="session", body={}),
    Case(
        "search no body",
        "POST",
        "/api-keys/_search",
        token="session",
        data=b"",
        content_type="application/json",
    ),
    Case(
        "search paging",
        "POST",
        "/api-keys/_search",
        token="session",
        body={},
        params={"from": "1", "size": "1"},
    ),
    Case(
        "search match", "POST", "/api-keys/_search", token="session", body={"match": {"description": "other"}}
    ),
    Case(
        "search fingerprint term",
        "POST",
        "/api-keys/_search",
        token="session",
        body=lambda c: {"term": {"fingerprint": fingerprint(c.tokens["apikey"])}},
    ),
    Case(
        "search from+size over 10000",
        "POST",
        "/api-keys/_search",
        token="session",
        body={},
        params={"from": "9990", "size": "20"},
    ),
    Case("search bad size", "POST", "/api-keys/_search", token="session", body={}, params={"size": "abc"}),
    Case(
        "search fractional from",
        "POST",
        "/api-keys/_search",
        token="session",
        body={},
        params={"from": "1.5"},
    ),
    Case("search bad query", "POST", "/api-keys/_search", token="session", body={"nope": {"x": 1}}),
    Case("search body not an object", "POST", "/api-keys/_search", token="session", body=[1, 2]),
    Case("search no token", "POST", "/api-keys/_search", body={}),
    Case("search with api key", "POST", "/api-keys/_search", token="apikey", body={}),
    Case("search stale bearer", "POST", "/api-keys/_search", token="stale", body={}),
    Case("search malformed bearer", "POST", "/api-keys/_search", token="garbage", body={}),
    Case("search GET", "GET", "/api-keys/_search", token="session"),
    # -- create ----------------------------------------------------------------------------
    Case(
        "create ok",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": "new"},
        params={"expiresIn": "3h", "_id": "parity-new"},
    ),
    Case(
        "create without _id",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": "x"},
        params={"expiresIn": "5h"},
    ),
    Case(
        "create duplicate _id",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": "again"},
        params={"_id": "parity-key"},
    ),
    Case("create no description", "POST", "/api-keys/_create", token="session", body={}),
    Case(
        "create description not a string",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": 5},
    ),
    Case(
        "create no body",
        "POST",
        "/api-keys/_create",
        token="session",
        data=b"",
        content_type="application/json",
    ),
    Case(
        "create bad expiresIn",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": "x"},
        params={"expiresIn": "abc"},
    ),
    Case(
        "create refresh=false",
        "POST",
        "/api-keys/_create",
        token="session",
        body={"description": "unrefreshed"},
        params={"refresh": "false", "expiresIn": "4h"},
    ),
    Case("create no token", "POST", "/api-keys/_create", body={"description": "x"}),
    # -- delete ----------------------------------------------------------------------------
    Case("delete ok", "DELETE", "/api-keys/parity-other", token="session", params={"refresh": "wait_for"}),
    Case("delete unknown id", "DELETE", "/api-keys/no-such-key", token="session"),
    Case("delete no token", "DELETE", "/api-keys/parity-key"),
    # -- checkToken --------------------------------------------------------------------------
    Case("checkToken valid session", "POST", "/_checkToken", body=token_of("session")),
    Case("checkToken valid api key", "POST", "/_checkToken", body=token_of("apikey")),
    Case("checkToken invalid", "POST", "/_checkToken", body={"token": "not-a-token"}),
    Case("checkToken expired", "POST", "/_checkToken", body=token_of("expired")),
    Case("checkToken revoked", "POST", "/_checkToken", body=token_of("stale")),
    Case("checkToken empty body", "POST", "/_checkToken", body={}),
    Case("checkToken stale bearer", "POST", "/_checkToken", token="stale", body=token_of("session")),
    # -- _me, routes, content types ----------------------------------------------------------
    Case("_me session", "GET", "/_me", token="session"),
    Case("_me api key", "GET", "/_me", token="apikey"),
    Case("_me expired", "GET", "/_me", token="expired"),
    Case("_me no token", "GET", "/_me"),
    Case("unknown route", "GET", "/no/such/route/here", token="session"),
    Case("unknown route anonymous", "POST", "/nothing-here", body={}),
    Case(
        "wrong content type",
        "POST",
        "/api-keys/_search",
        token="session",
        data=b"{}",
        content_type="text/plain",
    ),
    Case("no content type", "POST", "/api-keys/_search", token="session", data=b"{}", content_type=None),
    Case("bodiless, no content type", "POST", "/api-keys/_search", token="session"),
    Case(
        "json with charset",
        "POST",
        "/api-keys/_search",
        token="session",
        data=b"{}",
        content_type="application/json; charset=utf-8",
    ),
    Case(
        "bodiless octet-stream",
        "POST",
        "/api-keys/_search",
        token="session",
        data=b"",
        content_type="application/octet-stream",
    ),
    Case(
        "broken json",
        "POST",
        "/api-keys/_search",
        token="session",
        data=b"{not json",
        content_type="application/json",
    ),
    # -- logout last: it revokes --------------------------------------------------------------
    Case("logout no token", "POST", "/logout", body={}),
    Case("logout stale bearer", "POST", "/logout", token="stale", body={}),
    Case("logout with api key", "POST", "/logout", token="apikey", body={}),
    Case("logout ok", "POST", "/logout", token="throwaway", body={}),
    Case("logout bodiless", "POST", "/logout", token="session", data=b"", content_type="application/json"),
    Case("after logout", "GET", "/_me", token="throwaway"),
]


def prepare(url: str, email: str, password: str) -> Context:
    """Tokens of every kind, and two API keys (`parity-key`, `parity-other`), made by raw requests.

    Every token gets its own lifetime: Kuzzle signs the same claims in the same second into the
    same string, and logging one out would revoke its twin.
    """

    def login(expires_in: str) -> str:
        answer = raw_request(
            url,
            "POST",
            "/login",
            body={"email": email, "password": password},
            params={"expiresIn": expires_in},
        )
        assert answer.status == 200, answer.body
        return str(answer.body["result"]["jwt"])

    session, stale, throwaway, expired = login("1h"), login("61m"), login("62m"), login("500ms")
    assert raw_request(url, "POST", "/logout", token=stale, body={}).status == 200
    keys = {}
    for key_id, life in (("parity-key", "1d"), ("parity-other", "2d")):
        made = raw_request(
            url,
            "POST",
            "/api-keys/_create",
            token=session,
            body={"description": key_id.replace("-", " ")},
            params={"_id": key_id, "expiresIn": life},
        )
        assert made.status == 200, made.body
        keys[key_id] = made.body["result"]["_source"]["token"]
    tokens = {
        "session": session,
        "stale": stale,
        "throwaway": throwaway,
        "expired": expired,
        "apikey": keys["parity-key"],
        "garbage": "kauth-not.a.jwt",
    }
    return Context(url, email, password, tokens)


def signature(answer: Response) -> dict[str, Any]:
    """What must match: status, body shape, error id, result keys (and hits on a page)."""
    body = answer.body
    sig: dict[str, Any] = {"status": answer.status}
    if (
        isinstance(body, dict)
        and "status" in body
        and ("result" in body or "error" in body)
        and "requestId" in body
    ):
        sig["shape"] = "envelope"
        error = body.get("error") or {}
        sig["error"] = error.get("id")
        result = body.get("result")
        sig["result"] = sorted(result) if isinstance(result, dict) else type(result).__name__
        if isinstance(result, dict) and isinstance(result.get("hits"), list):
            sig["hits"] = len(result["hits"])
    elif isinstance(body, dict) and "id" in body and "message" in body:
        sig["shape"] = "bare error"
        sig["error"] = body["id"]
    else:
        sig["shape"] = "other"
        sig["body"] = answer.raw[:80].decode(errors="replace")
    return sig


def replay(ctx: Context) -> dict[str, dict[str, Any]]:
    seen = {}
    for case in CASES:
        body = case.body(ctx) if callable(case.body) else case.body
        answer = raw_request(
            ctx.url,
            case.method,
            case.path,
            body=body,
            data=case.data,
            token=None if case.token is None else ctx.tokens[case.token],
            params=case.params,
            content_type=case.content_type,
        )
        seen[case.name] = signature(answer)
    return seen


def test_cases_are_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)
    assert set(ALLOWED) <= {c.name for c in CASES}, "ALLOWED names a case that does not exist"


def test_fake_matches_real_server(kuzzle: Kuzzle) -> None:
    account = kuzzle.fresh_account()
    real = replay(prepare(kuzzle.url, account.email, account.password))
    with FakeIllumass({"parity@example.com": "parity-pass"}) as fake:
        faked = replay(prepare(fake.url, "parity@example.com", "parity-pass"))
    differ = {name for name in real if real[name] != faked[name]}
    unexpected = sorted(differ - set(ALLOWED))
    # Front artifacts may or may not show, depending on how FakeIllumass reads a missing type.
    stale = sorted(n for n, why in ALLOWED.items() if n not in differ and why != FRONT_ADDS_CONTENT_TYPE)
    report = "\n".join(
        f"{name}:\n    real: {json.dumps(real[name])}\n    fake: {json.dumps(faked[name])}"
        for name in sorted(differ)
    )
    assert not unexpected, f"FakeIllumass differs from the real server in {unexpected}:\n{report}"
    assert not stale, f"these ALLOWED cases no longer differ: remove them from ALLOWED: {stale}"
