"""Result types. Frozen, snake_case, aware UTC datetimes; None where the server says -1 (never).

Every model has ``to_dict(*, include_secrets=False)``: plain, JSON-safe data for logs, files and
APIs (``json.dumps(key.to_dict())``). Datetimes become ISO 8601 strings, timedeltas seconds
(float), errors ``{type, message, status, error_id}``, and secrets None unless asked for.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from ._duration import ExpiresIn
from ._secret import Secret
from .errors import APIStatusError, IllumassError

__all__ = ["ApiKey", "ApiKeyPage", "ApiKeySpec", "AuthToken", "DeleteResult", "ProvisionResult", "TokenInfo"]


class _Model:
    """What every model shares: conversion to plain data."""

    __slots__ = ()

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """This model as JSON-safe plain data (nested models included), one key per field.

        Datetimes are ISO 8601 strings, timedeltas seconds as floats, errors dicts with ``type``,
        ``message``, ``status`` and ``error_id``. Secrets (tokens) are None unless
        ``include_secrets``: then they are in clear, so treat the result as a secret.
        """
        converter = _WITH_SECRETS if include_secrets else _PLAIN
        data: dict[str, Any] = converter.unstructure(self)
        return data


@attrs.frozen
class AuthToken(_Model):
    """A session token from ``login``: the JWT, whose user it is, and when it expires."""

    jwt: Secret
    user_id: str
    expires_at: datetime | None = None
    """Expiry as the server's clock reports it; None if the token never expires."""
    ttl: timedelta | None = None
    """Lifetime granted by the server; None if the token never expires."""


@attrs.frozen
class ApiKey(_Model):
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
class ApiKeyPage(_Model):
    """One page of ``search_api_keys``. ``total`` counts the hits on this page, as Kuzzle does."""

    hits: list[ApiKey]
    total: int


@attrs.frozen
class TokenInfo(_Model):
    """The result of ``check_token``."""

    valid: bool
    state: str | None = None
    """Why the token is invalid, as the server words it; None when valid."""
    expires_at: datetime | None = None
    user_id: str | None = None


@attrs.frozen
class ApiKeySpec(_Model):
    """One key to create in bulk: a description, optionally its lifetime and its id.

    ``expires_in`` takes what the ``expires_in`` arguments take (a timedelta, a string with a unit,
    or -1 for never); a bare number fails that item with InvalidSpecError, as the server would read
    milliseconds. In ``to_dict`` a timedelta ``expires_in`` becomes a string in milliseconds
    ("90000ms") so that the dict, fed back to ``ApiKeySpec(**d)``, means the same lifetime.
    """

    description: str
    expires_in: ExpiresIn | None = None
    key_id: str | None = None


@attrs.frozen
class ProvisionResult(_Model):
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

    def to_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """Like every model's ``to_dict``, plus ``ok``."""
        return {**super().to_dict(include_secrets=include_secrets), "ok": self.ok}


@attrs.frozen
class DeleteResult(_Model):
    """The outcome of revoking one key in ``delete_api_keys`` or ``prune_api_keys``."""

    key_id: str
    error: IllumassError | None = None

    @property
    def ok(self) -> bool:
        """True when the key is revoked."""
        return self.error is None


def _error(error: BaseException) -> dict[str, Any]:
    # Exception texts are written never to hold secrets (see errors.py), so the message is safe.
    if isinstance(error, APIStatusError):
        return {
            "type": type(error).__name__,
            "message": error.message,
            "status": error.status,
            "error_id": error.error_id,
        }
    return {"type": type(error).__name__, "message": str(error), "status": None, "error_id": None}


def _spec_value(value: object) -> object:
    # Specs are checked only when their item runs, so an invalid one may hold anything: keep the
    # result JSON-safe anyway (a bulk report must not fail on the item it reports as invalid).
    if isinstance(value, timedelta):
        return f"{value // timedelta(milliseconds=1)}ms"
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return repr(value)


def _converter(secret: Any) -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_unstructure_hook(timedelta, timedelta.total_seconds)
    converter.register_unstructure_hook(Secret, secret)
    converter.register_unstructure_hook(BaseException, _error)  # single dispatch: every subclass
    converter.register_unstructure_hook(
        ApiKeySpec,
        make_dict_unstructure_fn(
            ApiKeySpec,
            converter,
            description=override(unstruct_hook=_spec_value),
            expires_in=override(unstruct_hook=_spec_value),
            key_id=override(unstruct_hook=_spec_value),
        ),
    )
    return converter


_PLAIN = _converter(lambda secret: None)
_WITH_SECRETS = _converter(Secret.get_secret_value)
