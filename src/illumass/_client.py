"""AsyncIllumass and its ``auth`` namespace: arguments checked, one request described, sent once."""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, unquote

import aiohttp
import orjson

from . import _args, _bulk, _jwt
from ._auth import Auth
from ._config import check_count, resolve
from ._duration import ExpiresIn, expires_in_param
from ._keys import KeyMaker, key_millis, new_key_id
from ._pipeline import Pipeline
from ._pushback import Backoff
from ._request import Request, Trace
from ._secret import Secret
from ._transport import Transport
from ._wire import structure
from .errors import IllumassError, InvalidResponseError
from .models import ApiKey, ApiKeyPage, ApiKeySpec, AuthToken, DeleteResult, ProvisionResult, TokenInfo

__all__ = ["AsyncAuthAPI", "AsyncIllumass", "fingerprint"]

log: Final = logging.getLogger("illumass")


_REPLAY_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_METHODS: Final = _REPLAY_SAFE_METHODS | {"POST", "PATCH"}
_WINDOW: Final = 10_000  # Elasticsearch's index.max_result_window: from + size may not exceed it
_MAX_EXPIRES_AT: Final = 2**53  # epoch milliseconds: past any date a key can have

SpecLike = str | ApiKeySpec
ResultCallback = Callable[[ProvisionResult], Awaitable[None] | None]


def fingerprint(token: str | Secret) -> str:
    """The SHA-256 hex digest the server stores for an API-key token (prefix included)."""
    return hashlib.sha256(_args.token_text(token).encode()).hexdigest()


