"""FakeIllumass: a local server that speaks the Illumass v4 API as Kuzzle 2.56 does.

Every default below was checked against the real Kuzzle 2.56.0 behind the harness's ``/v4`` front
(``shared/kuzzle``); constructor switches model other servers (older Kuzzle, a patched
deployment, Illumass's documented defaults).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import email.parser
import email.policy
import hashlib
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar

import attrs
import orjson
from aiohttp import web

from .._duration import parse_ms
from . import _errors as err
from ._errors import KuzzleError
from ._faults import AFTER_ACTION, Fault, Faults
from ._search import compile_query, parse_js_integer
from ._store import ApiKeyIndex, StoredApiKey
from ._tokens import TokenSigner

__all__ = ["DEFAULT_USERS", "FakeIllumass", "KuzzleError", "SeenRequest", "Stats", "StoredApiKey"]

T = TypeVar("T")

DEFAULT_USERS: Mapping[str, str] = {"demo@illumass.test": "demo-password"}
_MAX_REQUEST_SIZE = 1024 * 1024  # Kuzzle's server.maxRequestSize "1MB"
_AUTH_PREFIX = "kauth-"
_APIKEY_PREFIX = "kapikey-"
_GRACE_MS = 1000.0  # security.jwt.gracePeriod: a refreshed token lives on for 1 s
_MAX_RESULT_WINDOW = 10_000  # Elasticsearch's index.max_result_window
_ALLOWED_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")
_CHARSET = re.compile(r"charset=([\w-]+)", re.IGNORECASE)
_ANONYMOUS_ACTIONS = frozenset({"login", "checkToken", "getCurrentUser"})
_ANONYMOUS_USER = {
    "_id": "-1",
    "_source": {"profileIds": ["anonymous"], "name": "Anonymous"},
    "strategies": [[]],
}


@attrs.define
class _Session:
    """What a verified token stands for: a login session, or an API key (``api_key_id``)."""

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
    """What the server has seen: requests per Kuzzle action, logins, concurrency, recent requests.

    ``in_flight`` counts requests the server holds: from the moment aiohttp hands one to the server
    (each request yields to the event loop once there, so requests that arrived together are all
    counted) until its response is written. ``max_in_flight`` is its high-water mark, an honest
    reading with or without ``latency``. ``recent`` keeps the last 1,000 requests.
    """

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
    token: str | None
    """The bearer token, from ``Authorization: Bearer`` or ``?jwt=``."""


class FakeIllumass(AbstractContextManager["FakeIllumass"]):
    """An Illumass-compatible server for tests, demos and benchmarks.

    ``async with FakeIllumass() as server`` runs it on the current event loop;
    ``with FakeIllumass() as server`` runs it on a background thread, for synchronous code.
    ``server.url`` is the base URL (ending in ``/v4``) to give a client.

    By default it behaves like Kuzzle 2.56 behind Illumass's ``/v4`` front, including what
    surprises clients: same-second tokens of one user are identical (no nonce); an API key is
    verified among its user's first 10 keys only; ``createApiKey`` waits for the next index
    refresh unless ``refresh=false``, deletes are not refreshed; ``fingerprint`` is not searchable;
    ``from + size`` may not exceed 10,000; expired tokens are ``security.token.invalid``; a stale
    bearer makes login fail; only JSON, urlencoded and multipart bodies are accepted.

    Args:
        users: email -> password of the accounts (default: one demo account).
        host, port: where to listen (port 0 picks a free one).
        latency: seconds every request waits before it is handled.
        token_prefixes: False models Kuzzle before 2.14: tokens without ``kauth-``/``kapikey-``,
            and API keys verified like sessions, by a cache lookup (no cap; usable before the
            index refresh; deleting one twin revokes the shared token).
        expired_error_id: the error for an expired token; ``security.token.expired`` models Kuzzle
            before 2.34 (2.56 says ``security.token.invalid``).
        default_expires_in: login lifetime when ``expiresIn`` is absent (Kuzzle's "1h").
        api_key_default_expires_in: API-key lifetime when ``expiresIn`` is absent: Kuzzle's "-1"
            (never expires); "1h" models what Illumass documents.
        max_ttl: login maxTTL (``security.authToken.maxTTL``), e.g. "1d"; None: no limit.
        api_key_max_ttl: API-key maxTTL (``security.apiKey.maxTTL``); None: no limit.
        api_key_cap: how many of a user's API keys (in insertion order, expired and deleted-but-
            not-refreshed ones included) verification considers: 10 as Kuzzle >= 2.34 (an
            Elasticsearch search with its default size); None: all of them, as Kuzzle < 2.34 or a
            server run with ``KZ_ES_DEFAULT_SIZE=10000``.
        refresh_interval: seconds between index refreshes: API keys created with
            ``refresh=false`` and deletes become visible to searches and to API-key verification at
            the next tick; ``refresh=wait_for`` (the create default) answers at that tick. 0 makes
            every write visible at once.
        max_request_size: bytes; bigger bodies get ``network.http.request_too_large``.
        clock_offset: seconds added to this server's wall clock (a wrong server clock).
        keep_alive: False closes every connection after its response (Kuzzle without a proxy).
        seed: seeds the random draws of probabilistic faults.

    ``faults`` injects failures, ``stats`` counts requests, ``api_keys`` holds the stored keys
    (real-time view), ``sessions`` the login tokens; ``refresh()`` runs an index refresh now.
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
        api_key_default_expires_in: str = "-1",
        max_ttl: str | None = None,
        api_key_max_ttl: str | None = None,
        api_key_cap: int | None = 10,
        refresh_interval: float = 1.0,
        max_request_size: int = _MAX_REQUEST_SIZE,
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
        self.api_key_default_expires_in = api_key_default_expires_in
        self.max_ttl = None if max_ttl is None else parse_ms(max_ttl)
        self.api_key_max_ttl = None if api_key_max_ttl is None else parse_ms(api_key_max_ttl)
        self.api_key_cap = api_key_cap
        """How many of a user's keys API-key verification looks at (None: all)."""
        self.max_request_size = max_request_size
        self.clock_offset = clock_offset
        """Seconds added to this server's wall clock (a wrong server clock)."""
        self.keep_alive = keep_alive
        self.faults = Faults(seed)
        self.stats = Stats()
        self.index = ApiKeyIndex(refresh_interval)
        """The ``api-keys`` collection: real-time documents and the near-real-time search view."""
        self.sessions: dict[str, _Session] = {}
        """Login tokens (Kuzzle keeps them in Redis), and API keys too when ``token_prefixes`` is off."""
        self._signer = TokenSigner()
        self._kuids = {email: f"{i + 1:016d}" for i, email in enumerate(self.users)}
        self._emails = {kuid: email for email, kuid in self._kuids.items()}
        self._runner: web.AppRunner | None = None
        self._portal_cm: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refresh_waiters: set[asyncio.Future[None]] = set()

    @property
    def api_keys(self) -> dict[str, StoredApiKey]:
        """Every stored API key by id, as a GET by id sees them (deletes show at once)."""
        return self.index.docs

    @property
    def refresh_interval(self) -> float:
        """Seconds between index refreshes (0: writes are searchable at once)."""
        return self.index.refresh_interval

    @refresh_interval.setter
    def refresh_interval(self, value: float) -> None:
        self.index.refresh_interval = value

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
        self._loop = asyncio.get_running_loop()
        app = web.Application(client_max_size=self.max_request_size)
        for method, path, action in _ROUTES:
            app.router.add_route(method, "/v4" + path, self._endpoint(action))
        not_found = self._endpoint("_not_found")
        app.router.add_route("*", "/v4", not_found)
        app.router.add_route("*", "/v4/{tail:.*}", not_found)
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

    def refresh(self) -> None:
        """Refresh the index now: every create and delete so far becomes visible to searches,
        and requests waiting for a refresh (``refresh=wait_for``) answer. Safe from any thread."""
        self._on_server_loop(self._refresh_now)

    def _refresh_now(self) -> None:
        self.index.refresh()
        self._wake_refresh_waiters()

    def _on_server_loop(self, action: Callable[[], T]) -> T:
        """Run ``action`` on the server's loop (the state belongs to it) and return its result."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop or not loop.is_running():
            return action()

        async def run() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def _wake_refresh_waiters(self) -> None:
        for waiter in self._refresh_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def keys_of(self, email: str | None = None) -> list[StoredApiKey]:
        """The stored API keys of a user (the first user by default), in creation order."""
        user_id = self._kuids[email or self.email]
        return [k for k in self.api_keys.values() if k.user_id == user_id]

    def user_id(self, email: str | None = None) -> str:
        """The kuid of a user (the first user by default)."""
        return self._kuids[email or self.email]

    def accepts(self, token: str) -> bool:
        """Would this server accept ``token`` as a bearer right now? (No request is counted.)"""

        def check() -> bool:
            try:
                self._authenticate(token)
            except KuzzleError:
                return False
            return True

        return self._on_server_loop(check)

    # -- request plumbing ------------------------------------------------------------------------

    def _now_ms(self) -> float:
        return (time.time() + self.clock_offset) * 1000.0

    def _endpoint(self, action: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler: Handler = getattr(self, "_" + action.lstrip("_"))

        async def endpoint(request: web.Request) -> web.StreamResponse:
            stats = self.stats
            stats.requests[action] += 1
            headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
            stats.recent.append(
                SeenRequest(
                    action,
                    request.method,
                    request.path,
                    dict(request.query),
                    "Authorization" in request.headers,
                    headers,
                    time.monotonic(),
                )
            )
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                # One turn of the loop, so that requests that arrived together are all counted
                # before the first of them is answered.
                await asyncio.sleep(0)
                response = await self._handle(request, action, handler)
                # Written here, so the count covers it; aiohttp sees a finished response.
                with contextlib.suppress(ConnectionError):
                    await response.prepare(request)
                    await response.write_eof()
                return response
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
            return self._injected(action, request_id, fault)
        try:
            body = await self._read_body(request)
            call = _Call(body, request.query, _bearer(request))
            result = await handler(request, call)
        except KuzzleError as error:
            return self._respond(action, request_id, error=error)
        if fault is not None and fault.kind in AFTER_ACTION:
            if fault.kind == "drop_after":
                _drop(request)
            if fault.kind == "status_after":
                return self._injected(action, request_id, fault)
            if fault.kind == "bare_json":
                return web.Response(body=b'{"unexpected":true}', content_type="application/json")
            body = self._envelope(action, request_id, 200, None, result)
            return web.Response(body=body[: len(body) // 2], content_type="application/json")
        return self._respond(action, request_id, result=result)

    def _injected(self, action: str, request_id: str, fault: Fault) -> web.Response:
        error = KuzzleError(fault.status, fault.error_id, 0, f"Injected fault {fault.error_id}")
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
        return self._respond(action, request_id, error=error, headers=headers)

    def _respond(
        self,
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
            extra: dict[str, str] = {}
        else:
            body = self._envelope(action, request_id, status, error, result)
            extra = {"X-Kuzzle-Request-Id": request_id}
        response = web.Response(
            body=body, status=status, content_type="application/json", headers={**extra, **(headers or {})}
        )
        if not self.keep_alive:
            response.force_close()
        return response

    def _envelope(
        self, action: str, request_id: str, status: int, error: KuzzleError | None, result: Any
    ) -> bytes:
        # Kuzzle's routed response; `action`/`controller` are null when no route was found (or
        # the body was refused before routing), and JSON.stringify drops the undefined
        # collection/index of the auth controller's actions.
        routed = not action.startswith("_") and (error is None or error.error_id is not None)
        return orjson.dumps(
            {
                "action": action if routed else None,
                "controller": "auth" if routed else None,
                "error": error.to_json() if error else None,
                "headers": {},
                "requestId": request_id,
                "result": result,
                "status": status,
                "volatile": None,
            }
        )

    async def _read_body(self, request: web.Request) -> Any:
        """The parsed body, or None, checked in Kuzzle's order (httpwsProtocol.js)."""
        if (request.content_length or 0) > self.max_request_size:
            raise err.request_too_large()
        header = request.headers.get("Content-Type")
        if header is not None:
            content_type = header.partition(";")[0].strip()
            if content_type not in _ALLOWED_CONTENT_TYPES:
                raise err.unsupported_content(content_type)
            charset = _CHARSET.search(header)
            if charset is not None and charset.group(1).lower() != "utf-8":
                raise err.unsupported_charset(charset.group(1).lower())
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise err.request_too_large() from None
        if not raw:
            return None
        header = header or ""
        if "multipart/form-data" in header:
            return _parse_multipart(header, raw)
        if "application/x-www-form-urlencoded" in header:
            pairs = urllib.parse.parse_qs(raw.decode(errors="replace"), keep_blank_values=True)
            return {k: v[0] if len(v) == 1 else v for k, v in pairs.items()}
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise err.body_parse_failed(raw.decode(errors="replace")[:50]) from None
        if body is not None and not isinstance(body, dict | list):
            raise err.body_not_object()
        return body

    # -- tokens --------------------------------------------------------------------------------

    def _sign(self, user_id: str, ttl_ms: float, prefix: str) -> tuple[str, float, float]:
        """(token, expiresAt, now) for a new token; ``expiresAt`` is -1 for never."""
        now = self._now_ms()
        token = self._signer.sign(user_id, now / 1000.0, ttl_ms, prefix if self.token_prefixes else "")
        expires_at = -1 if ttl_ms == -1 else _number(math.floor(now) + ttl_ms)
        return token, expires_at, now

    def _issue_session(self, user_id: str, ttl_ms: float) -> tuple[str, float]:
        token, expires_at, _ = self._sign(user_id, ttl_ms, _AUTH_PREFIX)
        # Redis keeps the token `ttl` ms (no expiry when ttl <= 0); the same token issued twice in a
        # second is one entry.
        self.sessions[token] = _Session(user_id, None if ttl_ms <= 0 else expires_at)
        return token, expires_at

    def _parse_expires_in(self, raw: str, *, max_ttl: float | None) -> float:
        # Kuzzle's parseTimespan: ms() on strings, -1 = infinite, maxTTL before the 0 check.
        value = parse_ms(raw)
        parsed = 0.0 if value is None else value
        if max_ttl is not None and max_ttl > -1 and (parsed > max_ttl or parsed == -1):
            raise err.ttl_exceeded()
        if parsed == 0:
            raise err.bad_expires_in()
        return _number(parsed)

    def _authenticate(self, token: str) -> _Session:
        """What ``token`` stands for, as Kuzzle's ``verifyToken`` decides; raises on a bad token."""
        claims = self._signer.verify(token)
        user_id = claims.get("_id") if claims else None
        if not user_id:
            raise err.invalid_token()
        exp = claims.get("exp") if claims else None
        if exp is not None and (not isinstance(exp, int | float) or self._now_ms() / 1000.0 >= exp):
            self.sessions.pop(token, None)
            if self.expired_error_id == "security.token.expired":
                raise err.expired_token()
            raise err.invalid_token()
        if self.token_prefixes and token.startswith(_APIKEY_PREFIX):
            return self._authenticate_api_key(str(user_id), token)
        session = self.sessions.get(token)
        if session is None or (session.expires_at is not None and self._now_ms() >= session.expires_at):
            raise err.invalid_token()
        return session

    def _authenticate_api_key(self, user_id: str, token: str) -> _Session:
        # Kuzzle >= 2.34: search the user's keys (ES default size: the first 10), compare
        # fingerprints, then load the key found by id in real time.
        fingerprint = hashlib.sha256(token.encode()).hexdigest()
        found = self.index.find(user_id, fingerprint, self.api_key_cap)
        if found is None:
            raise err.invalid_token()
        key = self.api_keys.get(found.id)
        if key is None:  # deleted, but the index has not been refreshed yet
            raise err.not_found(found.id)
        if key.user_id != user_id:
            raise err.not_found_for_user(found.id, user_id)
        return _Session(user_id, None if key.expires_at == -1 else key.expires_at, key.id)

    def _verify(self, call: _Call) -> _Session | None:
        """The caller's session; None when anonymous. Raises on a bad token (even on login)."""
        return None if not call.token else self._authenticate(call.token)

    def _require(self, call: _Call, action: str) -> _Session:
        session = self._verify(call)
        if session is None:
            raise err.unauthorized(action)
        return session

    async def _wait_for_refresh(self, tick: float) -> None:
        """Return at the refresh tick ``tick``, or earlier if :meth:`refresh` runs first."""
        delay = tick - time.monotonic()
        if delay <= 0:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._refresh_waiters.add(waiter)
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waiter, delay)
        finally:
            self._refresh_waiters.discard(waiter)

    # -- actions -------------------------------------------------------------------------------

    async def _login(self, request: web.Request, call: _Call) -> Any:
        self._verify(call)  # Kuzzle verifies any token sent, even on login
        body = call.body if isinstance(call.body, dict) else {}
        email, password = body.get("email"), body.get("password")
        if not email or not password:
            raise err.missing_credentials("Missing credentials")
        known = self.users.get(email) if isinstance(email, str) else None
        if known is None or password != known:
            raise err.missing_credentials("wrong username or password")
        ttl = self._parse_expires_in(
            call.query.get("expiresIn") or self.default_expires_in, max_ttl=self.max_ttl
        )
        user_id = self._kuids[email]
        token, expires_at = self._issue_session(user_id, ttl)
        self.stats.logins += 1
        return {"_id": user_id, "expiresAt": expires_at, "jwt": token, "ttl": ttl}

    async def _logout(self, request: web.Request, call: _Call) -> Any:
        session = self._require(call, "logout")
        if "global" in call.query:  # an HTTP flag: present means true, whatever its value
            self.sessions = {
                t: s for t, s in self.sessions.items() if s.user_id != session.user_id or s.api_key_id
            }
        elif session.api_key_id is None:  # logging out with an API key revokes nothing
            self.sessions.pop(str(call.token), None)
        return {"acknowledged": True}

    async def _createApiKey(self, request: web.Request, call: _Call) -> Any:
        session = self._require(call, "createApiKey")
        expires_in = call.query.get("expiresIn") or self.api_key_default_expires_in
        wait = _wait_for(call.query, default=True)
        key_id = call.query.get("_id") or str(uuid.uuid4())
        description = _body_string(call.body, "description")
        ttl = self._parse_expires_in(expires_in, max_ttl=self.api_key_max_ttl)
        token, expires_at, now = self._sign(session.user_id, ttl, _APIKEY_PREFIX)
        if key_id in self.api_keys:
            raise err.already_exists()
        fingerprint = hashlib.sha256(token.encode()).hexdigest()
        created_at = math.floor(now)
        key = StoredApiKey(
            key_id, session.user_id, description, token, fingerprint, expires_at, ttl, created_at
        )
        tick = self.index.add(key)
        if not self.token_prefixes:  # before 2.34, API keys lived in the token cache
            self.sessions[token] = _Session(session.user_id, None if ttl <= 0 else expires_at, key_id)
        if wait:
            await self._wait_for_refresh(tick)
        return {
            "_id": key_id,
            "_source": {
                "description": description,
                "expiresAt": expires_at,
                "fingerprint": fingerprint,
                "ttl": ttl,
                "userId": session.user_id,
                "_kuzzle_info": {
                    "author": session.user_id,
                    "createdAt": created_at,
                    "updatedAt": None,
                    "updater": None,
                },
                "token": token,
            },
        }

    async def _searchApiKeys(self, request: web.Request, call: _Call) -> Any:
        session = self._require(call, "searchApiKeys")
        query = {} if call.body is None else call.body
        start = _integer(call.query, "from", 0)
        size = _integer(call.query, "size", 10)
        lang = call.query.get("lang", "elasticsearch")
        if lang not in ("elasticsearch", "koncorde"):
            raise err.invalid_argument("lang", '"elasticsearch" or "koncorde"')
        if lang == "koncorde" and isinstance(query, dict) and query:
            query = _koncorde_to_es(query)
        if not query:  # lodash isEmpty: {} and [] both mean everything
            query = {"match_all": {}}
        for name, value in (("from", start), ("size", size)):
            if value < 0:
                raise err.bad_request(f"[{name}] parameter cannot be negative, found [{value}]")
        if start + size > _MAX_RESULT_WINDOW:
            raise err.bad_request(
                "Result window is too large, from + size must be less than or equal to: "
                f"[{_MAX_RESULT_WINDOW}] but was [{start + size}]. See the scroll api for a more "
                "efficient way to request large data sets. This limit can be set by changing the "
                "[index.max_result_window] index level setting."
            )
        predicate = compile_query(query)
        matches = self.index.search(session.user_id, predicate, orjson.dumps(query))
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
            for k in matches[start : start + size]
        ]
        return {"hits": hits, "total": len(hits)}

    async def _deleteApiKey(self, request: web.Request, call: _Call) -> Any:
        session = self._require(call, "deleteApiKey")
        key_id = request.match_info["id"]
        wait = _wait_for(call.query, default=False)
        key = self.api_keys.get(key_id)
        if key is None:
            raise err.not_found(key_id)
        if key.user_id != session.user_id:
            raise err.not_found_for_user(key_id, session.user_id)
        tick = self.index.remove(key_id)
        if not self.token_prefixes:  # before 2.34: the shared cache entry goes, twins included
            self.sessions.pop(key.token, None)
        if wait:
            await self._wait_for_refresh(tick)
        return {"_id": key_id}

    async def _checkToken(self, request: web.Request, call: _Call) -> Any:
        self._verify(call)
        token = _body_string(call.body, "token", default="")
        if not token:
            return {"expiresAt": None, "kuid": "-1", "valid": True}
        try:
            session = self._authenticate(token)
        except KuzzleError as error:
            if error.status != 401:  # e.g. a deleted key the index still lists: 404
                raise
            return {"state": error.message, "valid": False}
        expires_at = -1 if session.expires_at is None else session.expires_at
        return {"expiresAt": expires_at, "kuid": session.user_id, "valid": True}

    async def _refreshToken(self, request: web.Request, call: _Call) -> Any:
        session = self._require(call, "refreshToken")
        if session.api_key_id is not None:
            raise err.refresh_forbidden("API Key")
        if session.expires_at is None:
            raise err.refresh_forbidden("Token with infinite TTL")
        ttl = self._parse_expires_in(
            call.query.get("expiresIn") or self.default_expires_in, max_ttl=self.max_ttl
        )
        new_token, expires_at = self._issue_session(session.user_id, ttl)
        session.expires_at = min(session.expires_at, self._now_ms() + _GRACE_MS)
        return {"_id": session.user_id, "expiresAt": expires_at, "jwt": new_token, "ttl": ttl}

    async def _getCurrentUser(self, request: web.Request, call: _Call) -> Any:
        session = self._verify(call)
        if session is None:
            return _ANONYMOUS_USER
        return {
            "_id": session.user_id,
            "_source": {
                "profileIds": ["default"],
                "email": self._emails.get(session.user_id),
                "_kuzzle_info": {"createdAt": 0, "updatedAt": None, "updater": None},
            },
            "strategies": ["local"],
        }

    async def _not_found(self, request: web.Request, call: _Call) -> Any:
        # The path as Kuzzle sees it: without the /v4 prefix nor a trailing slash.
        path = "/" + request.match_info.get("tail", "").rstrip("/")
        raise err.url_not_found(path)


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


