"""The wire format: Kuzzle envelopes in, models out, through one cattrs converter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, NoReturn, TypeVar

import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._secret import Secret
from .errors import InvalidResponseError, status_error
from .models import ApiKey, ApiKeyPage, AuthToken, TokenInfo

__all__ = ["converter", "structure", "unwrap"]

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NEVER = -1
_FLOAT_EXACT = 2**32 * 1000  # whole milliseconds below 2**32 s (year 2106): ms / 1000 is exact to the us


def _millis(value: object) -> int | float:
    if type(value) is int or type(value) is float:  # JSON numbers: never a bool, never a subclass
        return value
    raise TypeError(f"expected milliseconds, got {type(value).__name__}")


def _epoch_ms(value: object, _: object) -> datetime | None:
    if value is None or value == _NEVER:
        return None
    millis = _millis(value)
    if type(millis) is int and 0 <= millis < _FLOAT_EXACT:
        try:
            return datetime.fromtimestamp(millis / 1000, timezone.utc)  # the faster way, exact here
        except (OverflowError, OSError):  # past 2038 where time_t has 32 bits
            pass
    return _EPOCH + timedelta(0, 0, 0, millis)  # (days, s, us, ms): positional is faster


def _ttl_ms(value: object, _: object) -> timedelta | None:
    if value is None or value == _NEVER:
        return None
    return timedelta(0, 0, 0, _millis(value))


def _text(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _secret(value: object, _: object) -> Secret:
    return Secret(_text(value, None))


def _maybe_secret(value: object, _: object) -> Secret | None:
    return None if value is None else Secret(_text(value, None))


def _flag(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type(value).__name__}")
    return value


def _count(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


converter = cattrs.Converter(detailed_validation=False)
"""The SDK's one converter. Strict on types: the server's JSON is checked, never coerced."""
converter.register_structure_hook(str, _text)
converter.register_structure_hook(bool, _flag)
converter.register_structure_hook(int, _count)
converter.register_structure_hook(Secret, _secret)
converter.register_structure_hook(Secret | None, _maybe_secret)
converter.register_structure_hook(datetime | None, _epoch_ms)
converter.register_structure_hook(timedelta | None, _ttl_ms)

_auth_token = make_dict_structure_fn(
    AuthToken,
    converter,
    user_id=override(rename="_id"),
    expires_at=override(rename="expiresAt"),
)
_token_info = make_dict_structure_fn(
    TokenInfo,
    converter,
    user_id=override(rename="kuid"),
    expires_at=override(rename="expiresAt"),
)


def _api_key(hit: Any, _: object) -> ApiKey:
    # Kuzzle nests the key as {_id, _source: {..., _kuzzle_info: {createdAt}}}; the model is flat.
    # Written out rather than generated: every created key passes here, and this costs a fifth
    # less than a generated function over a flattened copy.
    source = hit["_source"]
    key_id, description = hit["_id"], source["description"]
    user_id, fingerprint = source["userId"], source["fingerprint"]
    # JSON strings are str, never a subclass; _text says what came instead
    if not (
        type(key_id) is str and type(description) is str and type(user_id) is str and type(fingerprint) is str
    ):
        for value in (key_id, description, user_id, fingerprint):
            _text(value, None)
    token = source.get("token")
    info = source.get("_kuzzle_info")
    return ApiKey(
        key_id,
        description,
        user_id,
        _epoch_ms(source["expiresAt"], None),
        _ttl_ms(source["ttl"], None),
        fingerprint,
        None if token is None else Secret(_text(token, None)),
        _epoch_ms(info.get("createdAt"), None) if isinstance(info, dict) else None,
    )


converter.register_structure_hook(AuthToken, _auth_token)
converter.register_structure_hook(ApiKey, _api_key)
converter.register_structure_hook(TokenInfo, _token_info)
converter.register_structure_hook(ApiKeyPage, make_dict_structure_fn(ApiKeyPage, converter))


def structure(result: object, cls: type[T]) -> T:
    """Build ``cls`` from an envelope's ``result``; anything malformed is an InvalidResponseError."""
    try:
        return converter.structure(result, cls)
    except Exception as exc:  # cattrs, KeyError, TypeError, OverflowError...: all mean "bad shape"
        raise InvalidResponseError(
            f"unexpected {cls.__name__} in the response: {type(exc).__name__}: {_brief(exc)}"
        ) from None


def unwrap(status: int, body: object, request_id: str | None) -> Any:
    """The ``result`` of a decoded response body, or the APIStatusError it reports.

    Accepts the full Kuzzle envelope, the bare error object Kuzzle sends for errors raised before
    routing (``{id, status, message, code}``), and bare results (entity and signal routes).
    """
    if isinstance(body, dict):
        if "error" in body or "result" in body:
            error = body.get("error")
            if error is None and status < 400:
                return body.get("result")
            _raise(status, error, request_id or _request_id(body))
        if status >= 400 and "id" in body and "status" in body:
            _raise(status, body, request_id)
    if status >= 400:
        _raise(status, None, request_id)
    return body


def _raise(status: int, error: object, request_id: str | None) -> NoReturn:
    if error is not None and not isinstance(error, dict):
        raise InvalidResponseError(f"malformed error object in a {status} response")
    raise status_error(status if status >= 400 else _status_of(error), error, request_id)


def _status_of(error: dict[str, Any] | None) -> int:
    # An error inside a 2xx/3xx response: trust the error's own status when it is an error status.
    status = (error or {}).get("status")
    return status if isinstance(status, int) and 400 <= status < 600 else 500


def _request_id(body: dict[str, Any]) -> str | None:
    value = body.get("requestId")
    return value if isinstance(value, str) else None


def _brief(exc: BaseException) -> str:
    # Exception texts from the converter may quote response values; keep only the shape.
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args and isinstance(exc.args[0], str) else "missing key"
    text = str(exc)
    return text[:120] if "expected" in text else type(exc).__name__
