"""Token state: login, expiry tracking, proactive and reactive re-login, one login at a time."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import anyio

from . import _jwt
from ._secret import Secret
from ._transport import Attempts, Transport
from ._wire import structure
from .errors import (
    APIConnectionError,
    AuthenticationError,
    LoginRequiredError,
    RateLimitError,
    ServerError,
    TokenExpiredError,
)
from .models import AuthToken

__all__ = ["Auth"]

T = TypeVar("T")

log: Final = logging.getLogger("illumass")

_RENEW_AHEAD_MAX: Final = 300.0
_RETRY_RENEWAL_AFTER: Final = 30.0


class Auth:
    """Holds the bearer token and keeps it valid.

    Session tokens are renewed ``min(300 s, ttl / 2)`` before they expire, timed on the monotonic
    clock from when the login was sent, so a wrong wall clock on either side changes nothing. A 401
    for the token a request used triggers one re-login and one replay. Logins are single-flight:
    whoever takes the lock first logs in, the others find the new token and use it.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        email: str | None,
        password: Secret | None,
        api_key: Secret | None,
        login_expires_in: str,
    ) -> None:
        self._transport = transport
        self._email = email
        self._password = password
        self._api_key = api_key
        self._login_expires_in = login_expires_in
        self._bearer: Secret | None = api_key
        self._token: AuthToken | None = None
        self._renew_at: float | None = None  # monotonic; None: never
        self._expires_at: float | None = None  # monotonic; None: never
        self._lock: anyio.Lock | None = None

    @property
    def token(self) -> AuthToken | None:
        """The current session token, if logged in."""
        return self._token

    async def bearer(self) -> Secret:
        """A token to send now, logging in first if there is none or it is due for renewal."""
        bearer = self._bearer
        if bearer is not None and (self._renew_at is None or time.monotonic() < self._renew_at):
            return bearer
        return await self._renew(bearer, proactive=bearer is not None)

    async def call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        replay_safe: bool,
        attempts: Attempts | None = None,
        max_retries: int | None = None,
    ) -> T:
        """Send an authenticated request; on a 401 for its token, renew once and replay once."""
        token = await self.bearer()
        for replay in (False, True):
            try:
                return await self._transport.send(
                    method,
                    path,
                    parse,
                    params=params,
                    body=body,
                    token=token,
                    replay_safe=replay_safe,
                    attempts=attempts,
                    max_retries=max_retries,
                )
            except TokenExpiredError as exc:
                if self._api_key is not None:
                    raise AuthenticationError(
                        "the API key was rejected: it has expired or been revoked; create a new one",
                        status=exc.status,
                        error_id=exc.error_id,
                        code=exc.code,
                        request_id=exc.request_id,
                    ) from None
                if replay:
                    raise
                log.info("%s %s: token rejected (%s); logging in again", method, path, exc.error_id)
                token = await self._renew(token)
        raise AssertionError("unreachable")

    async def login(self, email: str | None, password: Secret | None, expires_in: str | None) -> AuthToken:
        """Log in now (explicitly), remembering the credentials for later renewals."""
        if email is not None:
            self._email, self._password = email, password
            self._api_key = None
        if expires_in is not None:
            self._login_expires_in = expires_in
        async with self._get_lock():
            return await self._login()

    async def logout(self) -> None:
        """Revoke the session token on the server and forget it. API keys are left alone."""
        bearer = self._bearer
        if self._api_key is not None or bearer is None:
            return
        with contextlib.suppress(TokenExpiredError):  # already dead on the server: what logout wants
            await self._transport.send("POST", "/logout", _ignore, token=bearer, replay_safe=False)
        if self._bearer is bearer:
            self._forget()

    def _forget(self) -> None:
        self._bearer = self._token = None
        self._renew_at = self._expires_at = None

    def _get_lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    async def _renew(self, stale: Secret | None, *, proactive: bool = False) -> Secret:
        """Replace ``stale`` with a fresh token, unless another task already did."""
        if self._api_key is not None:
            return self._api_key
        async with self._get_lock():
            current = self._bearer
            if current is not None and current is not stale:
                return current  # renewed while we waited
            if current is not None and proactive and not self._due():
                return current
            try:
                await self._login()
            except (APIConnectionError, ServerError, RateLimitError) as exc:
                # A renewal ahead of expiry failed, but the token still works: keep using it.
                if not proactive or current is None or self._expired():
                    raise
                log.warning("token renewal failed (%s); using the current token until it expires", exc)
                retry_at = time.monotonic() + _RETRY_RENEWAL_AFTER
                self._renew_at = retry_at if self._expires_at is None else min(retry_at, self._expires_at)
                return current
            assert self._bearer is not None
            return self._bearer

    def _due(self) -> bool:
        return self._renew_at is not None and time.monotonic() >= self._renew_at

    def _expired(self) -> bool:
        return self._expires_at is not None and time.monotonic() >= self._expires_at

    async def _login(self) -> AuthToken:
        if self._email is None or self._password is None:
            raise LoginRequiredError(
                "no credentials: pass email and password (or ILLUMASS_EMAIL / ILLUMASS_PASSWORD), "
                "or an api_key"
            )
        sent_at = time.monotonic()
        sent_at_wall = time.time()
        raw: dict[str, Any] = {}

        def parse(result: Any) -> AuthToken:
            token = structure(result, AuthToken)
            raw.update(result)
            return token

        token = await self._transport.send(
            "POST",
            "/login",
            parse,
            params={"expiresIn": self._login_expires_in},
            body={"email": self._email, "password": self._password.get_secret_value()},
            replay_safe=True,
        )
        lifetime = _lifetime(raw, token.jwt, sent_at_wall)
        self._token, self._bearer = token, token.jwt
        if lifetime is None:
            self._expires_at = self._renew_at = None
        else:
            self._expires_at = sent_at + lifetime
            self._renew_at = self._expires_at - min(_RENEW_AHEAD_MAX, lifetime / 2)
        log.info("logged in as user %s; token valid for %s s", token.user_id, lifetime)
        return token


def _lifetime(result: Mapping[str, Any], jwt: Secret, sent_at_wall: float) -> float | None:
    """Seconds the token lives from when login was sent: from ``ttl``, else ``expiresAt``, else ``exp``.

    None means it never expires.
    """
    ttl = _number(result.get("ttl"))
    if ttl is not None:
        return None if ttl == -1 else max(0.0, ttl / 1000.0)
    expires_at = _number(result.get("expiresAt"))
    if expires_at is not None:
        return None if expires_at == -1 else max(0.0, expires_at / 1000.0 - sent_at_wall)
    exp = _number((_jwt.claims(jwt.get_secret_value()) or {}).get("exp"))
    return None if exp is None else max(0.0, exp - sent_at_wall)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _ignore(result: Any) -> None:
    return None