def _bearer(request: web.Request) -> str | None:
    """The token as Kuzzle's route handler reads it: ``?jwt=``, overridden by any
    ``Authorization`` header starting with ``bearer `` (any case); other schemes are ignored."""
    token = request.query.get("jwt")
    for value in request.headers.getall("Authorization", ()):
        if value.lower().startswith("bearer "):
            token = value[len("Bearer ") :]
    return token or None


def _wait_for(query: Mapping[str, str], *, default: bool) -> bool:
    """``request.getRefresh``: absent -> the default; "false" -> no wait; anything else waits."""
    if "refresh" not in query:
        return default
    return query["refresh"] != "false"


def _number(value: float) -> float:
    """Integral floats as ints, as JSON.stringify writes them."""
    return int(value) if float(value).is_integer() else value


def _body_string(body: Any, name: str, default: str | None = None) -> str:
    """``request.getBodyString(name, default)``."""
    if body is None:
        if default is not None:
            return default
        raise err.body_required()
    value = body.get(name) if isinstance(body, dict) else None
    if isinstance(body, dict) and name in body and value is None:
        raise err.invalid_type(f"body.{name}", "string")
    if value is None:
        if default is not None:
            return default
        raise err.missing_argument(f"body.{name}")
    if not isinstance(value, str):
        raise err.invalid_type(f"body.{name}", "string")
    return value


