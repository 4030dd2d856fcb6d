"""Result types. Frozen, snake_case, aware UTC datetimes; None where the server says -1 (never)."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs

from ._duration import ExpiresIn
from ._secret import Secret
from .errors import IllumassError

__all__ = ["ApiKey", "ApiKeyPage", "ApiKeySpec", "AuthToken", "DeleteResult", "ProvisionResult", "TokenInfo"]


@attrs.frozen
class AuthToken:
    """A session token from ``login``: the JWT, whose user it is, and when it expires."""

    jwt: Secret
    user_id: str
    expires_at: datetime | None = None
    """Expiry as the server's clock reports it; None if the token never expires."""
    ttl: timedelta | None = None
    """Lifetime granted by the server; None if the token never expires."""


@attrs.frozen
class ApiKey:
    """An API key. ``token`` is set only on the result of ``create_api_key``: keep it then."""

    id: str
    description: str
    user_id: str
    expires_at: datetime | None
    ttl: timedelta | None
    fingerprint: str
    """SHA-256 hex of the token, the only way to find a key from its token later."""
    token: Secret | None = None
    created_at: datetime | None = None


@attrs.frozen
class ApiKeyPage:
    """One page of ``search_api_keys``. ``total`` counts the hits on this page, as Kuzzle does."""

    hits: list[ApiKey]
    total: int


@attrs.frozen
class TokenInfo:
    """The result of ``check_token``."""

    valid: bool
    state: str | None = None
    """Why the token is invalid, as the server words it; None when valid."""
    expires_at: datetime | None = None
    user_id: str | None = None


@attrs.frozen
class ApiKeySpec:
    """One key to create in bulk: a description, optionally its lifetime and its id."""

    description: str
    expires_in: ExpiresIn | None = None
    key_id: str | None = None


@attrs.frozen
class ProvisionResult:
    """The outcome of one spec in a bulk run: ``api_key`` when it worked, ``error`` when not."""

    index: int
    """Position of the spec in the input."""
    spec: ApiKeySpec
    api_key: ApiKey | None
    error: IllumassError | None
    attempts: int
    """Requests made for this spec, retries and exactly-once repairs included."""

    @property
    def ok(self) -> bool:
        """True when the key was created and its token is in ``api_key.token``."""
        return self.error is None


@attrs.frozen
class DeleteResult:
    """The outcome of revoking one key in ``delete_api_keys`` or ``prune_api_keys``."""

    key_id: str
    error: IllumassError | None = None

    @property
    def ok(self) -> bool:
        """True when the key is revoked."""
        return self.error is None
