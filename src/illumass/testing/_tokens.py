"""HS256 JWTs as Kuzzle issues them (jsonwebtoken 9): claims ``_id``, ``iat``, ``exp`` only.

There is no nonce, so one user's tokens issued in the same second with the same lifetime are
byte-identical, session tokens and API keys alike, exactly as on Kuzzle 2.56.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from typing import Any

import orjson

from .._jwt import claims, strip_prefix

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Signs and verifies tokens with one random secret."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def sign(self, user_id: str, now: float, ttl_ms: float, prefix: str) -> str:
        """A token for ``user_id`` issued at ``now`` (epoch seconds): payload exactly
        ``{"_id", "iat", "exp"}``, ``exp = iat + floor(ttl_ms / 1000)``; ``ttl_ms == -1`` gives one
        without ``exp`` (never expires)."""
        iat = math.floor(now)
        payload: dict[str, Any] = {"_id": user_id, "iat": iat}
        if ttl_ms != -1:
            payload["exp"] = iat + math.floor(ttl_ms / 1000)
        body = f"{_HEADER}.{_b64(orjson.dumps(payload))}"
        return prefix + f"{body}.{self._signature(body)}"

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this signer issued (expired or not), or None if it did not."""
        jwt = strip_prefix(token)
        body, _, signature = jwt.rpartition(".")
        if not hmac.compare_digest(signature, self._signature(body)):
            return None
        return claims(jwt)

    def _signature(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
