"""AuthSession: call your APIs with one session's access token, refreshed as needed."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from authsvc.client.api import AuthClient
from authsvc.client.errors import (
    ApiError,
    AuthsvcClientError,
    InvalidGrant,
    SessionExpired,
    TransportError,
)
from authsvc.client.tokens import TokenPair

logger = logging.getLogger(__name__)

TokensCallback = Callable[[TokenPair], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a refresh that got no usable answer is retried, with the same refresh token.

    Retrying is safe only within authsvc's REFRESH_REUSE_GRACE (10 s by default): then a
    refresh that went through but whose answer was lost returns the same successor.
    Later, the same token is a replay and ends the session. ``window`` is therefore
    kept below the grace.
    """

    window: float = 8.0  # seconds from the first attempt; below REFRESH_REUSE_GRACE
    attempt_timeout: float = 3.0  # seconds one attempt may take
    backoff: float = 0.1  # first pause between attempts, doubled each time


class AuthSession:
    """One authsvc session (one login) used to call APIs with its access token.

    Every request made through it carries ``Authorization: Bearer <access token>`` (or,
    for a session bound to the AuthClient's DPoP key, ``Authorization: DPoP`` and a fresh
    ``DPoP`` proof for that request), so send only requests meant for your own APIs
    through it. Before a request, an access
    token that expires within ``refresh_margin`` seconds is refreshed first; a 401 from
    the API is answered by one refresh and one retry. Concurrent requests share one
    refresh. A refresh that fails on the way is retried per ``retry``; one that authsvc
    refuses (invalid_grant) ends the session: that request and every later one raise
    SessionExpired. ``on_tokens`` is called with each new TokenPair, to persist it; should
    it raise, the requests waiting on that refresh raise too, and the new pair is kept.
    Expiry is judged by the AuthClient's clock, the one TokenPair times are anchored to.

    Request bodies must be sendable twice (bytes, str, ``json=``, a form dict), since a
    request answered 401 is sent again.
    """

    def __init__(
        self,
        auth: AuthClient,
        tokens: TokenPair,
        *,
        http: aiohttp.ClientSession | None = None,
        refresh_margin: int = 30,
        retry: RetryPolicy | None = None,
        on_tokens: TokensCallback | None = None,
    ) -> None:
        self._auth = auth
        self._tokens = tokens
        self._http = http
        self._refresh_margin = refresh_margin
        self._retry = retry or RetryPolicy()
        self._on_tokens = on_tokens
        self._rotation: asyncio.Task[TokenPair] | None = None
        self._ended = False

    @property
    def tokens(self) -> TokenPair:
        """The current TokenPair."""
        return self._tokens

    async def access_token(self) -> str:
        """An access token good for at least ``refresh_margin`` more seconds.

        Raises:
            SessionExpired: the session is over.
            TransportError, ApiError: the refresh failed and its retries ran out.
        """
        return (await self._fresh_tokens()).access_token

    async def refresh(self) -> TokenPair:
        """Rotate now, whatever the access token's expiry; shared with concurrent callers.

        Raises:
            SessionExpired: the session is over.
            TransportError, ApiError: the refresh failed and its retries ran out.
        """
        return await self._refresh_after(self._tokens)

    def request(self, method: str, url: str | URL, **kwargs: Any) -> RequestContext:
        """Send a request with the access token; ``kwargs`` are aiohttp's.

        Use as ``async with session.request(...) as response`` or
        ``response = await session.request(...)``.
        """
        return RequestContext(self._send(method, url, kwargs))

    def get(self, url: str | URL, **kwargs: Any) -> RequestContext:
        return self.request("GET", url, **kwargs)

    def post(self, url: str | URL, **kwargs: Any) -> RequestContext:
        return self.request("POST", url, **kwargs)

    def put(self, url: str | URL, **kwargs: Any) -> RequestContext:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str | URL, **kwargs: Any) -> RequestContext:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str | URL, **kwargs: Any) -> RequestContext:
        return self.request("DELETE", url, **kwargs)

    async def _send(
        self, method: str, url: str | URL, kwargs: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        http = self._http or self._auth.http
        headers = CIMultiDict[str](kwargs.pop("headers", None) or {})
        tokens = await self._fresh_tokens()
        self._authorize(headers, tokens, method, url)
        response = await http.request(method, url, headers=headers, **kwargs)
        if response.status != 401:
            return response
        # The access token was refused before its expiry: the API's clock runs ahead of
        # ours, or authsvc's keys changed. One refresh and one retry; a second 401 is
        # the API's answer.
        response.release()
        tokens = await self._refresh_after(tokens)
        self._authorize(headers, tokens, method, url)
        return await http.request(method, url, headers=headers, **kwargs)

    def _authorize(
        self, headers: CIMultiDict[str], tokens: TokenPair, method: str, url: str | URL
    ) -> None:
        key = self._auth.dpop_key
        if tokens.token_type == "DPoP" and key is not None:
            # RFC 9449 §7.1: a proof of this request (its own jti, so a retry has one of
            # its own) whose ath names the access token.
            headers["Authorization"] = f"DPoP {tokens.access_token}"
            headers["DPoP"] = key.proof(method, url, tokens.access_token)
        else:
            headers["Authorization"] = f"Bearer {tokens.access_token}"

    async def _fresh_tokens(self) -> TokenPair:
        tokens = self._tokens
        if self._ended:
            raise SessionExpired("the session is over; log in again")
        if self._auth.clock() < tokens.expires_at - self._refresh_margin:
            return tokens
        return await self._refresh_after(tokens)

    async def _refresh_after(self, stale: TokenPair) -> TokenPair:
        """Return tokens newer than ``stale``, starting a refresh only if none is running.

        Every caller holding the same stale pair waits on one refresh, so a burst of
        requests after expiry spends one refresh token once.
        """
        if self._ended:
            raise SessionExpired("the session is over; log in again")
        if self._tokens is not stale:
            return self._tokens
        if self._rotation is None:
            self._rotation = asyncio.create_task(self._rotate(stale))
        # A caller that is cancelled must not cancel the refresh the others wait on.
        return await asyncio.shield(self._rotation)

    async def _rotate(self, stale: TokenPair) -> TokenPair:
        try:
            tokens = await self._refresh_with_retries(stale.refresh_token)
        except InvalidGrant as error:
            self._ended = True
            raise SessionExpired(f"authsvc refused the refresh token: {error}") from error
        finally:
            self._rotation = None
        self._tokens = tokens
        if self._on_tokens is not None:
            result = self._on_tokens(tokens)
            if inspect.isawaitable(result):
                await result
        return tokens

    async def _refresh_with_retries(self, refresh_token: str) -> TokenPair:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry.window
        pause = self._retry.backoff
        while True:
            error: AuthsvcClientError
            try:
                async with asyncio.timeout(
                    min(self._retry.attempt_timeout, deadline - loop.time())
                ):
                    return await self._auth.refresh(refresh_token)
            except TimeoutError:
                error = TransportError("the refresh got no answer in time")
            except TransportError as failure:
                error = failure
            except ApiError as failure:
                if not failure.retryable:
                    raise
                error = failure
                pause = max(pause, failure.retry_after or 0)
            if loop.time() + pause >= deadline:
                raise error
            logger.info("refresh failed (%s); retrying with the same refresh token", error)
            await asyncio.sleep(pause)
            pause *= 2


class RequestContext:
    """An AuthSession request: awaitable, or an async context manager that releases."""

    __slots__ = ("_coro", "_response")

    def __init__(self, coro: Coroutine[Any, Any, aiohttp.ClientResponse]) -> None:
        self._coro = coro
        self._response: aiohttp.ClientResponse | None = None

    def __await__(self) -> Generator[Any, None, aiohttp.ClientResponse]:
        return self._coro.__await__()

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._coro
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.release()
            await self._response.wait_for_close()
