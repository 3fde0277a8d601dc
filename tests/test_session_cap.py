"""MAX_SESSIONS_PER_USER: a login beyond it ends the user's least recently used session."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio
from support import TEST_PASSWORD, FakeClock, bearer, login, refresh, register

from authsvc.config import load_settings
from authsvc.store import keyspace


async def _listed(client: Any, pair: dict[str, Any]) -> set[str]:
    response = await client.get("/v1/auth/sessions", headers=bearer(pair))
    assert response.status == 200
    return {session["session_id"] for session in (await response.json())["sessions"]}


def test_max_sessions_per_user_defaults_to_100_and_reads_the_environment() -> None:
    assert load_settings({}).max_sessions_per_user == 100
    settings = load_settings({"AUTHSVC_MAX_SESSIONS_PER_USER": "3"})
    assert settings.max_sessions_per_user == 3


async def test_login_beyond_the_cap_ends_the_least_recently_used_session(
    make_client: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(max_sessions_per_user=3)
    user = await register(client)
    first = await login(client, device="first")
    clock.advance(10)
    second = await login(client, device="second")
    clock.advance(10)
    third = await login(client, device="third")
    clock.advance(10)
    # Using the oldest session makes the second one the least recently used.
    first = await (await refresh(client, first["refresh_token"])).json()
    clock.advance(10)
    with caplog.at_level(logging.INFO, logger="authsvc"):
        fourth = await login(client, device="fourth")

    assert (await client.get("/v1/auth/me", headers=bearer(second))).status == 401
    assert (await refresh(client, second["refresh_token"])).status == 401
    for pair in (first, third, fourth):
        assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
    assert await _listed(client, fourth) == {
        first["session_id"], third["session_id"], fourth["session_id"]
    }  # fmt: skip
    evictions = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    assert evictions == [
        f"session evicted: user {user['user_id']} session {second['session_id']}"
        " (over MAX_SESSIONS_PER_USER)"
    ]


async def test_the_evicted_sessions_hash_is_deleted(
    make_client: Any, redis_client: redis.asyncio.Redis
) -> None:
    client = await make_client(max_sessions_per_user=1)
    user = await register(client)
    first = await login(client)
    await login(client)
    assert not await redis_client.exists(keyspace.session(user["user_id"], first["session_id"]))
    assert await redis_client.zcard(keyspace.sessions(user["user_id"])) == 1


async def test_concurrent_logins_never_overshoot_the_cap(
    make_client: Any, redis_client: redis.asyncio.Redis
) -> None:
    client = await make_client(max_sessions_per_user=5)
    user = await register(client)
    responses = await asyncio.gather(
        *(
            client.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
            for _ in range(30)
        )
    )
    assert {response.status for response in responses} == {200}
    pairs = [await response.json() for response in responses]
    live = [
        pair
        for pair in pairs
        if (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
    ]
    assert len(live) == 5
    assert await redis_client.zcard(keyspace.sessions(user["user_id"])) == 5
    assert await _listed(client, live[0]) == {pair["session_id"] for pair in live}


async def test_sessions_that_ended_do_not_count_against_the_cap(
    make_client: Any, clock: FakeClock
) -> None:
    """Logged-out and idle sessions leave room: only live sessions are evicted for a login."""
    client = await make_client(max_sessions_per_user=2, refresh_token_ttl=100)
    await register(client)
    idle = await login(client)
    clock.advance(101)  # the first session is past its idle lifetime
    kept = await login(client)
    logged_out = await login(client)
    assert (await client.post("/v1/auth/logout", headers=bearer(logged_out))).status == 204
    newest = await login(client)
    assert (await client.get("/v1/auth/me", headers=bearer(kept))).status == 200
    assert await _listed(client, newest) == {kept["session_id"], newest["session_id"]}
    assert (await refresh(client, idle["refresh_token"])).status == 401


async def test_the_cap_is_per_user(make_client: Any) -> None:
    client = await make_client(max_sessions_per_user=1)
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    bob = await login(client, "bob")
    assert (await client.get("/v1/auth/me", headers=bearer(alice))).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(bob))).status == 200
