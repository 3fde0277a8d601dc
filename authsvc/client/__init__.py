"""authsvc.client: an async client for authsvc's token API, and a session for your APIs.

async with AuthClient("https://auth.example.com") as auth:
    tokens = await auth.login("alice", "correct horse battery staple", device="cli")
    api = AuthSession(auth, tokens, on_tokens=save_tokens)
    async with api.get("https://api.example.com/orders") as response:
        orders = await response.json()
"""

from authsvc.client.api import AuthClient
from authsvc.client.dpop import DpopKey
from authsvc.client.errors import (
    AccountDisabled,
    ApiError,
    AuthsvcClientError,
    InvalidCredentials,
    InvalidGrant,
    InvalidToken,
    RateLimited,
    SessionExpired,
    StoreUnavailable,
    TransportError,
    WeakPassword,
)
from authsvc.client.session import AuthSession, RequestContext, RetryPolicy, TokensCallback
from authsvc.client.tokens import TokenPair

__all__ = [
    "AccountDisabled",
    "ApiError",
    "AuthClient",
    "AuthSession",
    "AuthsvcClientError",
    "DpopKey",
    "InvalidCredentials",
    "InvalidGrant",
    "InvalidToken",
    "RateLimited",
    "RequestContext",
    "RetryPolicy",
    "SessionExpired",
    "StoreUnavailable",
    "TokenPair",
    "TokensCallback",
    "TransportError",
    "WeakPassword",
]
