"""Durations in the server's ``ms`` grammar (the npm ``ms`` 2.1.3 parser Kuzzle uses for ``expiresIn``)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

__all__ = ["ExpiresIn", "expires_in_param", "parse_duration", "parse_ms"]

ExpiresIn = str | int | float | timedelta
"""What ``expires_in`` arguments accept: an ``ms`` string ("1h", "30 days"), milliseconds, or a timedelta."""

_SECOND = 1000.0
_MINUTE = _SECOND * 60
_HOUR = _MINUTE * 60
_DAY = _HOUR * 24
_WEEK = _DAY * 7
_YEAR = _DAY * 365.25

_UNITS = {
    **dict.fromkeys(("years", "year", "yrs", "yr", "y"), _YEAR),
    **dict.fromkeys(("weeks", "week", "w"), _WEEK),
    **dict.fromkeys(("days", "day", "d"), _DAY),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), _HOUR),
    **dict.fromkeys(("minutes", "minute", "mins", "min", "m"), _MINUTE),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), _SECOND),
    **dict.fromkeys(("milliseconds", "millisecond", "msecs", "msec", "ms"), 1.0),
}

# ms 2.1.3, verbatim: JavaScript's \d and /i are ASCII-only, and its $ does not match before "\n".
_GRAMMAR = re.compile(
    r"(-?(?:[0-9]+)?\.?[0-9]+) *(milliseconds?|msecs?|ms|seconds?|secs?|s|minutes?|mins?|m"
    r"|hours?|hrs?|h|days?|d|weeks?|w|years?|yrs?|y)?",
    re.IGNORECASE | re.ASCII,
)
_MAX_LENGTH = 100
_NEVER = -1.0


def parse_ms(text: str) -> float | None:
    """Milliseconds for ``text`` exactly as ``ms(text)`` computes them, or None where ``ms`` gives up."""
    if len(text) > _MAX_LENGTH:
        return None
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        return None
    number, unit = match.groups()
    return float(number) * _UNITS[(unit or "ms").lower()]


def parse_duration(value: ExpiresIn) -> timedelta:
    """Parse an ``expires_in`` value the way the server does and return it as a timedelta.

    Strings follow the ``ms`` grammar ("1h", "1.5 hours", "30d", "-1"); numbers are milliseconds.
    Raises ValueError for what the server would not parse and TypeError for other types.
    """
    millis = _millis(value)
    try:
        return timedelta(milliseconds=millis)
    except OverflowError:
        raise ValueError(f"duration out of range: {value!r}") from None


def expires_in_param(value: ExpiresIn, *, allow_never: bool) -> str:
    """The ``expiresIn`` query value for ``value``, after checking the server would accept it.

    Strings are sent as given; numbers and timedeltas as whole milliseconds. ``-1`` (never) is
    accepted only where ``allow_never``; anything under one second is refused because Kuzzle floors
    the JWT lifetime to whole seconds and the token would be born expired.
    """
    millis = _millis(value)
    if millis == _NEVER:
        if allow_never:
            return value if isinstance(value, str) else "-1"
        raise ValueError("expires_in=-1 (never) is only allowed for API keys")
    if millis < _SECOND:
        raise ValueError(f"expires_in must be at least one second, or -1 for never; got {value!r}")
    return value if isinstance(value, str) else str(int(millis))


def _millis(value: ExpiresIn) -> float:
    if isinstance(value, str):
        if not value:
            raise ValueError("duration must not be empty")
        millis = parse_ms(value)
        if millis is None:
            raise ValueError(
                f"invalid duration {value[:40]!r}: expected a number with an optional unit "
                "(ms, s, m, h, d, w, y), e.g. '1h' or '30 days'"
            )
        return millis
    if isinstance(value, timedelta):
        return float(value // timedelta(milliseconds=1))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"duration must be a str, int, float or timedelta, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"duration must be finite, got {value!r}")
    return float(value)
