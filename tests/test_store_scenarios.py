"""The core flows on every store: embedded Valkey, one Redis, memory://, Cluster, Sentinel.

One parametrized fixture builds the app on each store, so the same scenarios prove each
topology: login, rotation, grace, replay, logout, logout-all, the session list, the cap
and readiness. Cluster and Sentinel are real processes (``topologies``), started once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, register
from support import refresh as refresh_request
from topologies import RedisClusterProcesses, SentinelProcesses

from authsvc.config import RateLimit, Settings

# Embedded Valkey, Cluster and Sentinel are processes beyond the suite's one Redis: slow.
STORES = [
    pytest.param("embedded", marks=pytest.mark.slow),
    "single",
    "memory",
    pytest.param("cluster", marks=pytest.mark.slow),
    pytest.param("sentinel", marks=pytest.mark.slow),
]


@pytest.fixture(params=STORES)
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for one store, empty at the start of the test."""
    kind = request.param
    if kind == "embedded":
        return fast_settings(redis_url=None, data_dir=tmp_path / "data")
    if kind == "memory":
        return fast_settings(redis_url="memory://")
    if kind == "single":
        request.getfixturevalue("redis_client")  # flushed before each test
        return fast_settings(redis_url=request.getfixturevalue("redis_url"))
    topology: RedisClusterProcesses | SentinelProcesses = request.getfixturevalue(
        "redis_cluster" if kind == "cluster" else "redis_sentinel"
    )
    topology.flush()
    return fast_settings(redis_url=topology.url)


@pytest.fixture
async def any_store(client_for: Any, store_settings: Settings) -> AsyncIterator[Any]:
    yield await client_for(store_settings)


async def _me(client: Any, pair: dict[str, Any]) -> int:
    return int((await client.get("/v1/auth/me", headers=bearer(pair))).status)


async def test_store_is_ready(any_store: Any) -> None:
    response = await any_store.get("/readyz")
    assert response.status == 200
    assert (await response.json())["store"] == "ok"


async def test_register_login_refresh_me_and_verify(any_store: Any) -> None:
    user = await register(any_store)
    taken = await any_store.post("/v1/users", json={"username": "ALICE", "password": TEST_PASSWORD})
    assert taken.status == 409
    wrong = await any_store.post(
        "/v1/auth/login", json={"username": "alice", "password": "wrong password here"}
    )
    assert wrong.status == 401
    assert (await wrong.json())["error"] == "invalid_credentials"
    pair = await login(any_store)
    response = await refresh_request(any_store, pair["refresh_token"])
    assert response.status == 200, await response.text()
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    assert successor["refresh_token"] != pair["refresh_token"]
    me = await (await any_store.get("/v1/auth/me", headers=bearer(successor))).json()
    assert me == {"user_id": user["user_id"], "username": "alice", "session_id": pair["session_id"]}
    verify = await any_store.get("/v1/auth/verify", headers=bearer(successor))
    assert verify.status == 200
    assert verify.headers["X-Auth-User-Id"] == user["user_id"]


async def test_refresh_within_grace_returns_same_successor(
    any_store: Any, clock: FakeClock
) -> None:
    await register(any_store)
    pair = await login(any_store)
    first = await (await refresh_request(any_store, pair["refresh_token"])).json()
    clock.advance(9)
    again = await refresh_request(any_store, pair["refresh_token"])
    assert again.status == 200
    assert (await again.json())["refresh_token"] == first["refresh_token"]
    second = await refresh_request(any_store, first["refresh_token"])
    assert second.status == 200
    # One token deep: the successor was used, so its predecessor is now a replay.
    assert (await refresh_request(any_store, pair["refresh_token"])).status == 401
    assert (await refresh_request(any_store, (await second.json())["refresh_token"])).status == 401


async def test_a_throttled_refresh_changes_nothing(
    client_for: Any, store_settings: Settings, clock: FakeClock
) -> None:
    """The refresh bucket shares the rotation's call, or on Cluster precedes it."""
    client = await client_for(
        dataclasses.replace(store_settings, refresh_rate_limit=RateLimit(2, 60))
    )
    await register(client)
    token = (await login(client))["refresh_token"]
    for _ in range(2):
        response = await refresh_request(client, token)
        assert response.status == 200
        token = (await response.json())["refresh_token"]
    refused = await refresh_request(client, token)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "30"
    assert (await refused.json())["error"] == "rate_limited"
    clock.advance(30)
    # Not used up by the refused request: it rotates once the bucket has a token again.
    assert (await refresh_request(client, token)).status == 200


