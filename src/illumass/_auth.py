"""The auth policy: which bearer to send, when to log in, and what a 401 means.

The request loop consults it: ``ready()`` (or, when that has no token, ``bearer()``) before an
attempt, ``rejected()`` after a 401 for the token that attempt used. It sends its own requests
(login, logout) through the ``send`` callable the loop hands it, so every request, logins
included, goes through the one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import orjson

from . import _jwt
from ._request import Request
from ._secret import Secret
from ._wire import structure
from .errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    IllumassError,
    InvalidCredentialsError,
    LoginRequiredError,
    RateLimitError,
    ServerError,
    TokenExpiredError,
)
from .models import AuthToken

__all__ = ["Auth", "Mode", "Send"]

log: Final = logging.getLogger("illumass")

Send = Callable[[Request], Awaitable[Any]]
"""Runs an unauthenticated request through the request loop and returns its result."""

_RENEW_AHEAD_MAX: Final = 300.0
_RETRY_RENEWAL_AFTER: Final = 30.0


class Mode(enum.Enum):
    """How the client authenticates."""

    PASSWORD = "email and password"
    """Logs in, renews ahead of expiry and after a 401."""
    API_KEY = "API key"
    """A token used as the bearer, never renewed."""
    SESSION = "session token"
    """A cached session token (the CLI's); renewed by logging in only if a password is known."""


class Auth:
    """Holds the bearer token and keeps it valid.

    Session tokens are renewed ``min(300 s, ttl / 2)`` before they expire, timed on the monotonic
    clock from when the login was sent, so a wrong wall clock on either side changes nothing.
    Logins are single-flight, failed ones too: tasks that waited for a login that failed get its
    error instead of trying again, and after InvalidCredentialsError the same credentials are
    never sent again. ``logout()`` wins over calls in flight: they do not log in again.
    """

    def __init__(
        self,
        *,
        email: str | None,
        password: Secret | None,
        api_key: Secret | None,
        session_token: Secret | None,
        login_expires_in: str,
    ) -> None:
        self._email = email
        self._password = password
        self._login_expires_in = login_expires_in
        self.mode = Mode.API_KEY if api_key else Mode.SESSION if session_token else Mode.PASSWORD
        self._bearer: Secret | None = api_key or session_token
        self._token: AuthToken | None = None
        self._renew_at: float | None = None  # monotonic; None: never
        self._expires_at: float | None = None  # monotonic; None: never
        if session_token is not None:
            self._track(_lifetime({}, session_token, time.time()), time.monotonic())
        self._lock: asyncio.Lock | None = None
        self._logins = 0  # logins ended so far: a waiter learns whether one ended while it waited
        self._failed: IllumassError | None = None  # the last login's failure, for those waiters
        self._refused: IllumassError | None = None  # credentials the server refused
        self.epoch = 0
        """Incremented by logout: calls begun before it never log in again."""

    @property
    def token(self) -> AuthToken | None:
        """The current session token, if logged in."""
        return self._token

    def ready(self) -> Secret | None:
        """The token to send now, or None if :meth:`bearer` must log in (or renew) first."""
        bearer = self._bearer
        # An API key is never renewed: it always has a bearer and no renewal time.
        if bearer is not None and (self._renew_at is None or time.monotonic() < self._renew_at):
            return bearer
        return None

    async def bearer(self, send: Send, epoch: int) -> Secret:
        """The token to send now, logging in first if there is none or it is due for renewal."""
        bearer = self.ready()
        if bearer is not None:
            return bearer
        return await self._renew(self._bearer, send, epoch, proactive=self._bearer is not None)

    async def rejected(self, used: Secret, error: APIStatusError, send: Send, epoch: int) -> Secret:
        """A 401 answered the token ``used``: return a fresh token to replay with, or raise."""
        if self.mode is Mode.API_KEY:
            raise _rejected(
                error, "the API key was rejected: it has expired or been revoked; create a new one"
            )
        if self._password is None:
            raise _rejected(
                error, "the session token has expired or was revoked: log in again (illumass login)"
            )
        log.info("token rejected (%s); logging in again", error.error_id)
        return await self._renew(used, send, epoch)

    async def login(
        self, send: Send, email: str | None, password: Secret | None, expires_in: str | None
    ) -> AuthToken:
        """Log in now (explicitly), remembering the credentials for later renewals."""
        async with self._get_lock():
            if email is not None:
                self._email, self._password = email, password
                self._refused = None
                if self.mode is Mode.API_KEY:
                    self._bearer = None
                self.mode = Mode.PASSWORD
            if expires_in is not None:
                self._login_expires_in = expires_in
            if self._refused is not None:
                raise _again(self._refused)
            return await self._login(send)

    async def logout(self, send: Send) -> None:
        """Revoke the session token on the server and forget it. API keys are left alone."""
        if self.mode is Mode.API_KEY:
            return
        async with self._get_lock():  # a login in flight finishes first, then is revoked
            self.epoch += 1
            bearer = self._bearer
            self._forget()
            if bearer is None:
                return
            request = Request("POST", "/logout", authenticated=False, replay_safe=True)
            with contextlib.suppress(TokenExpiredError):  # already dead on the server: as wanted
                await send(_with_bearer(request, bearer))

    def _forget(self) -> None:
        self._bearer = self._token = None
        self._renew_at = self._expires_at = None

    def _get_lock(self) -> asyncio.Lock:
        # asyncio's lock has no owner: a create whose caller was cancelled may carry a login on
        # in another task (see _detach), and release the lock there.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _renew(
        self, stale: Secret | None, send: Send, epoch: int, *, proactive: bool = False
    ) -> Secret:
        """Replace ``stale`` with a fresh token, unless another task already did."""
        logins = self._logins
        async with self._get_lock():
            if epoch != self.epoch:
                raise AuthenticationError(
                    "logged out while this call was in flight; it was not retried",
                    status=401,
                    error_id="security.token.invalid",
                )
            current = self._bearer
            if current is not None and current is not stale:
                return current  # renewed while we waited
            if current is not None and proactive and not self._due():
                return current
            if self._refused is not None:
                raise _again(self._refused)
            if self._logins != logins and self._failed is not None:
                raise _again(self._failed)  # a login ran while we waited, and failed: don't repeat it
            try:
                await self._login(send)
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

    async def _login(self, send: Send) -> AuthToken:
        if self._email is None or self._password is None:
            raise LoginRequiredError(
                "no credentials: pass email and password (or ILLUMASS_EMAIL / ILLUMASS_PASSWORD), "
                "or an api_key"
            )
        self._failed = None  # an earlier login's: not what waiters for this one should get
        sent_at = time.monotonic()
        sent_at_wall = time.time()
        body = {"email": self._email, "password": self._password.get_secret_value()}
        request = Request(
            "POST",
            "/login",
            {"expiresIn": self._login_expires_in},
            orjson.dumps(body),
            replay_safe=True,
            authenticated=False,
        )
        try:
            result = await send(request)
            token = structure(result, AuthToken)
        except InvalidCredentialsError as exc:
            self._refused = self._failed = exc
            raise
        except IllumassError as exc:
            self._failed = exc
            raise
        finally:
            # Counted when it ends: a waiter that arrived while it was in flight learns its outcome
            self._logins += 1
        self._failed = None
        self._token, self._bearer = token, token.jwt
        lifetime = _lifetime(result, token.jwt, sent_at_wall)
        self._track(lifetime, sent_at)
        log.info("logged in as user %s; token valid for %s s", token.user_id, lifetime)
        return token

    def _track(self, lifetime: float | None, sent_at: float) -> None:
        if lifetime is None:
            self._expires_at = self._renew_at = None
        else:
            self._expires_at = sent_at + lifetime
            self._renew_at = self._expires_at - min(_RENEW_AHEAD_MAX, lifetime / 2)


def _with_bearer(request: Request, bearer: Secret) -> Request:
    # Logout names its token: the loop must not swap it for a fresh one, nor log in for it.
    return attrs.evolve(request, token=bearer)


def _rejected(error: APIStatusError, message: str) -> AuthenticationError:
    return AuthenticationError(
        message, status=error.status, error_id=error.error_id, code=error.code, request_id=error.request_id
    )


def _again(exc: IllumassError) -> IllumassError:
    """A fresh copy of a shared failure, so each task raises its own exception object."""
    if isinstance(exc, APIStatusError):
        return type(exc)(
            exc.message, status=exc.status, error_id=exc.error_id, code=exc.code, request_id=exc.request_id
        )
    return type(exc)(*exc.args)


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
