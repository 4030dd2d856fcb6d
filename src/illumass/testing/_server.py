"""FakeIllumass: a local server that speaks the Illumass v4 API as Kuzzle 2.x does."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import attrs
import orjson
from aiohttp import web

from .._duration import parse_ms
from ._faults import AFTER_ACTION, Faults
from ._tokens import TokenSigner

__all__ = ["FakeIllumass", "KuzzleError", "SeenRequest", "Stats", "StoredApiKey"]

DEFAULT_USERS: Mapping[str, str] = {"demo@illumass.test": "demo-password"}
_MAX_BODY = 1024 * 1024  # Kuzzle's server.maxRequestSize "1MB"
_AUTH_PREFIX = "kauth-"
_APIKEY_PREFIX = "kapikey-"
_GRACE_MS = 1000.0


class KuzzleError(Exception):
    """A Kuzzle error: HTTP status, error id, numeric code and message."""

    def __init__(self, status: int, error_id: str, code: int, message: str, *, bare: bool = False):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.code = code
        self.message = message
        self.bare = bare
        """Sent as a bare error object, as Kuzzle does for errors raised before routing."""

    def to_json(self) -> dict[str, Any]:
        """The error object as Kuzzle serialises it."""
        return {
            "code": self.code,
            "id": self.error_id,
            "message": self.message,
            "props": [],
            "status": self.status,
        }


def _invalid_token() -> KuzzleError:
    return KuzzleError(401, "security.token.invalid", 117506049, "Invalid token.")


def _expired_token() -> KuzzleError:
    return KuzzleError(401, "security.token.expired", 117506054, "Token expired")


def _unauthorized(action: str) -> KuzzleError:
    return KuzzleError(
        401,
        "security.rights.unauthorized",
        117637121,
        f'Unauthorized: authentication required to execute the action "auth:{action}".',
    )


def _bad_expires_in() -> KuzzleError:
    return KuzzleError(
        400,
        "api.assert.invalid_argument",
        33619970,
        'Invalid argument "expiresIn". Expected: a number of milliseconds, or a parsable timespan string',
    )


def _invalid_type(name: str, expected: str) -> KuzzleError:
    return KuzzleError(
        400,
        "api.assert.invalid_type",
        33619969,
        f'Wrong type for argument "{name}" (expected: {expected})',
    )


@attrs.define
class StoredApiKey:
    """An API key as the server stores it (the token is kept here only so tests can check it)."""

    id: str
    user_id: str
    description: str
    token: str
    fingerprint: str
    expires_at: float
    ttl: float
    created_at: int


@attrs.define
class _Session:
    user_id: str
    expires_at: float | None  # epoch ms on the server's clock; None: never
    api_key_id: str | None = None


@attrs.frozen
class SeenRequest:
    """One request as the server received it (the bearer token itself is not kept)."""

    action: str
    method: str
    path: str
    query: dict[str, str]
    authorized: bool
    headers: dict[str, str]
    at: float
    """``time.monotonic()`` when it arrived."""


@attrs.define
class Stats:
    """What the server has seen: requests per Kuzzle action, logins, concurrency high-water mark,
    and the last 1,000 requests."""

    requests: collections.Counter[str] = attrs.field(factory=collections.Counter)
    logins: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    recent: collections.deque[SeenRequest] = attrs.field(factory=lambda: collections.deque(maxlen=1000))


Handler = Callable[[web.Request, "_Call"], Awaitable[Any]]


@attrs.define
class _Call:
    body: Any
    query: Mapping[str, str]


class FakeIllumass(AbstractContextManager["FakeIllumass"]):
    """An Illumass-compatible server for tests, demos and benchmarks.

    ``async with FakeIllumass() as server`` runs it on the current event loop;
    ``with FakeIllumass() as server`` runs it on a background thread, for synchronous code.
    ``server.url`` is the base URL (ending in ``/v4``) to give a client.

    Faithful to Kuzzle 2.x: envelopes, error ids and codes, HS256 JWTs with ``kauth-``/``kapikey-``
    prefixes, server-side expiry, ``ms`` durations, fingerprints, ``total`` counting the page only.
    ``faults`` injects failures; ``stats`` counts requests; ``api_keys`` holds the stored keys.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        token_prefixes: bool = True,
        expired_error_id: str = "security.token.invalid",
        default_expires_in: str = "1h",
        max_ttl: str | None = None,
        clock_offset: float = 0.0,
        keep_alive: bool = True,
        seed: int | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.host, self.port = host, port
        self.latency = latency
        """Seconds each request waits before it is handled."""
        self.token_prefixes = token_prefixes
        self.expired_error_id = expired_error_id
        self.default_expires_in = default_expires_in
        self.max_ttl = None if max_ttl is None else parse_ms(max_ttl)
        self.clock_offset = clock_offset
        """Seconds added to this server's wall clock (a wrong server clock)."""
        self.keep_alive = keep_alive
        self.faults = Faults(seed)
        self.stats = Stats()
        self.api_keys: dict[str, StoredApiKey] = {}
        self.sessions: dict[str, _Session] = {}
        self._signer = TokenSigner()
        self._kuids = {email: f"{i + 1:016d}" for i, email in enumerate(self.users)}
        self._runner: web.AppRunner | None = None
        self._portal_cm: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321/v4``."""
        if self._runner is None:
            raise RuntimeError("FakeIllumass is not running")
        return f"http://{self.host}:{self.port}/v4"

    @property
    def email(self) -> str:
        """The first user's email (``demo@illumass.test`` by default)."""
        return next(iter(self.users))

    @property
    def password(self) -> str:
        """The first user's password."""
        return self.users[self.email]

    async def start(self) -> None:
        """Start serving on the running event loop."""
        app = web.Application(client_max_size=_MAX_BODY)
        for method, path, action in _ROUTES:
            app.router.add_route(method, "/v4" + path, self._endpoint(action))
        app.router.add_route("*", "/{tail:.*}", self._endpoint("_not_found"))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeIllumass:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> FakeIllumass:
        from anyio.from_thread import start_blocking_portal

        self._portal_cm = start_blocking_portal(backend="asyncio")
        portal = self._portal_cm.__enter__()
        try:
            portal.call(self.start)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self._portal = portal
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._portal.call(self.stop)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal_cm = None

    async def serve_forever(self) -> None:
        """Start, then serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # -- test controls -------------------------------------------------------------------------

    def forget_sessions(self) -> None:
        """Drop every login session (API keys stay valid), as if the token cache were flushed."""
        self.sessions = {t: s for t, s in self.sessions.items() if s.api_key_id is not None}

    def keys_of(self, email: str | None = None) -> list[StoredApiKey]:
        """The stored API keys of a user (the first user by default)."""
        user_id = self._kuids[email or self.email]
        return [k for k in self.api_keys.values() if k.user_id == user_id]

    def user_id(self, email: str | None = None) -> str:
        """The kuid of a user (the first user by default)."""
        return self._kuids[email or self.email]

    # -- request plumbing ------------------------------------------------------------------------

    def _now_ms(self) -> float:
        return (time.time() + self.clock_offset) * 1000.0

    def _endpoint(self, action: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler: Handler = getattr(self, "_" + action.lstrip("_"))

        async def endpoint(request: web.Request) -> web.StreamResponse:
            stats = self.stats
            stats.requests[action] += 1
            headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
            authorized = "Authorization" in request.headers
            stats.recent.append(
                SeenRequest(
                    action,
                    request.method,
                    request.path,
                    dict(request.query),
                    authorized,
                    headers,
                    time.monotonic(),
                )
            )
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                return await self._handle(request, action, handler)
            finally:
                stats.in_flight -= 1

        return endpoint

    async def _handle(self, request: web.Request, action: str, handler: Handler) -> web.StreamResponse:
        request_id = request.headers.get("X-Kuzzle-Request-Id") or str(uuid.uuid4())
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self.faults.draw(action)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            fault = None
        if fault is not None and fault.kind == "drop_before":
            _drop(request)
        if fault is not None and fault.kind == "html_502":
            return web.Response(
                status=502,
                text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                content_type="text/html",
            )
        if fault is not None and fault.kind == "status":
            error = KuzzleError(fault.status, fault.error_id, 0, f"Injected fault {fault.error_id}")
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
            return self._respond(request, action, request_id, error=error, headers=headers)
        try:
            call = _Call(await _read_body(request), request.query)
            result = await handler(request, call)
        except KuzzleError as error:
            return self._respond(request, action, request_id, error=error)
        if fault is not None and fault.kind in AFTER_ACTION:
            if fault.kind == "drop_after":
                _drop(request)
            if fault.kind == "bare_json":
                return web.Response(body=b'{"unexpected":true}', content_type="application/json")
            body = self._envelope(action, request_id, 200, None, result)
            return web.Response(body=body[: len(body) // 2], content_type="application/json")
        return self._respond(request, action, request_id, result=result)

    def _respond(
        self,
        request: web.Request,
        action: str,
        request_id: str,
        *,
        result: Any = None,
        error: KuzzleError | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        status = error.status if error else 200
        if error is not None and error.bare:
            body = orjson.dumps(error.to_json())
        else:
            body = self._envelope(action, request_id, status, error, result)
        response = web.Response(
            body=body,
            status=status,
            content_type="application/json",
            headers={"X-Kuzzle-Request-Id": request_id, **(headers or {})},
        )
        if not self.keep_alive:
            response.force_close()
        return response

    def _envelope(
        self, action: str, request_id: str, status: int, error: KuzzleError | None, result: Any
    ) -> bytes:
        return orjson.dumps(
            {
                "requestId": request_id,
                "status": status,
                "error": error.to_json() if error else None,
                "controller": "auth",
                "action": action,
                "collection": None,
                "index": None,
                "volatile": None,
                "result": result,
            }
        )

    # -- tokens --------------------------------------------------------------------------------

    def _issue(self, user_id: str, ttl_ms: float, *, api_key_id: str | None = None) -> tuple[str, int]:
        now = self._now_ms()
        prefix = (_APIKEY_PREFIX if api_key_id else _AUTH_PREFIX) if self.token_prefixes else ""
        token = self._signer.sign(user_id, now / 1000.0, ttl_ms, prefix)
        expires_at = -1 if ttl_ms == -1 else math.floor(now + ttl_ms)
        self.sessions[token] = _Session(user_id, None if ttl_ms == -1 else expires_at, api_key_id)
        return token, expires_at

    def _parse_expires_in(self, raw: str | None, default: str, *, max_ttl: float | None) -> float:
        # Kuzzle's parseTimespan: ms() on strings, -1 = infinite, maxTTL before the 0 check.
        value = parse_ms(raw if raw else default)
        parsed = 0.0 if value is None else value
        if max_ttl is not None and max_ttl > -1 and (parsed > max_ttl or parsed == -1):
            raise KuzzleError(
                400,
                "security.token.ttl_exceeded",
                117506052,
                "expiresIn value exceeds maximum allowed value",
            )
        if parsed == 0:
            raise _bad_expires_in()
        return int(parsed) if parsed.is_integer() else parsed

    def _verify(self, request: web.Request) -> tuple[str, _Session] | None:
        """The caller's token and session; None when anonymous. Raises on a bad token."""
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _invalid_token()
        return token, self._session(token)

    def _session(self, token: str) -> _Session:
        has_prefix = token.startswith((_AUTH_PREFIX, _APIKEY_PREFIX))
        if has_prefix != self.token_prefixes:
            raise _invalid_token()
        claims = self._signer.verify(token)
        if claims is None:
            raise _invalid_token()
        exp = claims.get("exp")
        if isinstance(exp, int) and self._now_ms() / 1000.0 >= exp:
            self.sessions.pop(token, None)
            raise (
                _expired_token() if self.expired_error_id == "security.token.expired" else _invalid_token()
            )
        session = self.sessions.get(token)
        if session is None or (session.expires_at is not None and self._now_ms() >= session.expires_at):
            raise _invalid_token()
        return session

    def _require(self, request: web.Request, action: str) -> tuple[str, _Session]:
        found = self._verify(request)
        if found is None:
            raise _unauthorized(action)
        return found

    # -- actions -------------------------------------------------------------------------------

    async def _login(self, request: web.Request, call: _Call) -> Any:
        self._verify(request)  # Kuzzle verifies any token sent, even on login
        body = call.body if isinstance(call.body, dict) else {}
        email, password = body.get("email"), body.get("password")
        known = self.users.get(email) if isinstance(email, str) else None
        if known is None or not isinstance(password, str) or password != known:
            raise KuzzleError(401, "plugin.strategy.missing_user", 67305492, "wrong username or password")
        ttl = self._parse_expires_in(
            call.query.get("expiresIn"), self.default_expires_in, max_ttl=self.max_ttl
        )
        user_id = self._kuids[str(email)]
        token, expires_at = self._issue(user_id, ttl)
        self.stats.logins += 1
        return {"_id": user_id, "expiresAt": expires_at, "jwt": token, "ttl": ttl}

    async def _logout(self, request: web.Request, call: _Call) -> Any:
        token, session = self._require(request, "logout")
        if session.api_key_id is None:  # logout never revokes API keys
            if "global" in call.query:
                self.sessions = {
                    t: s
                    for t, s in self.sessions.items()
                    if s.user_id != session.user_id or s.api_key_id is not None
                }
            self.sessions.pop(token, None)
        return {"acknowledged": True}

    async def _createApiKey(self, request: web.Request, call: _Call) -> Any:
        _, session = self._require(request, "createApiKey")
        if call.body is None:
            raise KuzzleError(400, "api.assert.body_required", 33619976, "The request must specify a body.")
        description = call.body.get("description") if isinstance(call.body, dict) else None
        if description is None:
            raise KuzzleError(
                400, "api.assert.missing_argument", 33619971, 'Missing argument "body.description".'
            )
        if not isinstance(description, str):
            raise _invalid_type("body.description", "string")
        key_id = call.query.get("_id") or str(uuid.uuid4())
        if key_id in self.api_keys:
            raise KuzzleError(
                400,
                "services.storage.document_already_exists",
                16842769,
                "Document already exists.",
            )
        # Illumass documents a 1h default where stock Kuzzle never expires; the docs win.
        ttl = self._parse_expires_in(call.query.get("expiresIn"), "1h", max_ttl=None)
        token, expires_at = self._issue(session.user_id, ttl, api_key_id=key_id)
        created_at = int(self._now_ms())
        fingerprint = hashlib.sha256(token.encode()).hexdigest()
        self.api_keys[key_id] = StoredApiKey(
            key_id, session.user_id, description, token, fingerprint, expires_at, ttl, created_at
        )
        return {
            "_id": key_id,
            "_source": {
                "description": description,
                "expiresAt": expires_at,
                "fingerprint": fingerprint,
                "token": token,
                "ttl": ttl,
                "userId": session.user_id,
                "_kuzzle_info": {
                    "author": session.user_id,
                    "createdAt": created_at,
                    "updatedAt": None,
                    "updater": None,
                },
            },
        }

    async def _searchApiKeys(self, request: web.Request, call: _Call) -> Any:
        _, session = self._require(request, "searchApiKeys")
        start = _integer(call.query, "from", 0)
        size = _integer(call.query, "size", 10)
        query = call.body if call.body is not None else {}
        if not isinstance(query, dict):
            raise KuzzleError(400, "api.assert.invalid_type", 33619969, "Body must be an object.")
        matches = [k for k in self.api_keys.values() if k.user_id == session.user_id and _matches(k, query)]
        page = matches[start : start + size]
        hits = [
            {
                "_id": k.id,
                "_source": {
                    "description": k.description,
                    "expiresAt": k.expires_at,
                    "fingerprint": k.fingerprint,
                    "ttl": k.ttl,
                    "userId": k.user_id,
                },
            }
            for k in page
        ]
        return {"hits": hits, "total": len(hits)}

    async def _deleteApiKey(self, request: web.Request, call: _Call) -> Any:
        _, session = self._require(request, "deleteApiKey")
        key_id = request.match_info["id"]
        key = self.api_keys.get(key_id)
        if key is None or key.user_id != session.user_id:
            raise KuzzleError(
                404,
                "services.storage.not_found",
                16842763,
                f'Document "{key_id}" not found in "%kuzzle":"api-keys".',
            )
        del self.api_keys[key_id]
        self.sessions.pop(key.token, None)
        return {"_id": key_id}

    async def _checkToken(self, request: web.Request, call: _Call) -> Any:
        self._verify(request)
        token = call.body.get("token") if isinstance(call.body, dict) else None
        if not token:
            return {"valid": True, "expiresAt": None, "kuid": "-1"}
        try:
            session = self._session(str(token))
        except KuzzleError as error:
            return {"valid": False, "state": error.message}
        return {"valid": True, "expiresAt": session.expires_at or -1, "kuid": session.user_id}

    async def _refreshToken(self, request: web.Request, call: _Call) -> Any:
        _, session = self._require(request, "refreshToken")
        if session.api_key_id is not None or session.expires_at is None:
            what = "API Key" if session.api_key_id else "Token with infinite TTL"
            raise KuzzleError(
                401, "security.token.refresh_forbidden", 117506056, f"{what} cannot be refreshed."
            )
        ttl = self._parse_expires_in(
            call.query.get("expiresIn"), self.default_expires_in, max_ttl=self.max_ttl
        )
        new_token, expires_at = self._issue(session.user_id, ttl)
        session.expires_at = min(session.expires_at, self._now_ms() + _GRACE_MS)
        return {"_id": session.user_id, "expiresAt": expires_at, "jwt": new_token, "ttl": ttl}

    async def _getCurrentUser(self, request: web.Request, call: _Call) -> Any:
        _, session = self._require(request, "getCurrentUser")
        email = next(e for e, k in self._kuids.items() if k == session.user_id)
        return {
            "_id": session.user_id,
            "_source": {"profileIds": ["default"], "email": email},
            "strategies": ["illumass"],
        }

    async def _not_found(self, request: web.Request, call: _Call) -> Any:
        raise KuzzleError(
            404, "network.http.url_not_found", 50397191, f'API URL not found: "{request.path}".'
        )


_ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/login", "login"),
    ("POST", "/logout", "logout"),
    ("POST", "/api-keys/_create", "createApiKey"),
    ("POST", "/api-keys/_search", "searchApiKeys"),
    ("DELETE", "/api-keys/{id}", "deleteApiKey"),
    ("POST", "/_checkToken", "checkToken"),
    ("POST", "/_refreshToken", "refreshToken"),
    ("GET", "/_me", "getCurrentUser"),
]


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()
    raise asyncio.CancelledError


async def _read_body(request: web.Request) -> Any:
    """The JSON body, or None; malformed or oversized bodies give Kuzzle's bare error objects."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise KuzzleError(
            413,
            "network.http.request_too_large",
            50397185,
            "Maximum HTTP request size exceeded.",
            bare=True,
        ) from None
    if not raw:
        return None
    if request.content_type != "application/json":
        raise KuzzleError(
            400,
            "network.http.unsupported_content",
            50397188,
            f"Unsupported content type: {request.content_type}.",
            bare=True,
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise KuzzleError(
            400,
            "network.http.body_parse_failed",
            50397196,
            "Unable to convert HTTP body to JSON.",
            bare=True,
        ) from None


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _invalid_type(name, "integer") from None
    if not value.is_integer() or abs(value) > 2**53:
        raise _invalid_type(name, "integer")
    return int(value)


def _matches(key: StoredApiKey, query: Mapping[str, Any]) -> bool:
    """The subset of Elasticsearch's query DSL that API-key searches use."""
    if not query or "match_all" in query:
        return True
    if "query" in query and isinstance(query["query"], dict):
        return _matches(key, query["query"])
    fields = {
        "_id": key.id,
        "description": key.description,
        "fingerprint": key.fingerprint,
        "userId": key.user_id,
        "expiresAt": key.expires_at,
    }
    for kind, clause in query.items():
        if not isinstance(clause, dict):
            raise KuzzleError(400, "services.storage.invalid_query", 16842782, "Invalid query.")
        for field, wanted in clause.items():
            value = fields.get(field)
            if isinstance(wanted, dict):
                wanted = wanted.get("value", wanted.get("query"))
            if kind == "range":
                bounds = clause[field]
                if not isinstance(value, int | float) or not isinstance(bounds, dict):
                    return False
                if "gte" in bounds and value < bounds["gte"]:
                    return False
                if "lte" in bounds and value > bounds["lte"]:
                    return False
            elif kind == "term":
                if value != wanted:
                    return False
            elif kind == "match":
                words = str(value or "").lower().split()
                if not any(w in words for w in str(wanted).lower().split()):
                    return False
            else:
                raise KuzzleError(
                    400, "services.storage.invalid_query", 16842782, f"Unsupported query: {kind}."
                )
    return True
