"""One attempt on the wire: an aiohttp session, a request, a size-limited JSON response."""

from __future__ import annotations

import asyncio
import email.utils
import io
import logging
import math
import ssl
import time
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

import aiohttp
import attrs
import orjson
from multidict import CIMultiDict
from yarl import URL

from ._config import USER_AGENT
from ._deadlines import Deadlines
from ._inline_body import InlineBodyRequest
from ._request import Request
from ._secret import Secret
from .errors import APIConnectionError, APITimeoutError, IllumassError, InvalidResponseError

__all__ = ["AttemptFailed", "Response", "Transport"]

log: Final = logging.getLogger("illumass")

_LARGE_BODY: Final = 1024 * 1024
_JSON: Final = {"Content-Type": "application/json"}
_OWN_SESSION_HEADERS: Final = {"User-Agent": USER_AGENT, "Accept": "application/json"}
_NO_TIMEOUT: Final = aiohttp.ClientTimeout()


@attrs.frozen(slots=False)  # a frozen dict class is built a third faster (attrs fills __dict__)
class Response:
    """An HTTP response whose body was read and decoded (``data`` is None for an empty body)."""

    status: int
    data: Any
    request_id: str | None
    retry_after: float | None
    garbled: bool = False
    """The body is not JSON."""


class AttemptFailed(Exception):
    """No response: ``reached`` tells whether the request may have reached the server."""

    def __init__(self, error: IllumassError, *, reached: bool) -> None:
        self.error = error
        self.reached = reached


