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


@attrs.frozen
class Config:
    """Everything a client needs, checked and resolved."""

    base_url: str
    email: str | None
    password: Secret | None = attrs.field(repr=False)
    api_key: Secret | None = attrs.field(repr=False)
    login_expires_in: str
    timeout: float
    max_retries: int
    max_connections: int


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
) -> Config:
    """Check the constructor arguments and fill the unset ones from ``ILLUMASS_*`` variables."""
    if api_key is not None and (email is not None or password is not None):
        raise ValueError("give either api_key or email/password, not both")
    if api_key is None and email is None and password is None:
        api_key = os.environ.get("ILLUMASS_API_KEY") or None
    if api_key is None:
        email = email if email is not None else os.environ.get("ILLUMASS_EMAIL") or None
        if password is None:
            password = os.environ.get("ILLUMASS_PASSWORD") or None
    url = base_url if base_url is not None else os.environ.get("ILLUMASS_BASE_URL") or DEFAULT_BASE_URL
    return Config(
        base_url=check_base_url(url, allow_insecure_http=allow_insecure_http),
        email=_optional_text("email", email),
        password=_secret("password", password),
        api_key=_secret("api_key", api_key),
        login_expires_in=expires_in_param(login_expires_in, allow_never=False),
        timeout=_positive_number("timeout", timeout),
        max_retries=check_count("max_retries", max_retries, minimum=0),
        max_connections=check_count("max_connections", max_connections, minimum=1),
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


def _secret(name: str, value: str | Secret | None) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or Secret, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return Secret(value)
