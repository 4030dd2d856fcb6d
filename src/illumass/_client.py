"""AsyncIllumass and its ``auth`` namespace."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import anyio

from . import _args, _bulk, _jwt
from ._auth import Auth
from ._config import check_count, resolve
from ._duration import ExpiresIn, expires_in_param
from ._secret import Secret
from ._transport import Attempts, Transport
from ._wire import structure
from .errors import ConflictError, IllumassError, InvalidResponseError, NotFoundError, TokenExpiredError
from .models import ApiKey, ApiKeyPage, ApiKeySpec, AuthToken, ProvisionResult, TokenInfo

__all__ = ["AsyncAuthAPI", "AsyncIllumass", "fingerprint"]

log: Final = logging.getLogger("illumass")

DEFAULT_API_KEY_EXPIRES_IN: Final = "1h"
"""Illumass documents a 1 h default; it is sent explicitly because stock Kuzzle defaults to never."""
_DEFAULT_WIRE: Final = expires_in_param(DEFAULT_API_KEY_EXPIRES_IN, allow_never=True)

_VISIBLE_NOW: Final = {"refresh": "wait_for"}
"""Deletes are not refreshed by default: a revoked key would stay listed for about a second."""

_REPLAY_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_METHODS: Final = _REPLAY_SAFE_METHODS | {"POST", "PATCH"}

SpecLike = str | ApiKeySpec
ResultCallback = Callable[[ProvisionResult], Awaitable[None] | None]


def fingerprint(token: str | Secret) -> str:
    """The SHA-256 hex digest the server stores for an API-key token (prefix included)."""
    return hashlib.sha256(_args.token_text(token).encode()).hexdigest()


class AsyncAuthAPI:
    """``client.auth``: login, logout, API keys (one at a time and in bulk), token checks."""

    def __init__(self, auth: Auth, transport: Transport) -> None:
        self._auth = auth
        self._transport = transport

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
        to log in again when the token nears expiry or is rejected.
        """
        if (email is None) != (password is None):
            raise ValueError("give both email and password, or neither")
        if email is not None and (not isinstance(email, str) or not email):
            raise TypeError("email must be a non-empty str")
        secret = password if isinstance(password, Secret) or password is None else Secret(password)
        if password is not None and not _args.token_text(secret):
            raise ValueError("password must not be empty")
        wire = None if expires_in is None else expires_in_param(expires_in, allow_never=False)
        return await self._auth.login(email, secret, wire)

    async def logout(self) -> None:
        """Revoke the session token. With an API key this does nothing: use ``delete_api_key``."""
        await self._auth.logout()

    async def create_api_key(
        self,
        description: str,
        *,
        expires_in: ExpiresIn | None = None,
        key_id: str | None = None,
    ) -> ApiKey:
        """Create an API key; its token (``key.token``) is returned this one time only.

        ``expires_in`` defaults to "1h"; -1 makes a key that never expires. Creation is exactly
        once even across retries: every create carries an id, and a key whose response was lost is
        revoked and created again. A ``key_id`` that already exists raises ConflictError.
        """
        wire = _DEFAULT_WIRE if expires_in is None else expires_in_param(expires_in, allow_never=True)
        return await self._create(
            _args.description(description),
            wire,
            _new_key_id() if key_id is None else _args.key_id(key_id),
            Attempts(),
            None,
        )

    async def search_api_keys(
        self, query: Mapping[str, Any] | None = None, *, from_: int = 0, size: int = 100
    ) -> ApiKeyPage:
        """One page of the user's API keys matching ``query`` (Elasticsearch DSL; None = all).

        Tokens are never returned here. ``total`` counts this page only (as the server does).
        """
        params = {
            "from": str(_args.offset("from_", from_)),
            "size": str(_args.offset("size", size)),
        }
        return await self._auth.call(
            "POST",
            "/api-keys/_search",
            _page,
            params=params,
            body=_args.query(query),
            replay_safe=True,
        )

    def iter_api_keys(
        self, query: Mapping[str, Any] | None = None, *, page_size: int = 100
    ) -> AsyncIterator[ApiKey]:
        """Every API key matching ``query``, page by page until a short page.

        Offsets shift under deletion: collect the ids first if you delete while iterating.
        """
        return self._pages(_args.query(query), check_count("page_size", page_size, minimum=1))

    async def _pages(self, body: dict[str, Any], size: int) -> AsyncIterator[ApiKey]:
        start = 0
        while True:
            page = await self.search_api_keys(body, from_=start, size=size)
            for key in page.hits:
                yield key
            if len(page.hits) < size:
                return
            start += len(page.hits)

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke an API key. Raises NotFoundError for an unknown id."""
        await self._delete(_args.key_id(key_id), Attempts())

    async def find_api_key(self, token: str | Secret) -> ApiKey | None:
        """The API key whose token this is, or None.

        The server does not index fingerprints, so the search is narrowed by the expiry the
        token itself carries and the fingerprints are compared here.
        """
        text = _args.token_text(token)
        wanted = fingerprint(text)
        async for key in self.iter_api_keys(_expiry_query(text)):
            if key.fingerprint == wanted:
                return key
        return None

    async def check_token(self, token: str | Secret | None = None) -> TokenInfo:
        """Ask the server whether a token (by default the client's own) is valid."""
        text = (
            _args.token_text(token) if token is not None else (await self._auth.bearer()).get_secret_value()
        )
        return await self._transport.send(
            "POST", "/_checkToken", _token_info, body={"token": text}, replay_safe=True
        )

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
        batch. ``on_result`` (sync or async) sees each result as it completes.
        """
        return await _bulk.create_all(
            self._provisioner(expires_in, max_retries), specs, concurrency, on_result
        )

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
        return _bulk.stream(self._provisioner(expires_in, max_retries), specs, concurrency)

    def _provisioner(self, expires_in: ExpiresIn | None, max_retries: int) -> _bulk.Provisioner:
        default = _DEFAULT_WIRE if expires_in is None else expires_in_param(expires_in, allow_never=True)
        retries = check_count("max_retries", max_retries, minimum=0)

        async def create(spec: ApiKeySpec, attempts: Attempts) -> ApiKey:
            wire = default if spec.expires_in is None else expires_in_param(spec.expires_in, allow_never=True)
            # One id for every try, so a key made by a lost attempt is found and replaced.
            key_id = _new_key_id() if spec.key_id is None else _args.key_id(spec.key_id)
            description = _args.description(spec.description)
            for retry in range(1, retries + 2):
                try:
                    return await self._create(description, wire, key_id, attempts, retries)
                except TokenExpiredError:
                    # Rejected again right after a fresh login (sessions being flushed): in a batch
                    # that is one more transient failure, not the end of this key.
                    if retry > retries:
                        raise
                    await anyio.sleep(self._transport.backoff.delay(retry))
            raise AssertionError("unreachable")

        async def revoke(key_id: str) -> None:
            await self._delete(key_id, Attempts())

        return _bulk.Provisioner(create, revoke)

    async def _create(
        self,
        description: str,
        expires_in: str,
        key_id: str,
        attempts: Attempts,
        max_retries: int | None,
    ) -> ApiKey:
        params = {"expiresIn": expires_in, "_id": key_id}
        body = {"description": description}
        repairs = (self._transport.max_retries if max_retries is None else max_retries) + 1
        for _ in range(repairs):
            try:
                return await self._auth.call(
                    "POST",
                    "/api-keys/_create",
                    _created_key,
                    params=params,
                    body=body,
                    replay_safe=True,
                    attempts=attempts,
                    max_retries=max_retries,
                )
            except ConflictError:
                if not attempts.delivered:
                    raise  # the id was taken before this call
                log.info(
                    "API key %s was created by a lost attempt; revoking it to create it again",
                    key_id,
                )
                await self._delete(key_id, attempts)
                attempts.delivered = False
            except IllumassError:
                if attempts.delivered:
                    await self._discard(key_id)
                raise
        raise IllumassError(f"could not create API key {key_id}: its response was lost {repairs} times")

    async def _delete(self, key_id: str, attempts: Attempts) -> None:
        try:
            await self._auth.call(
                "DELETE",
                f"/api-keys/{key_id}",
                _ignore,
                params=_VISIBLE_NOW,
                replay_safe=True,
                attempts=attempts,
            )
        except NotFoundError:
            if not attempts.delivered:
                raise  # otherwise an earlier attempt deleted it and its response was lost

    async def _discard(self, key_id: str) -> None:
        """Best effort: remove a key whose creation may have happened but could not be confirmed."""
        try:
            await self._delete(key_id, Attempts(delivered=True))
        except IllumassError as exc:
            log.warning("API key %s may exist without its token; delete it (%s)", key_id, exc)


class AsyncIllumass:
    """Async client for the Illumass v4 API.

    >>> async with AsyncIllumass(email="me@example.com", password="...") as client:
    ...     key = await client.auth.create_api_key("CI runner", expires_in="30d")

    Arguments fall back to ``ILLUMASS_BASE_URL``, ``ILLUMASS_EMAIL``, ``ILLUMASS_PASSWORD`` and
    ``ILLUMASS_API_KEY``. With ``api_key`` the token is used as the bearer and never renewed.
    ``timeout`` is seconds per attempt; ``max_retries`` applies to connection failures, 429 and
    502-504. Plain ``http://`` is refused except to loopback unless ``allow_insecure_http``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        email: str | None = None,
        password: str | Secret | None = None,
        api_key: str | Secret | None = None,
        login_expires_in: ExpiresIn = "1h",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_connections: int = 100,
        allow_insecure_http: bool = False,
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
        )
        self._transport = Transport(config)
        self._auth = Auth(
            self._transport,
            email=config.email,
            password=config.password,
            api_key=config.api_key,
            login_expires_in=config.login_expires_in,
        )
        self.auth = AsyncAuthAPI(self._auth, self._transport)
        """Login, logout and API keys."""

    @property
    def base_url(self) -> str:
        """The API base URL, e.g. ``https://api.illumass.com/v4``."""
        return self._transport.base_url

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
        if any(part in (".", "..") for part in path.split("/")):
            raise ValueError("path must not contain '.' or '..' segments")
        return await self._auth.call(
            method,
            quote(path, safe="/%!$&'()*+,;=:@-._~"),  # what is already escaped stays as it is
            _identity,
            params=_query_params(params),
            body=json,
            replay_safe=method in _REPLAY_SAFE_METHODS,
        )

    async def aclose(self) -> None:
        """Close the connections. The client cannot be used afterwards."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncIllumass:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _new_key_id() -> str:
    """An id for a create, chosen before its first attempt: what makes retrying it safe.

    128 random bits in hex: as unique as a uuid4 string, at a seventh of its cost.
    """
    return os.urandom(16).hex()


def _expiry_query(token: str) -> dict[str, Any] | None:
    """A query for the keys whose ``expiresAt`` fits the token's ``exp`` claim; None: all keys.

    The server floors both ``iat`` and the lifetime to whole seconds for the JWT but keeps
    milliseconds in ``expiresAt``, which therefore falls within 2 s after ``exp``.
    """
    claims = _jwt.claims(token)
    if claims is None:
        return None
    exp = claims.get("exp")
    if exp is None:
        return {"term": {"expiresAt": -1}}
    if isinstance(exp, bool) or not isinstance(exp, int):
        return None
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


def _page(result: Any) -> ApiKeyPage:
    return structure(result, ApiKeyPage)


def _token_info(result: Any) -> TokenInfo:
    return structure(result, TokenInfo)


def _created_key(result: Any) -> ApiKey:
    key = structure(result, ApiKey)
    if key.token is None:
        raise InvalidResponseError("the created API key came without its token")
    return key


def _identity(result: Any) -> Any:
    return result


def _ignore(result: Any) -> None:
    return None