class Transport:
    """Sends one attempt of a request and reads its response, nothing more.

    The aiohttp session is created on first use inside the running loop (or is the caller's own).
    aiohttp's silent resend of idempotent requests over a dropped keep-alive connection is turned
    off: the retry loop must see every attempt to know whether a delete already happened.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        max_connections: int,
        max_response_size: int,
        session: aiohttp.ClientSession | None = None,
        ssl_context: ssl.SSLContext | None = None,
        trust_env: bool = True,
    ) -> None:
        self._base = base_url
        self._deadlines = Deadlines(timeout)  # instead of aiohttp's timeouts: see _deadlines
        self._max_connections = max_connections
        self._max_size = max_response_size
        self._ssl = ssl_context
        self._trust_env = trust_env
        self._own_session = session is None
        self._session = session
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._bearer: Secret | None = None
        # Built once (a CIMultiDict, which aiohttp takes as it is); defaults of a caller's session stay
        self._headers_without_bearer = CIMultiDict({**_JSON, **({} if session else _OWN_SESSION_HEADERS)})
        self._bearer_headers = self._headers_without_bearer
        if session is not None:
            _no_silent_resend(session)

    @property
    def base_url(self) -> str:
        return self._base

    @property
    def max_connections(self) -> int:
        return self._max_connections

    async def aclose(self) -> None:
        """Close the session (unless it is the caller's); later attempts raise IllumassError."""
        self._closed = True
        self._deadlines.close()
        session, self._session = self._session, None
        if session is not None and self._own_session and not session.closed:
            await session.close()

    def moved(self, old: asyncio.Task[Any], new: asyncio.Task[Any], *, resend: bool) -> None:
        """An attempt running in ``old`` goes on in ``new``: see ``Deadlines.moved``."""
        self._deadlines.moved(old, new, resend=resend)

    async def send(self, request: Request, token: Secret | None) -> Response:
        """One attempt. Raises AttemptFailed when no response arrived."""
        session, loop = self._session_for_this_loop()
        url = URL(self._base + request.path, encoded=True)
        if request.params:
            url = url.with_query(request.params)
        data = request.body
        failure: AttemptFailed | None = None
        self._deadlines.start(loop)
        try:
            async with session.request(
                request.method,
                url,
                # aiohttp warns about (and blocks the loop on) large raw bytes; a fresh stream per attempt
                data=io.BytesIO(data) if data is not None and len(data) > _LARGE_BODY else data,
                headers=self._headers(token),
                allow_redirects=False,
                timeout=_NO_TIMEOUT,
                ssl=self._ssl if self._ssl is not None else True,
            ) as response:
                declared = response.content_length
                if (
                    declared is not None
                    and declared <= self._max_size
                    and "Content-Encoding" not in response.headers
                ):
                    raw = await response.read()  # read as declared: the limit is already checked
                else:
                    raw = await self._read_limited(response)
                status = response.status
                headers = response.headers
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            failure = _failed(APIConnectionError(f"{request.method} {request.path}: {exc.strerror or exc}"))
        except asyncio.CancelledError:
            # The task running the attempt now: a create whose caller was cancelled moves on
            if not self._deadlines.expired(asyncio.current_task(loop)):
                raise
            failure = _failed(
                APITimeoutError(
                    f"{request.method} {request.path}: no response within {self._deadlines.seconds}s"
                ),
                reached=True,
            )
        except aiohttp.ClientError as exc:
            failure = _failed(
                APIConnectionError(
                    f"{request.method} {request.path}: connection failed ({type(exc).__name__})"
                ),
                reached=True,
            )
        except _TooLarge as exc:
            failure = _failed(
                InvalidResponseError(
                    f"{request.method} {request.path}: response larger than {exc.limit} bytes "
                    "(max_response_size)"
                ),
                reached=True,
            )
        finally:
            self._deadlines.finish(asyncio.current_task(loop))
        if failure is not None:
            raise failure  # outside the except blocks: nothing of aiohttp's stays on __context__
        request_id = headers.get("X-Kuzzle-Request-Id")
        retry_after = _retry_after(headers.get("Retry-After")) if status >= 400 else None
        if not raw:
            return Response(status, None, request_id, retry_after)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Response(status, None, request_id, retry_after, garbled=True)
        return Response(status, decoded, request_id, retry_after)

    async def _read_limited(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, decompressed, refused past ``max_response_size`` while it is read."""
        declared = response.content_length
        if declared is not None and declared > self._max_size:
            raise _TooLarge(self._max_size)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self._max_size:
                raise _TooLarge(self._max_size)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _headers(self, token: Secret | None) -> Mapping[str, str]:
        """Always JSON (aiohttp labels a bodiless POST octet-stream, which Kuzzle refuses); the
        bearer's headers are built once per token, not per request."""
        if token is None:
            return self._headers_without_bearer
        if token is not self._bearer:
            self._bearer = token
            self._bearer_headers = headers = self._headers_without_bearer.copy()
            headers["Authorization"] = "Bearer " + token.get_secret_value()
        return self._bearer_headers

    def _session_for_this_loop(self) -> tuple[aiohttp.ClientSession, asyncio.AbstractEventLoop]:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise IllumassError("the client is closed; create a new one")
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise IllumassError(
                "this client was first used on another event loop (a second asyncio.run()?); "
                "create one client per event loop"
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                request_class=InlineBodyRequest,
                proxy=_env_proxy(self._base) if self._trust_env else None,
            )
            _no_silent_resend(self._session)
        return self._session, loop


class _TooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit


def _failed(error: IllumassError, *, reached: bool = False) -> AttemptFailed:
    return AttemptFailed(error, reached=reached)


def _env_proxy(base_url: str) -> str | None:
    """The proxy the environment names for the API (``HTTPS_PROXY``, ``NO_PROXY``...), read once.

    aiohttp's ``trust_env`` reads the environment and ``~/.netrc`` again on every request, which
    tripled the client's CPU per call.
    """
    url = URL(base_url)
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


def _no_silent_resend(session: aiohttp.ClientSession) -> None:
    # aiohttp (3.10+) resends GET/PUT/DELETE once when a kept-alive connection turns out closed;
    # the retry loop would not learn that the first DELETE may have acted. No public switch exists.
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False


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
