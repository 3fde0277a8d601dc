"""AUTHSVC_REDIS_URL=memory://: fakeredis in this process, running the same Lua scripts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, register
from support import refresh as refresh_request

from authsvc.config import Settings, load_settings


@pytest.fixture
def memory_settings() -> Settings:
    settings = load_settings({"AUTHSVC_REDIS_URL": "memory://"})
    assert settings.redis_url == "memory://"
    return fast_settings(redis_url=settings.redis_url)


@pytest.fixture
async def memory_client(client_for: Any, memory_settings: Settings) -> Any:
    return await client_for(memory_settings)


async def test_memory_store_is_ready(memory_client: Any) -> None:
    assert (await memory_client.get("/readyz")).status == 200


async def test_register_login_refresh_on_the_memory_store(memory_client: Any) -> None:
    user = await register(memory_client)
    taken = await memory_client.post(
        "/v1/users", json={"username": "ALICE", "password": TEST_PASSWORD}
    )
    assert taken.status == 409
    pair = await login(memory_client)
    response = await refresh_request(memory_client, pair["refresh_token"])
    assert response.status == 200, await response.text()
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    assert successor["refresh_token"] != pair["refresh_token"]
    me = await (await memory_client.get("/v1/auth/me", headers=bearer(successor))).json()
    assert me == {"user_id": user["user_id"], "username": "alice", "session_id": pair["session_id"]}
    verify = await memory_client.get("/v1/auth/verify", headers=bearer(successor))
    assert verify.status == 200
    assert verify.headers["X-Auth-Session-Id"] == pair["session_id"]


async def test_wrong_password_on_the_memory_store_is_invalid_credentials(
    memory_client: Any,
) -> None:
    await register(memory_client)
    response = await memory_client.post(
        "/v1/auth/login", json={"username": "alice", "password": "wrong password here"}
    )
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_credentials"


async def test_refresh_within_grace_returns_same_successor_on_the_memory_store(
    memory_client: Any, clock: FakeClock
) -> None:
    await register(memory_client)
    pair = await login(memory_client)
    first = await (await refresh_request(memory_client, pair["refresh_token"])).json()
    clock.advance(9)
    again = await refresh_request(memory_client, pair["refresh_token"])
    assert again.status == 200
    assert (await again.json())["refresh_token"] == first["refresh_token"]
    assert (await refresh_request(memory_client, first["refresh_token"])).status == 200


async def test_replay_after_grace_revokes_only_that_session_on_the_memory_store(
    memory_client: Any, clock: FakeClock
) -> None:
    await register(memory_client)
    phone = await login(memory_client, device="phone")
    laptop = await login(memory_client, device="laptop")
    successor = await (await refresh_request(memory_client, phone["refresh_token"])).json()
    clock.advance(11)
    replay = await refresh_request(memory_client, phone["refresh_token"])
    assert replay.status == 401
    assert (await replay.json())["error"] == "invalid_grant"
    assert (await refresh_request(memory_client, successor["refresh_token"])).status == 401
    assert (await memory_client.get("/v1/auth/me", headers=bearer(successor))).status == 401
    assert (await memory_client.get("/v1/auth/me", headers=bearer(laptop))).status == 200


async def test_concurrent_refreshes_leave_one_live_chain_on_the_memory_store(
    memory_client: Any,
) -> None:
    await register(memory_client)
    pair = await login(memory_client)
    responses = await asyncio.gather(
        *(refresh_request(memory_client, pair["refresh_token"]) for _ in range(20))
    )
    assert {response.status for response in responses} == {200}
    successors = {(await response.json())["refresh_token"] for response in responses}
    assert len(successors) == 1
    (successor,) = successors
    assert (await refresh_request(memory_client, successor)).status == 200


async def test_logout_and_logout_all_on_the_memory_store(memory_client: Any) -> None:
    await register(memory_client)
    sessions = [await login(memory_client) for _ in range(3)]
    response = await memory_client.get("/v1/auth/sessions", headers=bearer(sessions[0]))
    listed = await response.json()
    assert {s["session_id"] for s in listed["sessions"]} == {p["session_id"] for p in sessions}

    assert (await memory_client.post("/v1/auth/logout", headers=bearer(sessions[2]))).status == 204
    assert (await memory_client.get("/v1/auth/me", headers=bearer(sessions[2]))).status == 401
    assert (await memory_client.get("/v1/auth/me", headers=bearer(sessions[0]))).status == 200

    response = await memory_client.post("/v1/auth/logout-all", headers=bearer(sessions[0]))
    assert response.status == 204
    for pair in sessions:
        assert (await memory_client.get("/v1/auth/me", headers=bearer(pair))).status == 401
        assert (await refresh_request(memory_client, pair["refresh_token"])).status == 401
    fresh = await login(memory_client)
    assert (await memory_client.get("/v1/auth/me", headers=bearer(fresh))).status == 200


async def test_memory_store_state_dies_with_the_app(
    client_for: Any, memory_settings: Settings
) -> None:
    first = await client_for(memory_settings)
    await register(first)
    pair = await login(first)
    await first.close()
    second = await client_for(memory_settings)
    assert (await refresh_request(second, pair["refresh_token"])).status == 401
    assert (await second.get("/v1/auth/me", headers=bearer(pair))).status == 401
