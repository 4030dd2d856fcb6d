"""Durations in the server's ``ms`` grammar (the npm ``ms`` 2.1.3 parser Kuzzle uses for ``expiresIn``).

The grammar reads a bare number as milliseconds, while Python users (and ``timeout``) count
seconds: ``expires_in=3600`` would make a key that dies after 3.6 s. So duration *arguments*
(:func:`expires_in_param`) take only what cannot be misread: a timedelta, a string with a unit, or
-1 for never. :func:`parse_duration` stays the faithful parser of what the server would do.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import timedelta
from typing import Final, Literal

__all__ = ["NEVER", "Duration", "ExpiresIn", "expires_in_param", "parse_duration", "parse_ms"]

ExpiresIn = str | timedelta | Literal[-1]
"""What ``expires_in`` arguments accept: a timedelta, an ``ms`` string with a unit ("1h", "30 days",
"3600s"), or -1 (or "-1") for never. Bare numbers are refused: the server would read milliseconds."""

Duration = str | int | float | timedelta
"""What :func:`parse_duration` accepts: anything the server parses; numbers are milliseconds there."""

NEVER: Final = -1
"""The ``expires_in`` value for an API key that never expires."""

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
_MAX_YEARS = 1000
# The server accepts any lifetime, but an expiry past year 9999 is no datetime (nor a sane key).
_MAX_MILLIS = _MAX_YEARS * _YEAR


def parse_ms(text: str) -> float | None:
    """Milliseconds for ``text`` exactly as ``ms(text)`` computes them, or None where ``ms`` gives up."""
    parsed = _parse(text)
    return None if parsed is None else parsed[0]


def parse_duration(value: Duration) -> timedelta:
    """Parse a duration the way the server does and return it as a timedelta.

    Strings follow the ``ms`` grammar ("1h", "1.5 hours", "30d", "-1"); a string without a unit
    and a bare number are milliseconds, as the server reads them (``"3600"`` is 3.6 s).
    Raises ValueError for what the server would not parse and TypeError for other types.
    """
    millis = _millis(value)
    try:
        return timedelta(milliseconds=millis)
    except OverflowError:
        raise ValueError(f"duration out of range: {_show(value)}") from None


def expires_in_param(value: ExpiresIn, *, allow_never: bool, name: str = "expires_in") -> str:
    """The ``expiresIn`` query value for ``value``, after checking the server would accept it.

    Accepted: a timedelta, a string with a unit ("1h", "3600s"), and -1 or "-1" (never, only where
    ``allow_never``). Refused with ValueError: bare numbers and strings without a unit (the server
    reads milliseconds, so 3600 would be 3.6 s), lifetimes under one second (Kuzzle floors the JWT
    lifetime to whole seconds and the token would be born expired) and over 1000 years (the expiry
    would not be a date). ``name`` is the argument's name in error messages.
    """
    if isinstance(value, str):
        parsed = _parse(value) if value else None
        if parsed is None:
            raise ValueError(
                f"invalid {name} {_show(value)}: expected a number with a unit "
                "(ms, s, m, h, d, w, y), e.g. '1h' or '30 days'"
            )
        millis, unit = parsed
        if millis != NEVER and unit is None:
            raise ValueError(_bare_number(name, value, millis, allow_never))
    elif isinstance(value, timedelta):
        millis = float(value // timedelta(milliseconds=1))
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a str or timedelta (or -1), not {type(value).__name__}")
    elif value == NEVER:
        millis = float(NEVER)
    else:
        raise ValueError(_bare_number(name, value, value, allow_never))
    if millis == NEVER:
        if allow_never:
            return "-1"
        raise ValueError(f"{name}=-1 (never) is only allowed for API keys")
    if millis < _SECOND:
        never = ", or -1 for never" if allow_never else ""
        raise ValueError(f"{name} must be at least one second{never}; got {_show(value)}")
    if millis > _MAX_MILLIS:
        never = "; use -1 for a key that never expires" if allow_never else ""
        raise ValueError(f"{name} must be at most {_MAX_YEARS} years{never}; got {_show(value)}")
    return value if isinstance(value, str) else str(int(millis))


@functools.lru_cache(maxsize=256)  # a program asks for the same few lifetimes on every create
def _parse(text: str) -> tuple[float, str | None] | None:
    """(milliseconds, unit as written or None) as ``ms`` reads ``text``; None where it gives up."""
    if len(text) > _MAX_LENGTH:
        return None
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        return None
    number, unit = match.groups()
    return float(number) * _UNITS[(unit or "ms").lower()], unit


def _bare_number(name: str, value: str | float, millis: float, allow_never: bool) -> str:
    never = ", or -1 for never" if allow_never else ""
    if not math.isfinite(millis):
        return f"{name} must be a timedelta or a string with a unit, e.g. '1h'{never}; got {value!r}"
    example = f"'{value[:40] if isinstance(value, str) else value}s' or " if millis > 0 else ""
    return (
        f"{name}={_show(value)} has no unit, and the server reads a bare number as milliseconds "
        f"({millis / _SECOND:g} s); pass a timedelta or a string with a unit, "
        f"e.g. {example}'1h'{never}"
    )


def _show(value: object) -> str:
    return repr(value[:40]) if isinstance(value, str) else repr(value)


def _millis(value: Duration) -> float:
    if isinstance(value, str):
        if not value:
            raise ValueError("duration must not be empty")
        millis = parse_ms(value)
        if millis is None:
            raise ValueError(
                f"invalid duration {_show(value)}: expected a number with an optional unit "
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
