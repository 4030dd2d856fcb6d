"""Reading JWT claims without verifying them: just enough to learn ``exp`` and ``_id``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

__all__ = ["claims", "strip_prefix"]

_PREFIXES = ("kauth-", "kapikey-")


def strip_prefix(token: str) -> str:
    """The bare JWT of a Kuzzle token (``kauth-``/``kapikey-`` prefixes exist since Kuzzle 2.14)."""
    for prefix in _PREFIXES:
        if token.startswith(prefix):
            return token[len(prefix) :]
    return token


def claims(token: str) -> dict[str, Any] | None:
    """The payload of ``token`` as a dict, or None when it is not a readable JWT."""
    parts = strip_prefix(token).split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None
