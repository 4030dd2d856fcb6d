"""Secret: a value that never shows itself in repr, str, logs or tracebacks."""

from __future__ import annotations

import hmac
from typing import Final, final

__all__ = ["Secret"]

_MASK: Final = "**********"


@final
class Secret:
    """A secret string (password, JWT, API-key token).

    ``str()`` and ``repr()`` are masked; read the value with :meth:`get_secret_value`. Two secrets
    are equal when their values are (compared in constant time).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret takes a str, not {type(value).__name__}")
        self._value = value

    def get_secret_value(self) -> str:
        """Return the secret itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("Secret values cannot be pickled")
