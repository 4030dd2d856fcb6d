"""illumass: the Python SDK for the Illumass v4 API.

``AsyncIllumass`` for asyncio code, ``Illumass`` for synchronous code; both log in, keep the JWT
valid, and create, list and revoke API keys, one at a time or thousands at once.
"""

from ._client import AsyncIllumass, fingerprint
from ._duration import parse_duration
from ._secret import Secret
from ._sync import Illumass
from ._version import __version__
from .errors import (
    APIConnectionError,
    ApiKeyRejectedError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IllumassError,
    InvalidCredentialsError,
    InvalidResponseError,
    InvalidSpecError,
    LoginRequiredError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TokenExpiredError,
)
from .models import ApiKey, ApiKeyPage, ApiKeySpec, AuthToken, DeleteResult, ProvisionResult, TokenInfo

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKey",
    "ApiKeyPage",
    "ApiKeyRejectedError",
    "ApiKeySpec",
    "AsyncIllumass",
    "AuthToken",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DeleteResult",
    "Illumass",
    "IllumassError",
    "InvalidCredentialsError",
    "InvalidResponseError",
    "InvalidSpecError",
    "LoginRequiredError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ProvisionResult",
    "RateLimitError",
    "Secret",
    "ServerError",
    "ServiceUnavailableError",
    "TokenExpiredError",
    "TokenInfo",
    "__version__",
    "fingerprint",
    "parse_duration",
]
