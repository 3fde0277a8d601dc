"""authsvc.client against a real authsvc on the suite's Redis: AuthClient and AuthSession.

authsvc runs in-process on a real port with the test's FakeClock, which the client
shares: moving it expires access tokens for the client's refresh decisions and keeps a
retried refresh inside authsvc's grace window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from support import TEST_PASSWORD, FakeClock, RedisProcess, fast_settings, free_port

from authsvc.client import (
    AuthClient,
    AuthSession,
    DpopKey,
    InvalidCredentials,
    InvalidGrant,
    InvalidToken,
    RetryPolicy,
    SessionExpired,
    StoreUnavailable,
    TokenPair,
    TransportError,
    WeakPassword,
)
from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.tokens.keys import KeyRing

ME = "/v1/auth/me"
REFRESH = "/v1/auth/refresh"
FAST_RETRY = RetryPolicy(backoff=0.01)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorder:
    """Counts the requests reaching authsvc, and spoils the answers of the next refreshes.

    A spoiled refresh has rotated in authsvc: only its answer is lost, as when a
    connection drops on the way back or a proxy times out.
    """

    hits: Counter[str] = field(default_factory=Counter)
    lose_refreshes: int = 0
    fault: str = "disconnect"  # or "bad_gateway"
    lost_successors: list[str] = field(default_factory=list)
    hold_refreshes: asyncio.Event | None = None  # refreshes wait for it to be set

    async def observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.hits[request.path] += 1
        if request.path == REFRESH and self.hold_refreshes is not None:
            await self.hold_refreshes.wait()
        response = await handler(request)
        if request.path != REFRESH or self.lose_refreshes == 0:
            return response
        self.lose_refreshes -= 1
        assert isinstance(response, web.Response) and isinstance(response.body, bytes)
        self.lost_successors.append(json.loads(response.body)["refresh_token"])
        if self.fault == "bad_gateway":
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        assert request.transport is not None
        request.transport.close()
        return response


@dataclass
class Authsvc:
    url: str
    recorder: Recorder
    settings: Settings


async def start_authsvc(
    aiohttp_server: Any, settings: Settings, clock: FakeClock, key_ring: KeyRing
) -> Authsvc:
    recorder = Recorder()
    # The issuer is the URL the client calls: DPoP proofs name it (htu).
    port = free_port()
    settings = dataclasses.replace(settings, issuer=f"http://127.0.0.1:{port}")
    app = create_app(settings, clock=clock, key_ring=key_ring)

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await recorder.observe(request, handler)

    app.middlewares.append(record)
    server = await aiohttp_server(app, host="127.0.0.1", port=port)
    return Authsvc(f"http://{server.host}:{server.port}", recorder, settings)


@pytest.fixture
async def authsvc(
    aiohttp_server: Any, settings: Settings, clock: FakeClock, key_ring: KeyRing
) -> Authsvc:
    service = await start_authsvc(aiohttp_server, settings, clock, key_ring)
    await register(service.url, "alice")
    return service


@pytest.fixture
async def auth(authsvc: Authsvc, clock: FakeClock) -> AsyncIterator[AuthClient]:
    async with AuthClient(authsvc.url, clock=clock) as client:
        yield client


@pytest.fixture
async def tokens(auth: AuthClient) -> TokenPair:
    return await auth.login("alice", TEST_PASSWORD)


async def register(url: str, username: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/v1/users", json={"username": username, "password": TEST_PASSWORD}) as r,
    ):
        assert r.status == 201, await r.text()


async def get_json(url: str, access_token: str, key: DpopKey | None = None) -> tuple[int, Any]:
    """GET with the access token: as DPoP with a proof by ``key`` when given."""
    headers = {"Authorization": f"Bearer {access_token}"}
    if key is not None:
        headers = {
            "Authorization": f"DPoP {access_token}",
            "DPoP": key.proof("GET", url, access_token),
        }
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers) as response,
    ):
        return response.status, await response.json()


# AuthClient


async def test_login_returns_a_token_pair_with_expiry_by_the_clients_clock(
    auth: AuthClient, authsvc: Authsvc, clock: FakeClock
) -> None:
    tokens = await auth.login("alice", TEST_PASSWORD, device="laptop")

    assert tokens.expires_at == clock.now + authsvc.settings.access_token_ttl
    assert tokens.refresh_expires_at == clock.now + authsvc.settings.refresh_token_ttl
    status, me = await get_json(authsvc.url + ME, tokens.access_token, auth.dpop_key)
    assert status == 200
    assert me["session_id"] == tokens.session_id
    status, listing = await get_json(
        authsvc.url + "/v1/auth/sessions", tokens.access_token, auth.dpop_key
    )
    assert [s["device"] for s in listing["sessions"]] == ["laptop"]


async def test_token_pair_repr_leaves_the_tokens_out(tokens: TokenPair) -> None:
    assert tokens.access_token not in repr(tokens)
    assert tokens.refresh_token not in repr(tokens)
    assert tokens.session_id in repr(tokens)


async def test_wrong_password_raises_invalid_credentials(auth: AuthClient) -> None:
    with pytest.raises(InvalidCredentials) as raised:
        await auth.login("alice", "not the password at all")
    assert (raised.value.status, raised.value.error) == (401, "invalid_credentials")


async def test_change_password_keeps_this_session_and_ends_the_others(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc
) -> None:
    other = await auth.login("alice", TEST_PASSWORD)
    with pytest.raises(InvalidCredentials):
        await auth.change_password(tokens.access_token, "not my password", "a long new phrase")
    with pytest.raises(WeakPassword):
        await auth.change_password(tokens.access_token, TEST_PASSWORD, "short")
    await auth.change_password(tokens.access_token, TEST_PASSWORD, "a long new passphrase here")
    assert (await get_json(authsvc.url + ME, tokens.access_token, auth.dpop_key))[0] == 200
    assert (await get_json(authsvc.url + ME, other.access_token, auth.dpop_key))[0] == 401
    assert (await auth.login("alice", "a long new passphrase here")).session_id


async def test_delete_account_ends_every_session(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc
) -> None:
    with pytest.raises(InvalidCredentials):
        await auth.delete_account(tokens.access_token, "not my password")
    await auth.delete_account(tokens.access_token, TEST_PASSWORD)
    assert (await get_json(authsvc.url + ME, tokens.access_token, auth.dpop_key))[0] == 401
    with pytest.raises(InvalidCredentials):
        await auth.login("alice", TEST_PASSWORD)
    with pytest.raises(InvalidToken):
        await auth.delete_account(tokens.access_token, TEST_PASSWORD)


async def test_refresh_rotates_within_the_same_session(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    successor = await auth.refresh(tokens.refresh_token)

    assert successor.session_id == tokens.session_id
    assert successor.refresh_token != tokens.refresh_token
    clock.advance(authsvc.settings.refresh_reuse_grace + 1)
    with pytest.raises(InvalidGrant) as raised:
        await auth.refresh(tokens.refresh_token)
    assert (raised.value.status, raised.value.error) == (401, "invalid_grant")


async def test_logout_ends_the_session(auth: AuthClient, tokens: TokenPair) -> None:
    await auth.logout(tokens.access_token)

    with pytest.raises(InvalidGrant):
        await auth.refresh(tokens.refresh_token)
    with pytest.raises(InvalidToken) as raised:
        await auth.logout(tokens.access_token)
    assert raised.value.status == 401


async def test_logout_all_ends_every_session_of_the_user(
    auth: AuthClient, tokens: TokenPair
) -> None:
    other = await auth.login("alice", TEST_PASSWORD, device="phone")

    await auth.logout_all(tokens.access_token)

    for pair in (tokens, other):
        with pytest.raises(InvalidGrant):
            await auth.refresh(pair.refresh_token)


async def test_store_outage_raises_store_unavailable_with_retry_after(
    aiohttp_server: Any, own_redis: RedisProcess, clock: FakeClock, key_ring: KeyRing
) -> None:
    redis_process = own_redis
    try:
        settings = fast_settings(redis_url=redis_process.url, store_timeout=0.5)
        service = await start_authsvc(aiohttp_server, settings, clock, key_ring)
        redis_process.stop()
        async with AuthClient(service.url, clock=clock) as auth:
            with pytest.raises(StoreUnavailable) as raised:
                await auth.login("alice", TEST_PASSWORD)
    finally:
        redis_process.stop()
    assert raised.value.status == 503
    assert raised.value.retry_after == settings.store_retry_after
    assert raised.value.retryable


async def test_unreachable_authsvc_raises_transport_error(clock: FakeClock) -> None:
    async with AuthClient(f"http://127.0.0.1:{free_port()}", clock=clock) as auth:
        with pytest.raises(TransportError):
            await auth.login("alice", TEST_PASSWORD)


# AuthSession


async def test_session_attaches_the_access_token(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc
) -> None:
    api = AuthSession(auth, tokens)

    async with api.get(authsvc.url + ME) as response:
        assert response.status == 200
        assert (await response.json())["session_id"] == tokens.session_id
    assert authsvc.recorder.hits[REFRESH] == 0


async def test_session_refreshes_within_the_margin_before_expiry_and_not_earlier(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    saved: list[TokenPair] = []
    api = AuthSession(auth, tokens, refresh_margin=30, on_tokens=saved.append)
    clock.now = tokens.expires_at - 31

    assert (await api.get(authsvc.url + ME)).status == 200
    assert authsvc.recorder.hits[REFRESH] == 0

    clock.advance(1)
    assert (await api.get(authsvc.url + ME)).status == 200
    assert authsvc.recorder.hits[REFRESH] == 1
    assert saved == [api.tokens]
    assert api.tokens.session_id == tokens.session_id
    assert api.tokens.refresh_token != tokens.refresh_token


async def test_hundred_parallel_requests_after_expiry_make_one_refresh(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    saved: list[TokenPair] = []

    async def save(pair: TokenPair) -> None:
        saved.append(pair)

    api = AuthSession(auth, tokens, on_tokens=save)
    clock.now = tokens.expires_at + 1

    async def call() -> int:
        async with api.get(authsvc.url + ME) as response:
            return response.status

    statuses = await asyncio.gather(*(call() for _ in range(100)))

    assert statuses == [200] * 100
    assert authsvc.recorder.hits[REFRESH] == 1
    assert authsvc.recorder.hits[ME] == 100
    assert saved == [api.tokens]


async def test_401_from_the_api_gets_one_refresh_and_one_retry(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc
) -> None:
    refused = dataclasses.replace(tokens, access_token="not-a-jwt")
    api = AuthSession(auth, refused)

    async with api.get(authsvc.url + ME) as response:
        assert response.status == 200
    assert authsvc.recorder.hits[REFRESH] == 1
    assert authsvc.recorder.hits[ME] == 2


async def test_second_401_is_returned_to_the_caller(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, aiohttp_server: Any
) -> None:
    seen: list[str] = []

    async def always_401(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.Response(status=401)

    upstream = web.Application()
    upstream.router.add_get("/", always_401)
    server = await aiohttp_server(upstream)
    api = AuthSession(auth, tokens)

    async with api.get(server.make_url("/")) as response:
        assert response.status == 401
    assert authsvc.recorder.hits[REFRESH] == 1
    assert seen == [f"DPoP {tokens.access_token}", f"DPoP {api.tokens.access_token}"]


@pytest.mark.parametrize("fault", ["disconnect", "bad_gateway"])
async def test_lost_refresh_answer_is_retried_with_the_same_token_and_gets_its_successor(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock, fault: str
) -> None:
    authsvc.recorder.lose_refreshes, authsvc.recorder.fault = 1, fault
    api = AuthSession(auth, tokens, retry=FAST_RETRY)
    clock.now = tokens.expires_at + 1

    async with api.get(authsvc.url + ME) as response:
        assert response.status == 200
    assert authsvc.recorder.hits[REFRESH] == 2
    assert api.tokens.refresh_token == authsvc.recorder.lost_successors[0]

    # The session lives on: the successor rotates like any live token.
    clock.now = api.tokens.expires_at + 1
    async with api.get(authsvc.url + ME) as response:
        assert response.status == 200
    assert authsvc.recorder.hits[REFRESH] == 3


async def test_refresh_that_keeps_failing_raises_once_the_retry_window_closes(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    authsvc.recorder.lose_refreshes = 1_000
    api = AuthSession(auth, tokens, retry=RetryPolicy(window=0.2, backoff=0.01))
    clock.now = tokens.expires_at + 1

    with pytest.raises(TransportError):
        await api.get(authsvc.url + ME)
    assert authsvc.recorder.hits[REFRESH] > 1
    assert authsvc.recorder.hits[ME] == 0

    # Still within authsvc's grace, a later try gets the successor the lost ones got.
    authsvc.recorder.lose_refreshes = 0
    assert (await api.get(authsvc.url + ME)).status == 200
    assert api.tokens.refresh_token == authsvc.recorder.lost_successors[0]


async def test_refused_refresh_ends_the_session_for_every_request(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    api = AuthSession(auth, tokens)
    await auth.logout_all(tokens.access_token)
    clock.now = tokens.expires_at + 1

    results = await asyncio.gather(
        *(api.get(authsvc.url + ME) for _ in range(10)), return_exceptions=True
    )

    assert all(isinstance(result, SessionExpired) for result in results)
    with pytest.raises(SessionExpired):
        await api.get(authsvc.url + ME)
    assert authsvc.recorder.hits[REFRESH] == 1
    assert authsvc.recorder.hits[ME] == 0


async def test_cancelled_request_does_not_cancel_the_refresh_it_started(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    """Cancelling mid-refresh must not drop a successor authsvc has issued: the client
    would be left with a used refresh token, a replay once the grace is over."""
    authsvc.recorder.hold_refreshes = asyncio.Event()
    saved: list[TokenPair] = []
    api = AuthSession(auth, tokens, on_tokens=saved.append)
    clock.now = tokens.expires_at + 1

    request = asyncio.ensure_future(api.get(authsvc.url + ME))
    while authsvc.recorder.hits[REFRESH] == 0:
        await asyncio.sleep(0.01)
    request.cancel()
    authsvc.recorder.hold_refreshes.set()

    with pytest.raises(asyncio.CancelledError):
        await request
    async with api.get(authsvc.url + ME) as response:
        assert response.status == 200
    assert authsvc.recorder.hits[REFRESH] == 1
    assert len(saved) == 1
    assert api.tokens.refresh_token != tokens.refresh_token


# DPoP (RFC 9449): the client's key


async def test_the_client_binds_its_sessions_to_one_key_made_once(
    auth: AuthClient, authsvc: Authsvc
) -> None:
    key = auth.dpop_key
    assert key is not None
    first = await auth.login("alice", TEST_PASSWORD)
    second = await auth.login("alice", TEST_PASSWORD)
    assert auth.dpop_key is key
    assert first.token_type == second.token_type == "DPoP"
    for pair in (first, second):
        claims = jwt.decode(pair.access_token, options={"verify_signature": False})
        assert claims["cnf"] == {"jkt": key.thumbprint}


async def test_refresh_and_api_calls_are_signed_and_single_flight_holds(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    api = AuthSession(auth, tokens)
    clock.now = tokens.expires_at + 1
    statuses = []
    for _ in range(3):
        async with api.get(authsvc.url + ME) as response:
            statuses.append(response.status)
    assert statuses == [200, 200, 200]
    assert authsvc.recorder.hits[REFRESH] == 1
    refreshed = await auth.refresh(api.tokens.refresh_token)
    assert refreshed.token_type == "DPoP"
    await auth.logout(refreshed.access_token)
    status, _ = await get_json(authsvc.url + ME, refreshed.access_token, auth.dpop_key)
    assert status == 401


async def test_tokens_copied_to_another_client_are_refused_without_ending_the_session(
    auth: AuthClient, tokens: TokenPair, authsvc: Authsvc, clock: FakeClock
) -> None:
    async with AuthClient(authsvc.url, clock=clock) as other:
        with pytest.raises(InvalidGrant):
            await other.refresh(tokens.refresh_token)
        # Its proofs are by another key: the API refuses the access token, and the refresh
        # that follows is refused too.
        with pytest.raises(SessionExpired):
            await AuthSession(other, tokens).get(authsvc.url + ME)
    async with AuthClient(authsvc.url, clock=clock, dpop=False) as keyless:
        with pytest.raises(InvalidGrant):
            await keyless.refresh(tokens.refresh_token)
    assert (await get_json(authsvc.url + ME, tokens.access_token))[0] == 401  # as Bearer
    assert (await get_json(authsvc.url + ME, tokens.access_token, auth.dpop_key))[0] == 200
    assert (await auth.refresh(tokens.refresh_token)).session_id == tokens.session_id


async def test_a_client_without_dpop_makes_bearer_sessions(
    authsvc: Authsvc, clock: FakeClock
) -> None:
    async with AuthClient(authsvc.url, clock=clock, dpop=False) as auth:
        assert auth.dpop_key is None
        tokens = await auth.login("alice", TEST_PASSWORD)
        assert tokens.token_type == "Bearer"
        async with AuthSession(auth, tokens).get(authsvc.url + ME) as response:
            assert response.status == 200


async def test_a_dpop_key_can_be_kept_across_clients(authsvc: Authsvc, clock: FakeClock) -> None:
    key = DpopKey(clock=clock)
    async with AuthClient(authsvc.url, clock=clock, dpop=key) as first:
        tokens = await first.login("alice", TEST_PASSWORD)
    async with AuthClient(authsvc.url, clock=clock, dpop=key) as second:
        assert (await second.refresh(tokens.refresh_token)).token_type == "DPoP"
