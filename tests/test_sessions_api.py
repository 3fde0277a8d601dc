"""GET /v1/auth/sessions and DELETE /v1/auth/sessions/{session_id}: the caller's own
sessions, listed with their fields, and ended one at a time.
"""

from __future__ import annotations

from typing import Any

import pytest
from support import (
    TEST_PASSWORD,
    FakeClock,
    assert_error,
    assert_invalid_token,
    bearer,
    login,
    refresh,
    register,
)

from authsvc.config import Settings

SESSION_FIELDS = {
    "session_id",
    "created_at",
    "last_used_at",
    "expires_at",
    "device",
    "user_agent",
    "ip",
    "current",
}


# GET /v1/auth/sessions


async def test_sessions_lists_each_login_with_its_fields(
    client: Any, clock: FakeClock, settings: Settings
) -> None:
    await register(client)
    phone = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD, "device": "phone"},
        headers={"User-Agent": "PhoneApp/1.0"},
    )
    phone_pair = await phone.json()
    login_time = clock.now
    clock.advance(30)
    laptop = await login(client, device="laptop")

    # Asked with the first token: PyJWT checks iat against the wall clock, which the
    # FakeClock has now run ahead of.
    response = await client.get("/v1/auth/sessions", headers=bearer(phone_pair))
    assert response.status == 200
    assert response.content_type == "application/json"
    sessions = (await response.json())["sessions"]
    assert len(sessions) == 2
    by_id = {s["session_id"]: s for s in sessions}
    assert set(by_id) == {phone_pair["session_id"], laptop["session_id"]}
    for session in sessions:
        assert set(session) == SESSION_FIELDS
        assert session["ip"] == "127.0.0.1"
        for name in ("created_at", "last_used_at", "expires_at"):
            assert isinstance(session[name], int)
    first = by_id[phone_pair["session_id"]]
    assert first["device"] == "phone"
    assert first["user_agent"] == "PhoneApp/1.0"
    assert first["created_at"] == login_time
    assert first["last_used_at"] == login_time
    assert first["expires_at"] == login_time + settings.refresh_token_ttl
    assert first["current"] is True
    second = by_id[laptop["session_id"]]
    assert second["device"] == "laptop"
    assert second["created_at"] == login_time + 30
    assert second["current"] is False


async def test_sessions_current_follows_the_caller(client: Any) -> None:
    await register(client)
    pairs = [await login(client) for _ in range(3)]
    for pair in pairs:
        sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
            "sessions"
        ]
        current = [s["session_id"] for s in sessions if s["current"]]
        assert current == [pair["session_id"]]


async def test_sessions_last_used_at_moves_with_refresh(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    clock.advance(100)
    assert (await refresh(client, pair["refresh_token"])).status == 200
    # The first access token still belongs to the session (and its iat is not ahead of
    # the wall clock, which PyJWT checks).
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
        "sessions"
    ]
    (session,) = sessions
    assert session["last_used_at"] == clock.now
    assert session["created_at"] == clock.now - 100
    assert session["current"] is True


async def test_sessions_shows_only_the_callers_sessions(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    await login(client, "bob")
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(alice))).json())[
        "sessions"
    ]
    assert [s["session_id"] for s in sessions] == [alice["session_id"]]


# DELETE /v1/auth/sessions/{session_id}


async def test_delete_session_revokes_it(client: Any) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)
    path = f"/v1/auth/sessions/{other['session_id']}"
    response = await client.delete(path, headers=bearer(current))
    assert response.status == 204
    assert await response.read() == b""
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(other)))
    await assert_error(await refresh(client, other["refresh_token"]), 401, "invalid_grant")
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(current))).json())[
        "sessions"
    ]
    assert [s["session_id"] for s in sessions] == [current["session_id"]]
    # Again: it is gone.
    await assert_error(await client.delete(path, headers=bearer(current)), 404, "not_found")


async def test_delete_own_current_session_ends_it(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await client.delete(f"/v1/auth/sessions/{pair['session_id']}", headers=bearer(pair))
    assert response.status == 204
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))


async def test_delete_another_users_session_is_not_found(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    bob = await login(client, "bob")
    response = await client.delete(f"/v1/auth/sessions/{bob['session_id']}", headers=bearer(alice))
    await assert_error(response, 404, "not_found")
    assert (await client.get("/v1/auth/me", headers=bearer(bob))).status == 200
    assert (await refresh(client, bob["refresh_token"])).status == 200


@pytest.mark.parametrize(
    "session_id", ["garbage", "x" * 22, "A" * 200, "..%2F..%2Fetc", "%7Balice%7D", "*"]
)
async def test_delete_unknown_session_id_is_not_found(client: Any, session_id: str) -> None:
    await register(client)
    pair = await login(client)
    response = await client.delete(f"/v1/auth/sessions/{session_id}", headers=bearer(pair))
    await assert_error(response, 404, "not_found")
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
