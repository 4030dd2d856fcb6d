"""Reading JWT claims without verifying them: just enough to learn ``exp``, ``iat`` and ``_id``."""

from __future__ import annotations

import binascii
from typing import Any, NamedTuple

import orjson

__all__ = ["TokenClaims", "claims", "strip_prefix", "token_claims"]

_PREFIXES = ("kauth-", "kapikey-")


class TokenClaims(NamedTuple):
    """Who a Kuzzle token is for and when it was issued, as its (unverified) payload says."""

    user_id: str
    """The ``_id`` claim: the user's kuid."""
    iat: int
    """Issued at, in whole seconds since the epoch."""
    exp: int | None
    """Expiry in whole seconds since the epoch; None when the token never expires."""


def strip_prefix(token: str) -> str:
    """The bare JWT of a Kuzzle token (``kauth-``/``kapikey-`` prefixes exist since Kuzzle 2.14)."""
    for prefix in _PREFIXES:
        if token.startswith(prefix):
            return token[len(prefix) :]
    return token


def claims(token: str) -> dict[str, Any] | None:
    """The payload of ``token`` as a dict, or None when it is not a readable JWT."""
    if not isinstance(token, str):
        return None
    parts = token.split(".")  # a prefix is part of the header: the payload is still the second part
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = binascii.a2b_base64(payload.replace("-", "+").replace("_", "/") + "==")
        value = orjson.loads(raw)
    except ValueError:  # binascii.Error, UnicodeError and orjson.JSONDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def token_claims(token: str) -> TokenClaims | None:
    """``(user_id, iat, exp)`` of a Kuzzle token, prefix or not, without verifying it.

    Kuzzle's tokens are ``HS256({_id, iat[, exp]})`` with nothing random in them: two API keys with
    equal claims hold the same token. None for anything else (garbage, a JWT without a string
    ``_id`` and an integer ``iat``, a non-integer ``exp``); it never raises.
    """
    payload = claims(token)
    if payload is None:
        return None
    user_id, iat, exp = payload.get("_id"), payload.get("iat"), payload.get("exp")
    if not isinstance(user_id, str) or not user_id or not isinstance(iat, int) or isinstance(iat, bool):
        return None
    if exp is not None and (not isinstance(exp, int) or isinstance(exp, bool)):
        return None
    return TokenClaims(user_id, iat, exp)
