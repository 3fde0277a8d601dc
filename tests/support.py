"""Helpers shared by the tests: a Redis process, a fake clock, settings, HTTP shortcuts and
the contract's error assertions."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

# The process runners live in servers.py (bench/ uses them too); re-exported here.
from servers import TEST_PASSWORD as TEST_PASSWORD
from servers import RedisProcess as RedisProcess
from servers import free_port as free_port
from servers import redis_server_binary as redis_server_binary

from authsvc.config import RateLimit, Settings
from authsvc.http import oauth, ops, v1
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.keys import KeyRing

# "ALICE" in fullwidth letters, which NFKC folds to plain "ALICE".
FULLWIDTH_ALICE = "\uff21\uff2c\uff29\uff23\uff25"


class FakeClock:
    """A clock that starts at the real time and moves only when a test says so."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


def fast_settings(**overrides: Any) -> Settings:
    """Settings for tests: cheap argon2 and generous rate limits (tests of limits set theirs)."""
    base = Settings(
        port=8080,
        argon2_time_cost=1,
        argon2_memory_cost=64,  # Only for testing!
        argon2_parallelism=1,
        hash_concurrency=2,
        login_rate_limit=RateLimit(1000, 60),
        login_failure_limit=RateLimit(1000, 3600),
        registration_rate_limit=RateLimit(1000, 60),
        refresh_rate_limit=RateLimit(1000, 60),
        client_auth_failure_limit=RateLimit(1000, 60),
    )
    return dataclasses.replace(base, **overrides)


async def register(client: TestClient[Any, Any], username: str = "alice") -> dict[str, Any]:
    response = await client.post(
        "/v1/users", json={"username": username, "password": TEST_PASSWORD}
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def login(
    client: TestClient[Any, Any], username: str = "alice", **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": TEST_PASSWORD, **extra}
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def refresh(client: TestClient[Any, Any], refresh_token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def raw_request(client: TestClient[Any, Any], request: bytes) -> bytes:
    """Send bytes no HTTP client library would send, and return the raw response."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


def every_route(session_id: str = "AAAAAAAAAAAAAAAAAAAAAA") -> list[tuple[str, str]]:
    """(method, path) of every route authsvc serves, from its route tables: a route added
    later is in every test that goes through them all."""
    return [
        (route.method, route.path.replace("{session_id}", session_id))
        for table in (v1.routes, oauth.routes, ops.routes)
        for route in table
        if isinstance(route, web.RouteDef)
    ]


async def post_user(client: Any, username: str, password: str = TEST_PASSWORD) -> Any:
    """POST /v1/users, whatever it answers (``register`` asserts a 201)."""
    return await client.post("/v1/users", json={"username": username, "password": password})


async def post_login(client: Any, username: str = "alice", password: str = TEST_PASSWORD) -> Any:
    """POST /v1/auth/login, whatever it answers (``login`` asserts a 200)."""
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


async def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the contract's error shape: exactly error and error_description, as JSON."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == code
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    return body


async def assert_invalid_token(response: Any) -> None:
    """A bad token: 401 invalid_token with the error attribute of RFC 6750 §3.1."""
    await assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def assert_missing_token(response: Any) -> None:
    """No token: 401 invalid_token, and no error attribute (RFC 6750 §3.1)."""
    await assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def access_tokens(settings: Settings, key_ring: KeyRing, **overrides: Any) -> AccessTokens:
    """An AccessTokens like the app's, with some parameters changed."""
    params: dict[str, Any] = {
        "issuer": settings.effective_issuer,
        "audience": settings.audience,
        "client_id": settings.client_id,
        "ttl": settings.access_token_ttl,
    }
    params.update(overrides)
    return AccessTokens(key_ring, **params)
