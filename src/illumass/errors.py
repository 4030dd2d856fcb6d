"""The exception tree. Callers only ever see these, never a raw aiohttp, cattrs or JSON error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKeyRejectedError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "IllumassError",
    "InvalidCredentialsError",
    "InvalidResponseError",
    "InvalidSpecError",
    "LoginRequiredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "TokenExpiredError",
]


class IllumassError(Exception):
    """Base class of every error the SDK raises."""


class APIConnectionError(IllumassError):
    """The server could not be reached, or the connection broke before a response arrived."""


class APITimeoutError(APIConnectionError):
    """An attempt took longer than the client's ``timeout``."""


class InvalidResponseError(IllumassError):
    """The server answered with something that is not a valid Kuzzle envelope or result."""


class InvalidSpecError(IllumassError, ValueError):
    """A bulk spec was invalid (bad description, duration or id); that item was not sent."""


class ApiKeyRejectedError(IllumassError):
    """The server does not accept a key it has just created; the SDK revoked it.

    Kuzzle 2.34 and later verify an API key among the first 10 keys of its user only, and never
    purge expired keys, which keep their places: prune them (``prune_api_keys``,
    ``illumass api-keys prune``) or delete unused keys.
    """


class LoginRequiredError(IllumassError):
    """A call needs a token, and the client has neither credentials nor an API key."""


class APIStatusError(IllumassError):
    """The server answered with an error status.

    Attributes mirror the Kuzzle error object: ``status`` (HTTP), ``error_id``
    (e.g. ``security.token.invalid``), ``code`` (Kuzzle's numeric code), ``message`` and
    ``request_id``; each is None where the server did not send it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_id: str | None = None,
        code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.error_id = error_id
        self.code = code
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.status}" + (f" {self.error_id}" if self.error_id else "")
        text = f"{self.message} ({where})"
        return f"{text} [request {self.request_id}]" if self.request_id else text


class BadRequestError(APIStatusError):
    """400: the server rejected the arguments."""


class ConflictError(APIStatusError):
    """The document already exists (``services.storage.document_already_exists``)."""


class AuthenticationError(APIStatusError):
    """401: no valid token, or a token the SDK will not renew (e.g. an API key)."""


class TokenExpiredError(AuthenticationError):
    """401 ``security.token.invalid`` / ``security.token.expired``: the token is expired or revoked."""


class InvalidCredentialsError(AuthenticationError):
    """Login was refused: wrong email or password."""


class PermissionDeniedError(APIStatusError):
    """403: authenticated, but not allowed."""


class NotFoundError(APIStatusError):
    """404: no such document or route."""


class PayloadTooLargeError(APIStatusError):
    """413: the request body exceeds the server's limit."""


class RateLimitError(APIStatusError):
    """429: too many requests."""


class ServerError(APIStatusError):
    """5xx: the server failed."""


class ServiceUnavailableError(ServerError):
    """503: the server is overloaded or shutting down."""


_BY_ID: dict[str, type[APIStatusError]] = {
    "security.token.invalid": TokenExpiredError,
    "security.token.expired": TokenExpiredError,
    "plugin.strategy.missing_user": InvalidCredentialsError,
    "services.storage.document_already_exists": ConflictError,
}
_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def status_error(status: int, error: Mapping[str, Any] | None, request_id: str | None) -> APIStatusError:
    """Build the exception for an error ``status`` and its (possibly absent) Kuzzle error object."""
    error = error or {}
    error_id = _str_or_none(error.get("id"))
    code = error.get("code")
    message = _str_or_none(error.get("message")) or f"HTTP {status}"
    cls = _BY_ID.get(error_id or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIStatusError
    return cls(
        message[:500],
        status=status,
        error_id=error_id,
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        request_id=request_id,
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
