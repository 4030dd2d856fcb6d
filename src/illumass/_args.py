"""Argument checks that run before any request is sent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from ._secret import Secret

__all__ = ["description", "key_id", "offset", "query", "token_text"]

_MAX_BODY: Final = 1024 * 1024  # Kuzzle's server.maxRequestSize ("1MB")
_BODY_OVERHEAD: Final = len('{"description":""}')
# Characters that keep `/api-keys/{id}` a single path segment and need no escaping.
_KEY_ID: Final = re.compile(r"[A-Za-z0-9._~:@+=-]{1,512}", re.ASCII)


def description(value: object) -> str:
    """A non-empty description that fits in one request."""
    if not isinstance(value, str):
        raise TypeError(f"description must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError("description must not be empty")
    # Worst case JSON escaping is 6 bytes per character (\uXXXX); measure only when it might matter.
    if len(value) * 6 + _BODY_OVERHEAD > _MAX_BODY:
        import orjson

        if len(orjson.dumps({"description": value})) > _MAX_BODY:
            raise ValueError("description is too long: the request would exceed the server's 1 MB limit")
    return value


def key_id(value: object) -> str:
    """An API-key id that cannot change the route it is put in."""
    if not isinstance(value, str):
        raise TypeError(f"key id must be a str, not {type(value).__name__}")
    if not _KEY_ID.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"invalid key id {value[:64]!r}: use 1 to 512 of A-Z a-z 0-9 . _ ~ : @ + = -, not '.' or '..'"
        )
    return value


def offset(name: str, value: object) -> int:
    """A non-negative int (``from_``, ``size``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def query(value: object) -> dict[str, Any]:
    """A search query (Elasticsearch DSL) as a dict; None means all."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"query must be a mapping, not {type(value).__name__}")
    return dict(value)


def token_text(value: object) -> str:
    """The text of a token given as str or Secret."""
    text = value.get_secret_value() if isinstance(value, Secret) else value
    if not isinstance(text, str):
        raise TypeError(f"token must be a str or Secret, not {type(value).__name__}")
    if not text:
        raise ValueError("token must not be empty")
    return text
