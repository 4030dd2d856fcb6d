"""Kuzzle 2.56's errors as FakeIllumass sends them: id, numeric code, message and ``props``.

Messages are Kuzzle's templates filled with ``props`` (checked against the real server); a few
carry Kuzzle's own quirks, such as the stray `` -1`` that ``util.format`` appends to the
"authentication required" message.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KuzzleError"]


class KuzzleError(Exception):
    """A Kuzzle error: HTTP status, error id, numeric code, message and message arguments."""

    def __init__(
        self,
        status: int,
        error_id: str | None,
        code: int,
        message: str,
        *,
        props: list[Any] | None = None,
        bare: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        """None for the rare errors Kuzzle sends with only a message and a status."""
        self.code = code
        self.message = message
        self.props: list[Any] = [] if props is None else props
        self.bare = bare
        """Sent as a bare error object, as Kuzzle does for errors raised before routing."""

    def to_json(self) -> dict[str, Any]:
        """The error object as Kuzzle serialises it (``KuzzleError.toJSON`` without the stack)."""
        if self.error_id is None:
            return {"message": self.message, "status": self.status}
        return {
            "code": self.code,
            "id": self.error_id,
            "message": self.message,
            "props": self.props,
            "status": self.status,
        }


# -- security -------------------------------------------------------------------------------------


def invalid_token() -> KuzzleError:
    """``security.token.invalid``: bad signature, expired (Kuzzle >= 2.34), revoked, unknown key."""
    return KuzzleError(401, "security.token.invalid", 117506049, "Invalid token.")


def expired_token() -> KuzzleError:
    """``security.token.expired``: what Kuzzle before 2.34 said for an expired token."""
    return KuzzleError(401, "security.token.expired", 117506054, "Token expired")


def unauthorized(action: str) -> KuzzleError:
    """An anonymous call to an action that needs a user."""
    return KuzzleError(
        401,
        "security.rights.unauthorized",
        117637121,
        f'Unauthorized: authentication required to execute the action "auth:{action}". -1',
        props=["auth", action, "-1"],
    )


def refresh_forbidden(what: str) -> KuzzleError:
    """``auth:refreshToken`` on an API key or a token that never expires."""
    return KuzzleError(
        401,
        "security.token.refresh_forbidden",
        117506056,
        f"{what} cannot be refreshed.",
        props=[what],
    )


def ttl_exceeded() -> KuzzleError:
    """An ``expiresIn`` above the configured maxTTL."""
    return KuzzleError(
        400, "security.token.ttl_exceeded", 117506052, "expiresIn value exceeds maximum allowed value"
    )


def missing_credentials(message: str) -> KuzzleError:
    """The login strategy's refusal ("Missing credentials", "wrong username or password")."""
    return KuzzleError(401, "plugin.strategy.missing_user", 67305492, message, props=[message])


# -- api.assert -----------------------------------------------------------------------------------


def invalid_argument(name: str, expected: str) -> KuzzleError:
    """``api.assert.invalid_argument``."""
    return KuzzleError(
        400,
        "api.assert.invalid_argument",
        33619970,
        f'Invalid argument "{name}". Expected: {expected}',
        props=[name, expected],
    )


def bad_expires_in() -> KuzzleError:
    """An ``expiresIn`` that ``ms`` cannot parse, or 0."""
    return invalid_argument("expiresIn", "a number of milliseconds, or a parsable timespan string")


def invalid_type(name: str, expected: str) -> KuzzleError:
    """``api.assert.invalid_type``."""
    return KuzzleError(
        400,
        "api.assert.invalid_type",
        33619969,
        f'Wrong type for argument "{name}" (expected: {expected})',
        props=[name, expected],
    )


def missing_argument(name: str) -> KuzzleError:
    """``api.assert.missing_argument``."""
    return KuzzleError(
        400, "api.assert.missing_argument", 33619971, f'Missing argument "{name}".', props=[name]
    )


def body_required() -> KuzzleError:
    """``api.assert.body_required``."""
    return KuzzleError(400, "api.assert.body_required", 33619976, "The request must specify a body.")


# -- services.storage -----------------------------------------------------------------------------


def not_found(key_id: str) -> KuzzleError:
    """A document missing from the ``api-keys`` collection."""
    return KuzzleError(
        404,
        "services.storage.not_found",
        16842763,
        f'Document "{key_id}" not found in "kuzzle":"api-keys".',
        props=[key_id, "kuzzle", "api-keys"],
    )


def not_found_for_user(key_id: str, user_id: str) -> KuzzleError:
    """``ApiKey.load`` of another user's key."""
    return KuzzleError(
        404,
        "services.storage.not_found",
        16842763,
        f'ApiKey "{key_id}" not found for user "{user_id}".',
        props=[key_id],
    )


def already_exists() -> KuzzleError:
    """A create with an ``_id`` already taken (by any user): 400, not 409."""
    return KuzzleError(400, "services.storage.document_already_exists", 16842769, "Document already exists.")


def bad_request(reason: str) -> KuzzleError:
    """An Elasticsearch 400 passed through by Kuzzle: the ES reason is the message."""
    return KuzzleError(400, "services.storage.unexpected_bad_request", 16842785, reason, props=[reason])


# -- network.http (sent bare, before routing) -----------------------------------------------------


def request_too_large() -> KuzzleError:
    """A body over ``server.maxRequestSize``."""
    return KuzzleError(
        413, "network.http.request_too_large", 50397185, "Maximum HTTP request size exceeded.", bare=True
    )


def unsupported_content(content_type: str) -> KuzzleError:
    """A Content-Type other than JSON, urlencoded form or multipart form."""
    return KuzzleError(
        400,
        "network.http.unsupported_content",
        50397192,
        f'Invalid request content-type. Expected "application/json", got: "{content_type}".',
        props=[content_type],
        bare=True,
    )


def unsupported_charset(charset: str) -> KuzzleError:
    """A ``charset=`` other than utf-8."""
    return KuzzleError(
        400,
        "network.http.unsupported_charset",
        50397193,
        f'Unsupported request charset. Expected "utf-8", got: "{charset}".',
        props=[charset],
        bare=True,
    )


def body_parse_failed(start: str) -> KuzzleError:
    """A body that is not JSON; Kuzzle quotes its first 50 characters."""
    return KuzzleError(
        400,
        "network.http.body_parse_failed",
        50397196,
        f"Unable to convert the HTTP body to JSON: {start}",
        props=[start],
        bare=True,
    )


def url_not_found(path: str) -> KuzzleError:
    """No route for this method and path (the path as Kuzzle sees it, without ``/v4``)."""
    return KuzzleError(
        404, "network.http.url_not_found", 50397191, f"API URL not found: {path}.", props=[path]
    )


def body_not_object() -> KuzzleError:
    """A JSON body that is neither an object nor an array (Kuzzle sends no id or code for it)."""
    return KuzzleError(400, None, 0, 'Attribute body must be of type "object" or "array"')
