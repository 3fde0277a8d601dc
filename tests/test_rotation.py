"""Rotation, grace and replay of refresh tokens, and the refresh requests refused, through
HTTP on a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import redis.asyncio
from support import TEST_PASSWORD, FakeClock, assert_error, bearer, login, refresh, register

from authsvc.store import keyspace
from authsvc.store.records import LoginOutcome, SessionLimits
from authsvc.store.redis_store import Store
from authsvc.tokens.refresh import new_session_id


async def _live_sessions(redis_client: redis.asyncio.Redis, user_id: str) -> list[str]:
    """Sessions with an index entry and a session hash: what the scripts call live."""
    sids = await redis_client.zrange(keyspace.sessions(user_id), 0, -1)
    live = []
    for sid in sids:
        if await redis_client.exists(keyspace.session(user_id, sid.decode())):
            live.append(sid.decode())
    return live


async def test_refresh_returns_new_token_with_same_session(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await refresh(client, pair["refresh_token"])
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    assert successor["refresh_token"] != pair["refresh_token"]
    assert successor["token_type"] == "Bearer"
    me = await client.get("/v1/auth/me", headers=bearer(successor))
    assert me.status == 200


async def test_refresh_within_grace_returns_same_successor(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    first = await (await refresh(client, pair["refresh_token"])).json()
    clock.advance(9)
    again = await refresh(client, pair["refresh_token"])
    assert again.status == 200
    second = await again.json()
    assert second["refresh_token"] == first["refresh_token"]
    assert second["access_token"] == first["access_token"]
    # The session stays alive: the successor still works.
    assert (await refresh(client, first["refresh_token"])).status == 200


async def test_replay_after_grace_revokes_the_session(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    successor = await (await refresh(client, pair["refresh_token"])).json()
    clock.advance(11)
    replay = await refresh(client, pair["refresh_token"])
    assert replay.status == 401
    assert (await replay.json())["error"] == "invalid_grant"
    # The successor stops working too, and so do the session's access tokens.
    assert (await refresh(client, successor["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 401


async def test_grace_is_one_token_deep(client: Any) -> None:
    """Once the successor was used, its predecessor is a replay even within the window."""
    await register(client)
    pair = await login(client)
    first = await (await refresh(client, pair["refresh_token"])).json()
    second = await (await refresh(client, first["refresh_token"])).json()
    replay = await refresh(client, pair["refresh_token"])
    assert replay.status == 401
    assert (await refresh(client, second["refresh_token"])).status == 401


async def test_replay_of_an_old_token_in_the_chain_revokes(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    tokens = [pair["refresh_token"]]
    for _ in range(3):
        clock.advance(60)
        tokens.append((await (await refresh(client, tokens[-1])).json())["refresh_token"])
    assert (await refresh(client, tokens[0])).status == 401
    assert (await refresh(client, tokens[-1])).status == 401


async def test_replay_revokes_only_that_session(client: Any, clock: FakeClock) -> None:
    await register(client)
    phone = await login(client, device="phone")
    laptop = await login(client, device="laptop")
    await refresh(client, phone["refresh_token"])
    clock.advance(11)
    assert (await refresh(client, phone["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(laptop))).status == 200
    assert (await refresh(client, laptop["refresh_token"])).status == 200


async def test_forged_token_with_a_real_session_id_does_not_revoke(client: Any) -> None:
    """Knowing a session id is not enough to end the session."""
    await register(client)
    pair = await login(client)
    user_id, session_id, position, secret, mac = pair["refresh_token"].split(".")
    forged = [
        f"{user_id}.{session_id}.{position}.{'A' * 43}.{'A' * 22}",
        # An older position would be a replay, if the MAC did not give the forgery away.
        f"{user_id}.{session_id}.0.{secret}.{mac}".replace(".0.", ".1.", 1),
        f"{user_id}.{session_id}.{position}.{secret}.{mac[:-2]}AA",
    ]
    successor = await (await refresh(client, pair["refresh_token"])).json()
    _, _, _, secret, mac = successor["refresh_token"].split(".")
    forged.append(f"{user_id}.{session_id}.0.{secret}.{mac}")
    for token in forged:
        assert (await refresh(client, token)).status == 401, token
    assert (await refresh(client, successor["refresh_token"])).status == 200


async def test_a_token_changed_in_a_few_characters_does_not_revoke(
    client: Any, clock: FakeClock
) -> None:
    """Flipping characters anywhere in a real token gets invalid_grant, the session lives on."""
    await register(client)
    pair = await login(client)
    token = pair["refresh_token"]
    clock.advance(60)
    for index in range(0, len(token), 7):
        if token[index] == ".":
            continue
        changed = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        assert (await refresh(client, changed)).status == 401, index
    assert (await refresh(client, token)).status == 200


async def test_concurrent_refreshes_leave_one_live_chain(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    user = await register(client)
    pair = await login(client)
    responses = await asyncio.gather(*(refresh(client, pair["refresh_token"]) for _ in range(100)))
    assert all(response.status == 200 for response in responses)
    bodies = [await response.json() for response in responses]
    successors = {body["refresh_token"] for body in bodies}
    assert len(successors) == 1
    # In the store: one live session whose current token is that one successor.
    assert await _live_sessions(redis_client, user["user_id"]) == [pair["session_id"]]
    stored = await redis_client.hget(keyspace.session(user["user_id"], pair["session_id"]), "h")
    (successor,) = successors
    assert stored == hashlib.sha256(successor.encode()).digest()[:16]
    assert (await refresh(client, successor)).status == 200


async def test_store_keeps_only_hashes_of_refresh_tokens(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    await register(client)
    pair = await login(client)
    successor = await (await refresh(client, pair["refresh_token"])).json()
    secrets = [pair["refresh_token"], successor["refresh_token"]]
    for key in await redis_client.keys("*"):
        kind = await redis_client.type(key)
        if kind == b"hash":
            values = list((await redis_client.hgetall(key)).values())
        elif kind == b"set":
            values = list(await redis_client.smembers(key))
        elif kind == b"string":
            values = [await redis_client.get(key)]
        elif kind == b"list":  # the user's security events
            values = list(await redis_client.lrange(key, 0, -1))
        else:
            values = [
                member for member, _ in await redis_client.zrange(key, 0, -1, withscores=True)
            ]
        for value in values:
            for secret in secrets:
                assert secret.encode() not in value
                assert secret.split(".")[3].encode() not in value


async def test_refresh_token_expires_after_idle_ttl(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(refresh_token_ttl=100)
    await register(client)
    pair = await login(client)
    clock.advance(99)
    successor = await (await refresh(client, pair["refresh_token"])).json()
    assert successor["refresh_expires_in"] == 100
    clock.advance(99)  # the idle lifetime slides with each refresh
    successor = await (await refresh(client, successor["refresh_token"])).json()
    clock.advance(100)
    assert (await refresh(client, successor["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 401


async def test_session_max_age_caps_the_session(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(refresh_token_ttl=100, session_max_age=250)
    await register(client)
    pair = await login(client)
    token = pair["refresh_token"]
    for _ in range(2):
        clock.advance(90)
        body = await (await refresh(client, token)).json()
        token = body["refresh_token"]
    assert body["refresh_expires_in"] == 250 - 180
    clock.advance(70)
    assert (await refresh(client, token)).status == 401


async def test_malformed_refresh_tokens_get_invalid_grant(client: Any) -> None:
    for token in ["", "abc", "a.b.c", "x" * 200, "../../etc", "{user}.sid.secret"]:
        response = await refresh(client, token)
        assert response.status == 401, token
        assert (await response.json())["error"] == "invalid_grant"


async def test_logout_all_ends_a_login_that_races_with_it(
    client: Any, redis_url: str, clock: FakeClock
) -> None:
    """A login whose password check ran before a logout-all, and whose script after, ends."""
    await register(client)
    sessions = [await login(client) for _ in range(20)]
    store = Store(redis.asyncio.Redis.from_url(redis_url), SessionLimits(100, 200, 100))
    try:
        user = await store.find_user("alice")  # what login reads before verifying
        assert user is not None
        response = await client.post("/v1/auth/logout-all", headers=bearer(sessions[0]))
        assert response.status == 204
        started = await store.login(
            user, new_session_id(), b"0" * 16, now=clock(),
            device="", user_agent="", ip="", upgraded_password_hash=None,
        )  # fmt: skip
        assert started.outcome is LoginOutcome.REVOKED
    finally:
        await store.redis.aclose()
    for pair in sessions:
        assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401
        assert (await refresh(client, pair["refresh_token"])).status == 401
    fresh = await login(client)
    listed = await (await client.get("/v1/auth/sessions", headers=bearer(fresh))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]


async def test_concurrent_logins_and_logout_all_leave_no_old_session(client: Any) -> None:
    await register(client)
    first = await login(client)
    results = await asyncio.gather(
        client.post("/v1/auth/logout-all", headers=bearer(first)),
        *(client.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
          for _ in range(10)),
    )  # fmt: skip
    assert results[0].status == 204
    assert {response.status for response in results[1:]} <= {200, 401}
    assert (await client.get("/v1/auth/me", headers=bearer(first))).status == 401


# Refusals of a refresh request


async def test_refresh_with_missing_field_or_wrong_type_is_invalid_request(client: Any) -> None:
    # {} is cookie mode (test_cookie_mode.py): the refresh token is the cookie's.
    for body in [{"refresh_token": None}, {"refresh_token": 7}, {"token": "x"}]:
        response = await client.post("/v1/auth/refresh", json=body)
        await assert_error(response, 400, "invalid_request")
    response = await client.post("/v1/auth/refresh", data={"refresh_token": "x"})
    await assert_error(response, 415, "unsupported_media_type")


async def test_refresh_of_unknown_token_is_invalid_grant(client: Any) -> None:
    await register(client)
    pair = await login(client)
    user_id, session_id, position, _, mac = pair["refresh_token"].split(".")
    response = await refresh(client, f"{user_id}.{session_id}.{position}.{'B' * 43}.{mac}")
    await assert_error(response, 401, "invalid_grant")
    # A wrong guess does not end the session: the real token still works.
    assert (await refresh(client, pair["refresh_token"])).status == 200