def _integer(query: Mapping[str, str], name: str, default: int) -> int:
    """``request.getInteger``: JavaScript's parseFloat, then a safe integer or invalid_type."""
    raw = query.get(name)
    if raw is None:
        return default
    value = parse_js_integer(raw)
    if math.isnan(value) or math.isinf(value) or not value.is_integer() or abs(value) > 2**53 - 1:
        raise err.invalid_type(name, "integer")
    return int(value)


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart/form-data body as Kuzzle reads it: fields as strings, files as base64."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    content: dict[str, Any] = {}
    if not message.is_multipart():
        return content
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        filename = part.get_filename()
        if filename:
            content[name] = {
                "encoding": part.get_content_type(),
                "file": base64.b64encode(data).decode(),
                "filename": filename,
            }
        else:
            content[name] = data.decode(errors="replace")
    return content


_KONCORDE_CLAUSES: dict[str, Callable[[Any], Any]] = {
    "equals": lambda c: {"term": c},
    "in": lambda c: {"terms": c},
    "range": lambda c: {"range": c},
    "ids": lambda c: {"ids": c},
    "exists": lambda c: {"exists": {"field": c.get("field") if isinstance(c, dict) else c}},
    "missing": lambda c: {"bool": {"must_not": [{"exists": {"field": c}}]}},
}


def _koncorde_to_es(filters: Any) -> Any:
    """Kuzzle's QueryTranslator for the Koncorde keywords API-key searches can use."""
    if not isinstance(filters, dict) or not filters:
        return filters
    name, value = next(iter(filters.items()))
    if name in ("and", "or"):
        operands = [_koncorde_to_es(v) for v in value] if isinstance(value, list) else []
        return {"bool": {"filter" if name == "and" else "should": operands}}
    if name == "not":
        return {"bool": {"must_not": [_koncorde_to_es(value)]}}
    if name == "bool":
        raise KuzzleError(
            400,
            "api.assert.koncorde_restricted_keyword",
            33619981,
            'The operator "bool" of Koncorde DSL is not supported for search queries.',
            props=["operator", "bool"],
        )
    convert = _KONCORDE_CLAUSES.get(name)
    return convert(value) if convert else {name: value}
