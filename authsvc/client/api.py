"""AuthClient: login, refresh, logout, logout-all, a password change and deleting the
account against authsvc's /v1 API."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp
import msgspec

from authsvc.client.dpop import DpopKey
from authsvc.client.errors import ApiError, TransportError, api_error
from authsvc.client.tokens import TokenPair, TokenPairBody
from authsvc.clock import Clock, system_clock

DEFAULT_TIMEOUT = 10.0  # seconds for one whole request


class _ErrorBody(msgspec.Struct):
    error: str
    error_description: str = ""


_TOKEN_PAIR = msgspec.json.Decoder(TokenPairBody)
_ERROR = msgspec.json.Decoder(_ErrorBody)


class AuthClient:
    """The first-party token API of one authsvc (API.md, First-party token API).

    ``base_url`` is where authsvc answers, e.g. ``https://auth.example.com``: its
    ``AUTHSVC_ISSUER``, which DPoP proofs name. Without a ``session`` the client opens its
    own aiohttp session and closes it in ``close()``; a session passed in is left to its
    owner.

    ``dpop``: the client makes one Ed25519 key (``DpopKey``) and signs every login,
    refresh and API call with it, so its sessions are bound to that key (RFC 9449);
    pass a ``DpopKey`` to keep one across runs, or ``False`` for bearer sessions.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        clock: Clock = system_clock,
        timeout: float = DEFAULT_TIMEOUT,
        dpop: DpopKey | bool = True,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._dpop = DpopKey(clock=clock) if dpop is True else dpop or None
        # Whether the last TokenPair was bound: its access token goes as DPoP, not Bearer.
        self._token_type = "Bearer"

    @property
    def dpop_key(self) -> DpopKey | None:
        """The key this client proves, None when it makes bearer sessions."""
        return self._dpop

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def http(self) -> aiohttp.ClientSession:
        """The aiohttp session requests go through; opened on first use."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the aiohttp session if this client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def login(self, username: str, password: str, device: str | None = None) -> TokenPair:
        """Log in and start a session.

        Raises:
            InvalidCredentials: unknown user or wrong password.
            RateLimited: too many attempts for this username or address.
            ApiError: any other error response; TransportError: no usable answer.
        """
        body: dict[str, str] = {"username": username, "password": password}
        if device is not None:
            body["device"] = device
        return self._token_pair(await self._call("POST", "/v1/auth/login", json=body))

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token: the same session, a new refresh token.

        Sending the same token again within authsvc's REFRESH_REUSE_GRACE returns the
        same successor, so a refresh whose answer was lost can be retried safely.

        Raises:
            InvalidGrant: the token is unknown, expired, revoked, or a replay.
            ApiError: any other error response; TransportError: no usable answer.
        """
        return self._token_pair(
            await self._call("POST", "/v1/auth/refresh", json={"refresh_token": refresh_token})
        )

    async def logout(self, access_token: str) -> None:
        """End the session the access token belongs to.

        Raises:
            InvalidToken: the token is invalid or its session has already ended.
        """
        await self._call("POST", "/v1/auth/logout", access_token=access_token)

    async def logout_all(self, access_token: str) -> None:
        """End every session of the access token's user.

        Raises:
            InvalidToken: the token is invalid or its session has already ended.
        """
        await self._call("POST", "/v1/auth/logout-all", access_token=access_token)

    async def change_password(
        self, access_token: str, current_password: str, new_password: str
    ) -> None:
        """Set a new password; every other session of the user ends, this one stays.

        The access token must be fresh (issued within AUTHSVC_SENSITIVE_MAX_AGE): refresh
        first when it may not be.

        Raises:
            InvalidCredentials: the current password is wrong.
            WeakPassword: the new password does not meet the policy.
            InvalidToken: the token is invalid, not fresh, or its session has ended.
            RateLimited: too many failed password checks for this account.
        """
        body = {"current_password": current_password, "new_password": new_password}
        await self._call("POST", "/v1/auth/password", json=body, access_token=access_token)

    async def delete_account(self, access_token: str, password: str) -> None:
        """Delete the access token's account: every session ends, nothing of it is kept.

        Raises:
            InvalidCredentials: the password is wrong.
            InvalidToken: the token is invalid, not fresh, or its session has ended.
        """
        await self._call(
            "DELETE", "/v1/users/me", json={"password": password}, access_token=access_token
        )

    def _token_pair(self, raw: bytes) -> TokenPair:
        try:
            body = _TOKEN_PAIR.decode(raw)
        except msgspec.DecodeError:  # ValidationError is a DecodeError
            raise TransportError("the response is not a TokenPair") from None
        self._token_type = body.token_type
        return TokenPair.from_body(body, now=self._clock())

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, str] | None = None,
        access_token: str | None = None,
    ) -> bytes:
        """Send one request; return the body of a 2xx, raise for anything else."""
        url = self._base_url + path
        headers: dict[str, str] = {}
        if access_token:
            dpop = self._dpop is not None and self._token_type == "DPoP"
            headers["Authorization"] = f"{'DPoP' if dpop else 'Bearer'} {access_token}"
        if self._dpop is not None:
            # A fresh proof for every request, its ath naming the access token if any.
            headers["DPoP"] = self._dpop.proof(method, url, access_token or None)
        kwargs: dict[str, Any] = {"headers": headers, "timeout": self._timeout}
        if json is not None:
            kwargs["data"] = msgspec.json.encode(json)
            headers["Content-Type"] = "application/json"
        try:
            async with self.http.request(method, url, **kwargs) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportError(f"{method} {path}: {error!r}") from error
        if 200 <= status < 300:
            return raw
        raise _error_from(status, raw, retry_after)


def _error_from(status: int, raw: bytes, retry_after: str | None) -> ApiError:
    try:
        body = _ERROR.decode(raw)
        code, description = body.error, body.error_description
    except msgspec.DecodeError:
        # Not authsvc's body: a proxy in between answered (a 502 page, say).
        code, description = "server_error" if status >= 500 else "http_error", f"HTTP {status}"
    seconds = int(retry_after) if retry_after and retry_after.isdigit() else None
    return api_error(status, code, description, retry_after=seconds)
