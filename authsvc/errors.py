"""The exception tree: every error authsvc answers with, and its wire format.

Each class carries its code, its HTTP status and the status it takes under /oauth/
(``oauth_status``, its own status unless RFC 6749 says otherwise), and renders its own
body and headers. Nothing here knows the web framework: ``authsvc.http.errors`` writes
them out, for both surfaces.

AuthsvcError                       {"error", "error_description"}, status
├── InvalidRequest                 400 invalid_request
├── WeakPassword                   400 weak_password
├── UnsupportedGrantType           400 unsupported_grant_type
├── InvalidCredentials             401 invalid_credentials
├── InvalidGrant                   401 invalid_grant (400 under /oauth/)
├── InvalidToken                   401 invalid_token, WWW-Authenticate: Bearer error=...
│   ├── MissingToken               401 invalid_token, WWW-Authenticate: Bearer
│   └── InvalidDpopToken           401 invalid_token, WWW-Authenticate: DPoP error=...
├── InvalidDpopProof               401 invalid_dpop_proof (400 under /oauth/); on resource
│   │                              calls WWW-Authenticate: DPoP error=..., algs=...
│   └── MissingDpopProof           400 invalid_dpop_proof (AUTHSVC_DPOP=required, a login)
├── InvalidClient                  401 invalid_client, WWW-Authenticate: Basic
├── RegistrationClosed             403 registration_closed
├── AccountDisabled                403 account_disabled
├── InvalidCsrf                    403 invalid_csrf
├── NotFound                       404 not_found
├── MethodNotAllowed               405 method_not_allowed
├── UsernameTaken                  409 username_taken
├── PayloadTooLarge                413 payload_too_large
├── UnsupportedMediaType           415 unsupported_media_type
├── RateLimited                    429 rate_limited, Retry-After
├── StoreUnavailable               503 store_unavailable, Retry-After
└── Overloaded                     503 store_unavailable, Retry-After (hash queue full)
"""

from __future__ import annotations

from typing import ClassVar


class AuthsvcError(Exception):
    """Base of every error that authsvc renders as a contract error body."""

    code: ClassVar[str] = "server_error"
    status: ClassVar[int] = 500
    # The status under /oauth/: the class's own status unless it sets another, so an
    # unexpected crash is a 500 on both surfaces.
    oauth_status: ClassVar[int] = 500
    default_description: ClassVar[str] = "the request failed"

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "oauth_status" not in cls.__dict__:
            cls.oauth_status = cls.status

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(AuthsvcError):
    """The body or a parameter is missing, malformed or of the wrong type."""

    code = "invalid_request"
    status = 400
    default_description = "the request is malformed"


class WeakPassword(AuthsvcError):
    """The new password does not meet the password policy."""

    code = "weak_password"
    status = 400


class UnsupportedGrantType(AuthsvcError):
    """The grant_type of /oauth/token is not one this server accepts (RFC 6749 §5.2)."""

    code = "unsupported_grant_type"
    status = 400


class InvalidCredentials(AuthsvcError):
    """Unknown username or wrong password; the two are deliberately indistinguishable."""

    code = "invalid_credentials"
    status = 401
    default_description = "invalid username or password"


class InvalidGrant(AuthsvcError):
    """The refresh token is unknown, expired, revoked or replayed (RFC 6749 §5.2)."""

    code = "invalid_grant"
    status = 401
    oauth_status = 400  # RFC 6749 §5.2
    default_description = "the refresh token is invalid, expired or revoked"


class InvalidToken(AuthsvcError):
    """The access token is malformed, expired, badly signed or its session has ended."""

    code = "invalid_token"
    status = 401
    default_description = "the access token is invalid, expired or revoked"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class MissingToken(InvalidToken):
    """No bearer token came with a request that needs one."""

    default_description = "a bearer access token is required"

    def headers(self) -> dict[str, str]:
        # RFC 6750 §3.1: no error attribute when the request carried no credentials.
        return {"WWW-Authenticate": "Bearer"}


# RFC 9449 §7.1: the challenge of a resource call names the algorithms a proof may use.
DPOP_ALGS_CHALLENGE = 'algs="ES256 EdDSA"'


