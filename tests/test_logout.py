"""POST /v1/auth/logout and /v1/auth/logout-all: that session, or every session of the
user, ends at once, for its refresh and access tokens alike.
"""

from __future__ import annotations

from typing import Any

from support import assert_error, assert_invalid_token, bearer, login, refresh, register


async def test_logout_ends_that_session(client: Any) -> None:
    await register(client)
    pair = await login(client)
    other = await login(client)
    response = await client.post("/v1/auth/logout", headers=bearer(pair))
    assert response.status == 204
    assert await response.read() == b""
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
    await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))
    await assert_error(await refresh(client, pair["refresh_token"]), 401, "invalid_grant")
    await assert_invalid_token(await client.post("/v1/auth/logout", headers=bearer(pair)))
    # The user's other session goes on.
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200


async def test_logout_all_ends_every_session_of_the_user(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    sessions = [await login(client, "alice") for _ in range(50)]
    bobs = [await login(client, "bob") for _ in range(2)]
    response = await client.post("/v1/auth/logout-all", headers=bearer(sessions[-1]))
    assert response.status == 204
    assert await response.read() == b""
    for pair in sessions:
        await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
        await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))
        await assert_error(await refresh(client, pair["refresh_token"]), 401, "invalid_grant")
    # Another user's sessions are untouched.
    for pair in bobs:
        assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
        assert (await refresh(client, pair["refresh_token"])).status == 200
    # And a new login afterwards works, alone in the list.
    fresh = await login(client, "alice")
    listed = await (await client.get("/v1/auth/sessions", headers=bearer(fresh))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]