async def test_replay_after_grace_revokes_only_that_session(
    any_store: Any, clock: FakeClock
) -> None:
    await register(any_store)
    phone = await login(any_store, device="phone")
    laptop = await login(any_store, device="laptop")
    successor = await (await refresh_request(any_store, phone["refresh_token"])).json()
    clock.advance(11)
    replay = await refresh_request(any_store, phone["refresh_token"])
    assert replay.status == 401
    assert (await replay.json())["error"] == "invalid_grant"
    assert (await refresh_request(any_store, successor["refresh_token"])).status == 401
    assert await _me(any_store, successor) == 401
    assert await _me(any_store, laptop) == 200


async def test_concurrent_refreshes_leave_one_live_chain(any_store: Any) -> None:
    await register(any_store)
    pair = await login(any_store)
    responses = await asyncio.gather(
        *(refresh_request(any_store, pair["refresh_token"]) for _ in range(20))
    )
    assert {response.status for response in responses} == {200}
    successors = {(await response.json())["refresh_token"] for response in responses}
    assert len(successors) == 1
    (successor,) = successors
    assert (await refresh_request(any_store, successor)).status == 200


async def test_logout_logout_all_and_the_session_list(any_store: Any) -> None:
    await register(any_store)
    sessions = [await login(any_store) for _ in range(3)]
    listed = await (await any_store.get("/v1/auth/sessions", headers=bearer(sessions[0]))).json()
    assert {s["session_id"] for s in listed["sessions"]} == {p["session_id"] for p in sessions}

    assert (await any_store.post("/v1/auth/logout", headers=bearer(sessions[2]))).status == 204
    assert await _me(any_store, sessions[2]) == 401
    assert await _me(any_store, sessions[0]) == 200
    deleted = await any_store.delete(
        f"/v1/auth/sessions/{sessions[1]['session_id']}", headers=bearer(sessions[0])
    )
    assert deleted.status == 204
    assert await _me(any_store, sessions[1]) == 401

    response = await any_store.post("/v1/auth/logout-all", headers=bearer(sessions[0]))
    assert response.status == 204
    for pair in sessions:
        assert await _me(any_store, pair) == 401
        assert (await refresh_request(any_store, pair["refresh_token"])).status == 401
    fresh = await login(any_store)
    listed = await (await any_store.get("/v1/auth/sessions", headers=bearer(fresh))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]


async def test_a_login_beyond_the_cap_ends_the_least_recently_used_session(
    client_for: Any, store_settings: Settings, clock: FakeClock
) -> None:
    client = await client_for(dataclasses.replace(store_settings, max_sessions_per_user=2))
    await register(client)
    oldest = await login(client)
    clock.advance(5)
    kept = await login(client)
    clock.advance(5)
    newest = await login(client)
    assert await _me(client, oldest) == 401
    assert (await refresh_request(client, oldest["refresh_token"])).status == 401
    assert await _me(client, kept) == 200
    assert await _me(client, newest) == 200


async def test_many_users_spread_over_every_cluster_master(
    client_for: Any, redis_cluster: RedisClusterProcesses
) -> None:
    """Each user's keys share a slot; different users land on different masters."""
    redis_cluster.flush()
    client = await client_for(fast_settings(redis_url=redis_cluster.url))

    async def one_user(index: int) -> None:
        name = f"user{index}"
        await register(client, name)
        pair = await login(client, name)
        successor = await (await refresh_request(client, pair["refresh_token"])).json()
        assert await _me(client, successor) == 200
        second = await login(client, name)
        listed = await (await client.get("/v1/auth/sessions", headers=bearer(second))).json()
        assert len(listed["sessions"]) == 2
        assert (await client.post("/v1/auth/logout-all", headers=bearer(second))).status == 204
        assert await _me(client, successor) == 401

    await asyncio.gather(*(one_user(index) for index in range(40)))
    for port in redis_cluster.ports:
        with redis.Redis(port=port) as node:
            assert node.dbsize() > 0, f"no keys on the master at port {port}"


async def test_memory_store_state_dies_with_the_app(client_for: Any) -> None:
    settings = fast_settings(redis_url="memory://")
    first = await client_for(settings)
    await register(first)
    pair = await login(first)
    await first.close()
    second = await client_for(settings)
    assert (await refresh_request(second, pair["refresh_token"])).status == 401
    assert await _me(second, pair) == 401