class InvalidDpopToken(InvalidToken):
    """An access token sent with ``Authorization: DPoP`` is bad or not bound to the proof's key."""

    def headers(self) -> dict[str, str]:
        # RFC 9449 §7.1: a DPoP-scheme request is challenged with the DPoP scheme.
        return {"WWW-Authenticate": f'DPoP error="invalid_token", {DPOP_ALGS_CHALLENGE}'}


class InvalidDpopProof(AuthsvcError):
    """The ``DPoP`` header is missing where needed, malformed, badly signed, for another
    request, outside the time window, or replayed (RFC 9449 §4.3)."""

    code = "invalid_dpop_proof"
    status = 401
    oauth_status = 400  # RFC 9449 §5.2: the token endpoint answers 400
    default_description = "the DPoP proof is invalid"

    def __init__(self, description: str | None = None, *, resource: bool = False) -> None:
        super().__init__(description)
        self.resource = resource

    def at_resource(self) -> InvalidDpopProof:
        """The same error as a resource call (a Bearer route) answers it, with its challenge."""
        return type(self)(self.description, resource=True)

    def headers(self) -> dict[str, str]:
        if not self.resource:
            return {}
        return {"WWW-Authenticate": f'DPoP error="invalid_dpop_proof", {DPOP_ALGS_CHALLENGE}'}


class MissingDpopProof(InvalidDpopProof):
    """A login without a proof while AUTHSVC_DPOP=required."""

    status = 400
    oauth_status = 400
    default_description = "a DPoP proof is required to log in"


class InvalidClient(AuthsvcError):
    """The client credentials are missing or wrong (RFC 6749 §5.2)."""

    code = "invalid_client"
    status = 401
    default_description = "client authentication failed"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="authsvc"'}


class RegistrationClosed(AuthsvcError):
    """Self-service registration is turned off (AUTHSVC_REGISTRATION=closed)."""

    code = "registration_closed"
    status = 403
    default_description = "registration is closed"


class AccountDisabled(AuthsvcError):
    """The right password of an account an operator has disabled."""

    code = "account_disabled"
    status = 403
    default_description = "this account is disabled"


class InvalidCsrf(AuthsvcError):
    """A cookie-mode refresh without the session's X-CSRF-Token, or from a foreign Origin."""

    code = "invalid_csrf"
    status = 403
    default_description = "the X-CSRF-Token header or the Origin is missing or wrong"


class NotFound(AuthsvcError):
    """No such resource, or one that belongs to somebody else."""

    code = "not_found"
    status = 404
    default_description = "not found"


class MethodNotAllowed(AuthsvcError):
    """The path exists but not with this method."""

    code = "method_not_allowed"
    status = 405

    def __init__(self, description: str, allowed: str) -> None:
        super().__init__(description)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allowed}


class UsernameTaken(AuthsvcError):
    """Another account already has this username (after normalisation)."""

    code = "username_taken"
    status = 409
    default_description = "the username is already taken"


class PayloadTooLarge(AuthsvcError):
    """The request body is larger than AUTHSVC_MAX_BODY_SIZE."""

    code = "payload_too_large"
    status = 413
    default_description = "the request body is too large"


class UnsupportedMediaType(AuthsvcError):
    """The request body is not of the content type the endpoint takes."""

    code = "unsupported_media_type"
    status = 415


class _RetryLater(AuthsvcError):
    def __init__(self, description: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(description)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_RetryLater):
    """Too many login attempts for this username or client address."""

    code = "rate_limited"
    status = 429
    default_description = "too many attempts, retry later"


class StoreUnavailable(_RetryLater):
    """Redis did not answer in time, or refused the connection."""

    code = "store_unavailable"
    status = 503
    default_description = "the session store is unavailable, retry later"


class Overloaded(_RetryLater):
    """Too many password hashes are waiting for a thread (AUTHSVC_HASH_QUEUE_LIMIT)."""

    # API.md gives 503 one code; what a client does with it (wait Retry-After, try
    # again) is the same, and the description says what is busy.
    code = "store_unavailable"
    status = 503
    default_description = "too many password checks are waiting; retry later"
