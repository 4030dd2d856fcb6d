"""HTTP: one aiohttp session, request building, envelope parsing, retries with backoff."""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import aiohttp
import attrs
import orjson
from yarl import URL

from ._config import USER_AGENT, Config
from ._secret import Secret
from ._wire import unwrap
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    IllumassError,
    InvalidResponseError,
)

__all__ = ["Attempts", "Transport"]

T = TypeVar("T")

log: Final = logging.getLogger("illumass")

_PAUSE_STATUSES: Final = frozenset({429, 503})  # the server did not act and asks us to slow down
_GATEWAY_STATUSES: Final = frozenset({502, 504})  # a gateway failed; the server may have acted
_MAX_RETRY_AFTER: Final = 60.0
_LARGE_BODY: Final = 1024 * 1024
_JSON_HEADERS: Final = {"Content-Type": "application/json"}


@attrs.define
class Attempts:
    """What the requests of one logical call did, across retries and replays."""

    count: int = 0
    """Requests sent (or tried) for the call."""
    delivered: bool = False
    """Whether an attempt may have reached the server without its response reaching us."""


@attrs.define
class Backoff:
    """Exponential backoff with jitter: ``base`` seconds doubling up to ``cap``."""

    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based), jittered down by up to 25%."""
        delay: float = min(self.cap, self.base * 2.0 ** (retry - 1))
        return delay * (1 - 0.25 * random.random())


class Transport:
    """Sends requests to the API and returns their results, retrying what is safe to retry.

    One aiohttp session per transport, created on first use inside the running loop. At most
    ``max_connections`` requests are in flight; each attempt's ``timeout`` starts once it has a
    connection slot. A 429 or 503 pauses every request of this transport, not just the one that
    met it, so concurrent callers back off together.
    """

    def __init__(self, config: Config) -> None:
        self._base = config.base_url
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._max_connections = config.max_connections
        self.max_retries = config.max_retries
        self.backoff = Backoff()
        self._session: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._resume_at = 0.0
        self._closed = False
        self._bearer: Secret | None = None
        self._bearer_headers: Mapping[str, str] = {}

    @property
    def base_url(self) -> str:
        return self._base

    async def aclose(self) -> None:
        """Close the session; later requests raise IllumassError."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def send(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        token: Secret | None = None,
        replay_safe: bool,
        attempts: Attempts | None = None,
        max_retries: int | None = None,
    ) -> T:
        """Send a request and return ``parse(result)``.

        Retries connection failures, 429, 502, 503 and 504 up to ``max_retries`` times. A failure
        after which the server may have acted (lost response, gateway error, garbled 2xx body) is
        retried only when ``replay_safe``; ``attempts.delivered`` records that it happened.
        """
        url = URL(self._base + path, encoded=True)
        if params:
            url = url.with_query(params)
        data = None if body is None else orjson.dumps(body)
        headers = self._headers(token)
        attempts = attempts if attempts is not None else Attempts()
        retries = self.max_retries if max_retries is None else max_retries
        retry = 0
        while True:
            attempts.count += 1
            try:
                return await self._attempt(method, url, path, data, headers, parse, attempts.count)
            except _Retryable as failure:
                attempts.delivered |= failure.delivered
                retry += 1
                error = failure.error
                if retry > retries or (failure.delivered and not replay_safe):
                    raise error from None
                delay = failure.retry_after
                if delay is None:
                    delay = self.backoff.delay(retry)
                elif delay > _MAX_RETRY_AFTER:
                    raise error from None
                if failure.pause:
                    self._resume_at = max(self._resume_at, time.monotonic() + delay)
                log.info("%s %s: %s; retry %d of %d in %.2fs", method, path, error, retry, retries, delay)
                await asyncio.sleep(delay)

    async def _attempt(
        self,
        method: str,
        url: URL,
        path: str,
        data: bytes | None,
        headers: Mapping[str, str],
        parse: Callable[[Any], T],
        attempt: int,
    ) -> T:
        session = self._session or self._open()
        slots = self._slots
        assert slots is not None
        wait = self._resume_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        debug = log.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        async with slots:
            try:
                async with session.request(
                    method,
                    url,
                    # aiohttp warns about (and blocks the loop on) large raw bytes; a fresh stream per attempt
                    data=io.BytesIO(data) if data is not None and len(data) > _LARGE_BODY else data,
                    headers=headers,
                    allow_redirects=False,
                    timeout=self._timeout,
                ) as response:
                    raw = await response.read()
            except aiohttp.ClientConnectorError as exc:  # nothing was sent
                raise _Retryable(APIConnectionError(f"{method} {path}: {exc}"), False) from None
            except aiohttp.ConnectionTimeoutError:  # nothing was sent
                message = f"{method} {path}: connecting took over {self._timeout.total}s"
                raise _Retryable(APITimeoutError(message), False) from None
            except asyncio.TimeoutError:
                message = f"{method} {path}: no response within {self._timeout.total}s"
                raise _Retryable(APITimeoutError(message), True) from None
            except aiohttp.ClientError as exc:
                message = f"{method} {path}: connection failed ({type(exc).__name__})"
                raise _Retryable(APIConnectionError(message), True) from None
        status = response.status
        # Headers are read only where they matter: errors, and the debug log.
        request_id = response.headers.get("X-Kuzzle-Request-Id") if status >= 300 or debug else None
        if debug:
            log.debug(
                "%s %s -> %d [request %s] attempt %d, %.1f ms",
                method,
                path,
                status,
                request_id,
                attempt,
                (time.perf_counter() - started) * 1000,
            )
        if 300 <= status < 400:
            raise APIStatusError(
                f"unexpected redirect ({status}); redirects are not followed",
                status=status,
                request_id=request_id,
            )
        try:
            decoded = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            if status < 400:
                garbled = InvalidResponseError(f"{method} {path}: response is not JSON ({status})")
                raise _Retryable(garbled, True) from None
            decoded = None
        try:
            return parse(unwrap(status, decoded, request_id))
        except APIStatusError as exc:
            if exc.status in _PAUSE_STATUSES or exc.status in _GATEWAY_STATUSES:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                paused = exc.status in _PAUSE_STATUSES
                raise _Retryable(exc, not paused, pause=paused, retry_after=retry_after) from None
            raise
        except InvalidResponseError as exc:
            raise _Retryable(exc, True) from None

    def _headers(self, token: Secret | None) -> Mapping[str, str]:
        """Request headers; the bearer's are built once per token, not per request.

        Always JSON: aiohttp labels a bodiless POST ``application/octet-stream``, which Kuzzle refuses.
        """
        if token is None:
            return _JSON_HEADERS
        if token is not self._bearer:
            self._bearer = token
            self._bearer_headers = {**_JSON_HEADERS, "Authorization": "Bearer " + token.get_secret_value()}
        return self._bearer_headers

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise IllumassError("the client is closed")
        self._slots = asyncio.Semaphore(self._max_connections)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self._session


class _Retryable(Exception):
    """An attempt failed in a way that retrying may fix."""

    def __init__(
        self,
        error: IllumassError,
        delivered: bool,
        *,
        pause: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.error = error
        self.delivered = delivered
        self.pause = pause
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
