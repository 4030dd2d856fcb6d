"""Client settings: arguments, their environment-variable fallbacks, defaults and checks."""

from __future__ import annotations

import ipaddress
import math
import os
from urllib.parse import urlsplit

import attrs

from ._duration import ExpiresIn, expires_in_param
from ._secret import Secret
from ._version import __version__

__all__ = ["DEFAULT_BASE_URL", "USER_AGENT", "Config", "resolve"]

DEFAULT_BASE_URL = "https://api.illumass.com/v4"
USER_AGENT = f"illumass-python/{__version__}"

_API_KEY_PREFIX = "kapikey-"
_SESSION_PREFIX = "kauth-"


@attrs.frozen
class Config:
    """Everything a client needs, checked and resolved.

    Credential modes: ``api_key`` alone (the bearer, never renewed); ``email`` and ``password``
    (renewable); ``session_token`` alone (used until it expires), or with ``email`` and
    ``password`` (used first, then renewed by logging in). ``api_key`` excludes the others.
    """

    base_url: str
    email: str | None
    password: Secret | None = attrs.field(repr=False)
    api_key: Secret | None = attrs.field(repr=False)
    login_expires_in: str
    timeout: float
    max_retries: int
    max_connections: int
    session_token: Secret | None = attrs.field(default=None, repr=False)
    """A ``kauth-`` session token from an earlier login (the CLI's cache)."""
    allow_unprefixed_tokens: bool = False
    """Accept tokens without the ``kapikey-``/``kauth-`` prefix (servers before Kuzzle 2.14)."""


def resolve(
    base_url: str | None,
    *,
    email: str | None,
    password: str | Secret | None,
    api_key: str | Secret | None,
    login_expires_in: ExpiresIn,
    timeout: float,
    max_retries: int,
    max_connections: int,
    allow_insecure_http: bool,
    session_token: str | Secret | None = None,
    allow_unprefixed_tokens: bool = False,
) -> Config:
    """Check the constructor arguments and fill the unset ones from ``ILLUMASS_*`` variables.

    Explicit arguments choose the credential mode; the environment only fills what they leave
    open (``ILLUMASS_API_KEY`` only when no credential at all was given). Tokens must carry their
    Kuzzle >= 2.14 prefix, ``kapikey-`` for ``api_key`` and ``kauth-`` for ``session_token``,
    unless ``allow_unprefixed_tokens``: a session token given as an API key would otherwise be
    used until it silently expires.
    """
    if api_key is not None and (email is not None or password is not None):
        raise ValueError("give either api_key or email/password, not both")
    if api_key is not None and session_token is not None:
        raise ValueError("give either api_key or session_token, not both")
    if not isinstance(allow_unprefixed_tokens, bool):
        raise TypeError(
            f"allow_unprefixed_tokens must be a bool, not {type(allow_unprefixed_tokens).__name__}"
        )
    key_source = "api_key"
    if api_key is None and email is None and password is None and session_token is None:
        api_key = os.environ.get("ILLUMASS_API_KEY") or None
        key_source = "ILLUMASS_API_KEY"
    if api_key is None:
        email = email if email is not None else os.environ.get("ILLUMASS_EMAIL") or None
        if password is None:
            password = os.environ.get("ILLUMASS_PASSWORD") or None
    url = base_url if base_url is not None else os.environ.get("ILLUMASS_BASE_URL") or DEFAULT_BASE_URL
    return Config(
        base_url=check_base_url(url, allow_insecure_http=allow_insecure_http),
        email=_optional_text("email", email),
        password=_secret("password", password),
        api_key=_token(key_source, api_key, _API_KEY_PREFIX, allow_unprefixed=allow_unprefixed_tokens),
        login_expires_in=expires_in_param(login_expires_in, allow_never=False, name="login_expires_in"),
        timeout=_positive_number("timeout", timeout),
        max_retries=check_count("max_retries", max_retries, minimum=0),
        max_connections=check_count("max_connections", max_connections, minimum=1),
        session_token=_token(
            "session_token", session_token, _SESSION_PREFIX, allow_unprefixed=allow_unprefixed_tokens
        ),
        allow_unprefixed_tokens=allow_unprefixed_tokens,
    )


def check_base_url(url: str, *, allow_insecure_http: bool) -> str:
    """``url`` without its trailing slash, if it is https, or http to a loopback host (or allowed)."""
    if not isinstance(url, str):
        raise TypeError(f"base_url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("base_url must be an http(s) URL such as https://api.illumass.com/v4")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("base_url must not contain credentials, a query or a fragment")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ValueError(
            f"refusing plain http to {parts.hostname}: tokens would travel unencrypted; "
            "use https, or pass allow_insecure_http=True"
        )
    return url.rstrip("/")


def check_count(name: str, value: object, *, minimum: int) -> int:
    """``value`` if it is an int of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str")
    return value


def _token(name: str, value: str | Secret | None, prefix: str, *, allow_unprefixed: bool) -> Secret | None:
    """``value`` as a Secret if it is a token of the kind ``prefix`` names; errors never quote it."""
    secret = _secret(name, value)
    if secret is None:
        return None
    text = secret.get_secret_value()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise ValueError(f"{name} contains whitespace or control characters; strip the token")
    if text.startswith(prefix):
        return secret
    if prefix == _API_KEY_PREFIX and text.startswith(_SESSION_PREFIX):
        raise ValueError(
            f"{name} holds a session token ({_SESSION_PREFIX}...), not an API key: it expires and "
            "cannot be renewed; pass it as session_token=, or create an API key (kapikey-...)"
        )
    if prefix == _SESSION_PREFIX and text.startswith(_API_KEY_PREFIX):
        raise ValueError(
            f"{name} holds an API key ({_API_KEY_PREFIX}...), not a session token; pass it as api_key="
        )
    if allow_unprefixed:
        return secret
    raise ValueError(
        f"{name} does not start with {prefix!r}, as tokens from Kuzzle 2.14 and later do; "
        "for an older server pass allow_unprefixed_tokens=True"
    )


def _secret(name: str, value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or Secret, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return Secret(value)