class AsyncAuthAPI:
    """``client.auth``: login, logout, API keys (one at a time and in bulk), token checks."""

    def __init__(self, pipeline: Pipeline, keys: KeyMaker) -> None:
        self._pipeline = pipeline
        self._auth = pipeline.auth
        self._keys = keys

    @property
    def token(self) -> AuthToken | None:
        """The current session token, or None before login (and with an API key)."""
        return self._auth.token

    async def login(
        self,
        email: str | None = None,
        password: str | Secret | None = None,
        *,
        expires_in: ExpiresIn | None = None,
    ) -> AuthToken:
        """Log in with email and password (the client's own when not given) and return the token.

        Optional: any call logs in by itself when needed. The credentials are kept, as secrets,
        to log in again when the token nears expiry or is rejected. After the server refuses
        them (InvalidCredentialsError) they are not sent again: pass new ones here.
        """
        if (email is None) != (password is None):
            raise ValueError("give both email and password, or neither")
        if email is not None and (not isinstance(email, str) or not email):
            raise TypeError("email must be a non-empty str")
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        if secret is not None and not secret.get_secret_value():
            raise ValueError("password must not be empty")
        wire = None if expires_in is None else expires_in_param(expires_in, allow_never=False)
        return await self._auth.login(self._pipeline.call, email, secret, wire)

    async def logout(self) -> None:
        """Revoke the session token; calls in flight do not log in again. With an API key this
        does nothing: use ``delete_api_key``."""
        await self._auth.logout(self._pipeline.call)

    async def create_api_key(
        self,
        description: str,
        *,
        expires_in: ExpiresIn | None = None,
        key_id: str | None = None,
    ) -> ApiKey:
        """Create an API key; its token (``key.token``) is returned this one time only.

        ``expires_in`` defaults to "1h"; -1 makes a key that never expires. The key may live a
        few seconds less than asked, so that its token differs from every other key's (see the
        README). Exactly once: retries never make a second key, a key whose response was lost is
        revoked and made again, and a cancelled call revokes the key it was making. A
        ``key_id`` that already exists raises ConflictError and is left untouched.
        """
        millis = key_millis(expires_in)
        text = _args.description(description)
        generated = key_id is None
        ident = new_key_id() if key_id is None else _args.key_id(key_id)
        trace = Trace(retries_left=self._pipeline.max_retries)
        return await self._keys.create_cancel_safe(text, millis, ident, generated=generated, trace=trace)

    async def search_api_keys(
        self, query: Mapping[str, Any] | None = None, *, from_: int = 0, size: int = 100
    ) -> ApiKeyPage:
        """One page of the user's API keys matching ``query`` (Elasticsearch DSL; None = all).

        Tokens are never returned here. ``total`` counts this page only (as the server does).
        ``from_ + size`` may not exceed 10,000 (Elasticsearch's window): ``iter_api_keys`` lists
        further.
        """
        start, count = _args.offset("from_", from_), _args.offset("size", size)
        if start + count > _WINDOW:
            raise ValueError(f"from_ + size may not exceed {_WINDOW}; use iter_api_keys to list further")
        return await self._search(_args.query(query), start, count)

    async def _search(self, query: Mapping[str, Any], start: int, size: int) -> ApiKeyPage:
        request = Request(
            "POST",
            "/api-keys/_search",
            {"from": str(start), "size": str(size)},
            orjson.dumps(query),
            replay_safe=True,
        )
        return structure(await self._pipeline.call(request), ApiKeyPage)

    def iter_api_keys(
        self, query: Mapping[str, Any] | None = None, *, page_size: int = 100
    ) -> AsyncIterator[ApiKey]:
        """Every API key matching ``query``, page by page, each once.

        Past Elasticsearch's 10,000-hit window the listing continues by ranges of ``expiresAt``
        (one probe request per range); more than 10,000 keys with the very same ``expiresAt``
        raise IllumassError rather than being skipped. Keys created or deleted while iterating
        may be missed or shifted: collect ids first if you delete while iterating.
        """
        size = check_count("page_size", page_size, minimum=1)
        if size > _WINDOW:
            raise ValueError(f"page_size may not exceed {_WINDOW}")
        return self._iterate(_args.query(query), size)

    async def _iterate(self, query: dict[str, Any], size: int) -> AsyncIterator[ApiKey]:
        seen: set[str] = set()
        start = 0
        previous: list[str] | None = None
        while start + size <= _WINDOW:
            page = await self._search(query, start, size)
            ids = [key.id for key in page.hits]
            if ids and ids == previous:
                raise InvalidResponseError("the server returned the same page twice: it ignores 'from'")
            previous = ids
            for key in page.hits:
                seen.add(key.id)
                yield key
            if len(page.hits) < size:
                return
            start += len(page.hits)
        # The window is full: go on by ranges of expiresAt, skipping what was already listed.
        ranges: list[dict[str, Any]] = [
            {"term": {"expiresAt": -1}},
            {"range": {"expiresAt": {"gte": 0, "lt": _MAX_EXPIRES_AT}}},
        ]
        while ranges:
            part = ranges.pop()
            narrowed = {"bool": {"filter": [part, query]}} if query else part
            if (await self._search(narrowed, _WINDOW - 1, 1)).hits:  # 10,000 or more: split
                bounds = part.get("range", {}).get("expiresAt")
                if bounds is None or bounds["lt"] - bounds["gte"] < 2:
                    raise IllumassError(
                        "more than 10,000 API keys share one expiresAt: they cannot all be listed "
                        "through Elasticsearch's 10,000-hit window"
                    )
                middle = (bounds["gte"] + bounds["lt"]) // 2
                ranges.append({"range": {"expiresAt": {"gte": middle, "lt": bounds["lt"]}}})
                ranges.append({"range": {"expiresAt": {"gte": bounds["gte"], "lt": middle}}})
                continue
            offset = 0
            while True:
                count = min(size, _WINDOW - offset)  # the range holds fewer than 10,000
                page = await self._search(narrowed, offset, count)
                for key in page.hits:
                    if key.id not in seen:
                        seen.add(key.id)
                        yield key
                offset += len(page.hits)
                if len(page.hits) < count or offset >= _WINDOW:
                    break

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke an API key; searches stop listing it at once. NotFoundError for an unknown id."""
        await self._keys.delete(_args.key_id(key_id), Trace())

    async def delete_api_keys(self, key_ids: Iterable[str], *, concurrency: int = 16) -> list[DeleteResult]:
        """Revoke many keys concurrently; one DeleteResult per id, in input order.

        A failure never stops the batch; an id that does not exist gives a NotFoundError result.
        """
        if isinstance(key_ids, str | bytes):
            raise TypeError("key_ids must be an iterable of ids, not a single str")
        ids = list(key_ids)
        for key_id in ids:
            _args.key_id(key_id)
        workers = check_count("concurrency", concurrency, minimum=1)
        return await _bulk.delete_all(self._keys, ids, workers)

    async def prune_api_keys(self, *, concurrency: int = 16) -> list[DeleteResult]:
        """Revoke every expired API key of the user; one DeleteResult per key.

        Kuzzle never purges expired keys, and since 2.34 only a user's first 10 keys are verified,
        so expired keys can make new ones unusable.
        """
        now_ms = int(time.time() * 1000)
        expired = {"range": {"expiresAt": {"gte": 0, "lt": now_ms}}}
        ids = [key.id async for key in self.iter_api_keys(expired, page_size=1000)]
        return await self.delete_api_keys(ids, concurrency=concurrency)

    async def find_api_key(self, token: str | Secret) -> ApiKey | None:
        """The API key whose token this is, or None.

        The server does not index fingerprints, so the search is narrowed by the expiry the
        token itself carries and the fingerprints are compared here.
        """
        text = _args.token_text(token)
        wanted = fingerprint(text)
        async for key in self.iter_api_keys(_expiry_query(text), page_size=1000):
            if key.fingerprint == wanted:
                return key
        return None

    async def check_token(self, token: str | Secret | None = None) -> TokenInfo:
        """Ask the server whether a token (by default the client's own) is valid."""
        if token is not None:
            text = _args.token_text(token)
        else:
            text = (await self._auth.bearer(self._pipeline.call, self._auth.epoch)).get_secret_value()
        request = Request(
            "POST", "/_checkToken", body=orjson.dumps({"token": text}), replay_safe=True, authenticated=False
        )
        return structure(await self._pipeline.call(request), TokenInfo)

    async def create_api_keys(
        self,
        specs: Iterable[SpecLike] | AsyncIterable[SpecLike],
        *,
        expires_in: ExpiresIn | None = None,
        concurrency: int = 16,
        max_retries: int = 5,
        on_result: ResultCallback | None = None,
    ) -> list[ProvisionResult]:
        """Create many keys concurrently; one ProvisionResult per spec, in input order.

        Specs are ``str`` descriptions or ApiKeySpec, read lazily. One failure never stops the
        batch. A result is ok only once the server accepts its key. ``on_result`` (sync or
        async) sees each result as it completes.
        """
        batch = self._batch(specs, expires_in, concurrency, max_retries)
        return await _bulk.create_all(batch, on_result)

    def provision(
        self,
        specs: Iterable[SpecLike] | AsyncIterable[SpecLike],
        *,
        expires_in: ExpiresIn | None = None,
        concurrency: int = 16,
        max_retries: int = 5,
    ) -> AbstractAsyncContextManager[AsyncIterator[ProvisionResult]]:
        """Create many keys concurrently, yielding results as they complete.

        ``async with client.auth.provision(specs) as results: async for r in results: ...``.
        Leaving the block early stops what has not started and revokes every key created but
        not yet delivered, so the server keeps exactly the keys you received.
        """
        return _bulk.stream(self._batch(specs, expires_in, concurrency, max_retries))

    def _batch(
        self,
        specs: Iterable[SpecLike] | AsyncIterable[SpecLike],
        expires_in: ExpiresIn | None,
        concurrency: int,
        max_retries: int,
    ) -> _bulk.Batch:
        if isinstance(specs, str | bytes) or not isinstance(specs, Iterable | AsyncIterable):
            raise TypeError("specs must be an iterable (or async iterable) of str or ApiKeySpec")
        return _bulk.Batch(
            self._keys,
            self,
            specs,
            default_millis=key_millis(expires_in),
            workers=check_count("concurrency", concurrency, minimum=1),
            max_retries=check_count("max_retries", max_retries, minimum=0),
        )


class AsyncIllumass:
    """Async client for the Illumass v4 API.

    >>> async with AsyncIllumass(email="me@example.com", password="...") as client:
    ...     key = await client.auth.create_api_key("CI runner", expires_in="30d")

    Credentials, one mode at a time: ``email`` and ``password`` (logs in, renews), ``api_key``
    (used as the bearer, never renewed), or ``session_token`` (a cached login token, renewed
    only if ``email`` and ``password`` are given too). They fall back to ``ILLUMASS_EMAIL``,
    ``ILLUMASS_PASSWORD`` and ``ILLUMASS_API_KEY``; the URL to ``ILLUMASS_BASE_URL``.

    ``allow_unprefixed_tokens`` accepts tokens without Kuzzle's ``kapikey-``/``kauth-`` prefix
    (servers before 2.14). ``timeout`` is seconds per attempt; ``max_retries`` applies to
    connection failures, 429 and 502-504 (and 500 for creates), with exponential backoff from
    ``retry_backoff`` seconds up to ``retry_backoff_max``.
    Responses over ``max_response_size`` bytes (decompressed) are refused. A proxy comes from
    the environment (``HTTPS_PROXY``, ``NO_PROXY``...; ``trust_env``), read once per session;
    ``ssl_context`` sets TLS; ``http_session`` lends an aiohttp session of your own (not closed
    by the client). Plain ``http://`` is refused except to loopback unless ``allow_insecure_http``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        api_key: str | Secret | None = None,
        session_token: str | Secret | None = None,
        allow_unprefixed_tokens: bool = False,
        login_expires_in: ExpiresIn = "1h",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 8.0,
        max_response_size: int = 32 * 1024 * 1024,
        http_session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        config = resolve(
            base_url,
            email=email,
            password=password,
            api_key=api_key,
            login_expires_in=login_expires_in,
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            allow_insecure_http=allow_insecure_http,
            session_token=session_token,
            allow_unprefixed_tokens=allow_unprefixed_tokens,
        )
        if http_session is not None and not isinstance(http_session, aiohttp.ClientSession):
            raise TypeError("http_session must be an aiohttp.ClientSession")
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError("ssl_context must be an ssl.SSLContext")
        transport = Transport(
            config.base_url,
            timeout=config.timeout,
            max_connections=config.max_connections,
            max_response_size=check_count("max_response_size", max_response_size, minimum=1024),
            session=http_session,
            ssl_context=ssl_context,
            trust_env=bool(trust_env),
        )
        auth = Auth(
            email=config.email,
            password=config.password,
            api_key=config.api_key,
            session_token=config.session_token,
            login_expires_in=config.login_expires_in,
        )
        backoff = Backoff(
            _seconds("retry_backoff", retry_backoff), _seconds("retry_backoff_max", retry_backoff_max)
        )
        self._pipeline = Pipeline(transport, auth, max_retries=config.max_retries, backoff=backoff)
        self._keys = KeyMaker(self._pipeline)
        self.auth: AsyncAuthAPI = AsyncAuthAPI(self._pipeline, self._keys)
        """Login, logout and API keys (create, list, find, revoke, in bulk)."""

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``https://api.illumass.com/v4``."""
        return self._pipeline.transport.base_url

    def __repr__(self) -> str:
        return f"<AsyncIllumass {self.base_url}>"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float | bool] | None = None,
        json: object = None,
    ) -> Any:
        """Call any other v4 route (entities, signals) with the same token handling.

        Returns the envelope's ``result`` (or the body, for routes that send it bare). ``path``
        is relative to the base URL, e.g. ``/entity/country.ca``. GET, HEAD, PUT, DELETE and
        OPTIONS are retried after lost responses; POST and PATCH are not.
        """
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)}")
        method = method.upper()
        if not isinstance(path, str) or not path.startswith("/") or "//" in path or "?" in path:
            raise ValueError("path must start with '/' and hold no '//' or query; pass params=")
        # A normalising proxy decodes %2e and %2f: check the segments as it would see them.
        if any(part in (".", "..") for part in unquote(path).split("/")) or "\\" in unquote(path):
            raise ValueError("path must not contain '.' or '..' segments, even escaped")
        body = None if json is None else orjson.dumps(json)
        request = Request(
            method,
            quote(path, safe="/%!$&'()*+,;=:@-._~"),  # what is already escaped stays as it is
            _query_params(params),
            body,
            replay_safe=method in _REPLAY_SAFE_METHODS,
        )
        return await self._pipeline.call(request)

    async def aclose(self) -> None:
        """Close the connections. Calls still in flight fail with IllumassError; creates that a
        cancelled caller abandoned are finished and their keys revoked first."""
        await self._keys.drain()
        await self._pipeline.transport.aclose()

    async def __aenter__(self) -> AsyncIllumass:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 3600:
        raise ValueError(f"{name} must be a number of seconds from 0 to 3600")
    return float(value)


def _expiry_query(token: str) -> dict[str, Any] | None:
    """A query for the keys whose ``expiresAt`` fits the token's ``exp`` claim; None: all keys.

    The server floors both ``iat`` and the lifetime to whole seconds for the JWT but keeps
    milliseconds in ``expiresAt``, which therefore falls within 2 s after ``exp``.
    """
    claims = _jwt.token_claims(token)
    if claims is None:
        return None
    exp = claims.exp
    if exp is None:
        return {"term": {"expiresAt": -1}}
    return {"range": {"expiresAt": {"gte": exp * 1000 - 1000, "lte": exp * 1000 + 3000}}}


def _query_params(params: Mapping[str, str | int | float | bool] | None) -> dict[str, str] | None:
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise TypeError("params must be a mapping")
    query: dict[str, str] = {}
    for name, value in params.items():
        if value is False or value is None:
            continue  # Kuzzle reads any present flag as true
        if value is True:
            query[name] = "true"
        elif isinstance(value, str | int | float):
            query[name] = str(value)
        else:
            raise TypeError(f"query parameter {name!r} must be str, int, float or bool")
    return query
