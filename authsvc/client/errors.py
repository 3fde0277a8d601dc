"""What authsvc.client raises.

AuthsvcClientError                 base of everything the client raises
├── TransportError                 no usable answer: connection refused or dropped,
│                                  timeout, a success body that is not the contract's
├── ApiError                       authsvc (or a proxy before it) answered with an error
│   ├── InvalidCredentials         401 invalid_credentials
│   ├── AccountDisabled            403 account_disabled
│   ├── WeakPassword               400 weak_password
│   ├── InvalidGrant               401 invalid_grant
│   ├── InvalidToken               401 invalid_token
│   ├── RateLimited                429 rate_limited, retry_after
│   └── StoreUnavailable           503 store_unavailable, retry_after
└── SessionExpired                 AuthSession: the session is over; log in again
"""

from __future__ import annotations

from typing import ClassVar


class AuthsvcClientError(Exception):
    """Base of every error authsvc.client raises."""


class TransportError(AuthsvcClientError):
    """No usable answer came back: the request may or may not have reached authsvc."""


class ApiError(AuthsvcClientError):
    """An error response: the contract's ``error`` code, its description and the status."""

    code: ClassVar[str | None] = None

    def __init__(
        self, status: int, code: str, description: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.error = code
        self.description = description
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: 429 and any 5xx."""
        return self.status == 429 or self.status >= 500


class InvalidCredentials(ApiError):
    """Unknown username or wrong password."""

    code = "invalid_credentials"


class AccountDisabled(ApiError):
    """The password is right, and an operator has disabled the account."""

    code = "account_disabled"


class WeakPassword(ApiError):
    """The new password does not meet authsvc's password policy."""

    code = "weak_password"


class InvalidGrant(ApiError):
    """The refresh token is unknown, expired, revoked or replayed."""

    code = "invalid_grant"


class InvalidToken(ApiError):
    """The access token is missing, invalid, expired, or its session has ended."""

    code = "invalid_token"


class RateLimited(ApiError):
    """Too many attempts; ``retry_after`` says when to try again."""

    code = "rate_limited"


class StoreUnavailable(ApiError):
    """authsvc's store did not answer; ``retry_after`` says when to try again."""

    code = "store_unavailable"


class SessionExpired(AuthsvcClientError):
    """authsvc refused the session's refresh token: the user has to log in again."""


_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (
        InvalidCredentials,
        AccountDisabled,
        WeakPassword,
        InvalidGrant,
        InvalidToken,
        RateLimited,
        StoreUnavailable,
    )
    if cls.code is not None
}


def api_error(
    status: int, code: str, description: str, *, retry_after: int | None = None
) -> ApiError:
    """Build the ApiError subclass that matches the contract's error code."""
    return _BY_CODE.get(code, ApiError)(status, code, description, retry_after=retry_after)
