"""The request loop: every request of the SDK runs here, with one retry budget.

It owns the attempts, the backoff, the adaptive limit on requests in flight, the 401 re-login and
its single replay, and the knowledge of whether an attempt may have reached the server. Results
are returned as the envelope's ``result``; turning them into models happens after the loop.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import anyio

from ._auth import Auth
from ._pushback import Backoff, Pushback
from ._request import Request, Trace
from ._secret import Secret
from ._transport import AttemptFailed, Response, Transport
from ._wire import unwrap
from .errors import APIStatusError, IllumassError, InvalidResponseError, NotFoundError, TokenExpiredError

__all__ = ["Pipeline"]

log: Final = logging.getLogger("illumass")

_PUSHBACK: Final = frozenset({429, 503})  # the server did not act and asks us to slow down
_GATEWAY: Final = frozenset({502, 504})  # a gateway failed; the server may have acted
_MAX_RETRY_AFTER: Final = 60.0


class Pipeline:
    """Runs requests to completion: a result, or one IllumassError.

    Retries connection failures, 429, 502, 503 and 504 (and 500 where the request allows it) up
    to ``max_retries`` times, with backoff, or after ``Retry-After`` when the server gives one. An
    attempt that may have reached the server is repeated only when the request is replay-safe.
    A 401 for the token an attempt used is answered by the auth policy (one re-login) and the
    request is replayed once; that replay does not count as a retry.
    """

    def __init__(self, transport: Transport, auth: Auth, *, max_retries: int, backoff: Backoff) -> None:
        self.transport = transport
        self.auth = auth
        self.max_retries = max_retries
        self.backoff = backoff
        self.pushback = Pushback(transport.max_connections)

    async def call(self, request: Request, trace: Trace | None = None) -> Any:
        """Send ``request`` until it succeeds or must fail; return the envelope's ``result``."""
        trace = trace if trace is not None else Trace()
        epoch = self.auth.epoch
        retries = 0
        replayed = False
        token: Secret | None = request.token
        while True:
            if request.token is None and request.authenticated:
                token = self.auth.ready()
                if token is None:
                    token = await self.auth.bearer(self._send, epoch)
            error, result, retry_after = await self._attempt(request, token, trace)
            if error is None:
                return result
            if (
                isinstance(error, TokenExpiredError)
                and request.authenticated
                and request.token is None
                and token is not None
                and not replayed
                and (trace.retries_left is None or trace.spend())
            ):
                replayed = True
                token = await self.auth.rejected(token, error, self._send, epoch)
                continue
            delay = self._retry_delay(request, error, trace, retries, retry_after)
            if delay is None:
                raise error
            retries += 1
            trace.spend()
            log.info(
                "%s %s: %s; retry %d in %.2fs", request.method, request.path, _brief(error), retries, delay
            )
            await anyio.sleep(delay)

    async def _send(self, request: Request) -> Any:
        return await self.call(request)

    async def _attempt(
        self, request: Request, token: Secret | None, trace: Trace
    ) -> tuple[IllumassError | None, Any, float | None]:
        """One attempt: (None, result, None) or (error, None, Retry-After). Errors are returned, not
        raised, so that nothing of a failed attempt's context is chained onto what the caller sees."""
        pushback = self.pushback
        ticket = pushback.acquire_nowait()
        if ticket is None:
            ticket = await pushback.acquire()
        trace.attempts += 1
        debug = log.isEnabledFor(logging.DEBUG)
        started = time.perf_counter() if debug else 0.0
        try:
            response: Response = await self.transport.send(request, token)
        except AttemptFailed as failure:
            trace.maybe_reached |= failure.reached
            return failure.error, None, None
        finally:
            pushback.release()
        status = response.status
        if debug:
            log.debug(
                "%s %s -> %d [request %s] attempt %d, %.1f ms",
                request.method,
                request.path,
                status,
                response.request_id,
                trace.attempts,
                (time.perf_counter() - started) * 1000,
            )
        if status < 300 and not response.garbled:
            pushback.succeeded()
            try:
                return None, unwrap(status, response.data, response.request_id), None
            except IllumassError as exc:
                return exc, None, None
        if status in _PUSHBACK:
            pushback.pushed_back(ticket)
        if status < 300:  # a 2xx whose body is not JSON: the server acted
            trace.maybe_reached = trace.proven = True
            message = f"{request.method} {request.path}: response is not JSON ({status})"
            return InvalidResponseError(message), None, None
        if status < 400:
            message = f"unexpected redirect ({status}); redirects are not followed"
            return APIStatusError(message, status=status, request_id=response.request_id), None, None
        try:
            unwrap(status, response.data, response.request_id)
        except IllumassError as exc:
            if isinstance(exc, NotFoundError) and exc.error_id == "network.http.url_not_found":
                exc = _hint_prefix(exc, self.transport.base_url)
            elif status in _GATEWAY or (status == 500 and request.retry_server_errors):
                trace.maybe_reached = True
            return exc, None, response.retry_after
        raise AssertionError("unwrap returned for an error status")  # pragma: no cover

    def _retry_delay(
        self, request: Request, error: IllumassError, trace: Trace, retries: int, retry_after: float | None
    ) -> float | None:
        """Seconds to wait before retrying after ``error``, or None if it must not be retried."""
        left = self.max_retries - retries if trace.retries_left is None else trace.retries_left
        if left <= 0:
            return None
        if isinstance(error, APIStatusError):
            status = error.status
            retryable = (
                status in _PUSHBACK
                or (status in _GATEWAY and request.replay_safe)
                or (status == 500 and request.retry_server_errors)
            )
        else:
            # No response, or an unreadable one: retry if it cannot have acted or resending is safe.
            retryable = request.replay_safe or not trace.maybe_reached
        if not retryable:
            return None
        if retry_after is None:
            return self.backoff.delay(retries + 1)
        return retry_after if retry_after <= _MAX_RETRY_AFTER else None


def _hint_prefix(error: NotFoundError, base_url: str) -> NotFoundError:
    if base_url.rstrip("/").endswith("/v4"):
        return error
    return NotFoundError(
        f"{error.message}; the base URL {base_url} may lack the API prefix: try {base_url.rstrip('/')}/v4",
        status=error.status,
        error_id=error.error_id,
        code=error.code,
        request_id=error.request_id,
    )


def _brief(error: IllumassError) -> str:
    return str(error)[:200]
