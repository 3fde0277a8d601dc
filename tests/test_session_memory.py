"""Bounded state: a session's Redis memory is small at login and does not grow with refreshes.

Sessions are made through the store's own scripts (the argon2 of an HTTP login would
only slow the test down), and measured with MEMORY USAGE on the suite's real Redis.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis.asyncio
from support import FakeClock, refresh

from authsvc.store import keyspace
from authsvc.store.records import SessionLimits, UserRecord
from authsvc.store.redis_store import Store
from authsvc.tokens.access import new_jti
from authsvc.tokens.refresh import (
    RefreshToken,
    RefreshTokens,
    Successor,
    new_session_id,
    new_user_id,
    seal_successor,
)

# A phone's user agent: longer than a listpack value, so the store cuts it to fit.
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
LIMITS = SessionLimits(idle_ttl=1_209_600, max_age=2_592_000, max_sessions=100)
BUDGET_AT_LOGIN = 512  # bytes per live session: the bound

# Thousands of sessions and refreshes through the store's scripts: seconds.
pytestmark = pytest.mark.slow


# A DPoP key's RFC 7638 thumbprint: what a bound session keeps besides (43 bytes).
JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


async def _start_session(
    store: Store, refresh_tokens: RefreshTokens, now: int, jkt: str | None = None
) -> RefreshToken:
    user = UserRecord(new_user_id(), "user", "hash", "0")
    await store.redis.hset(keyspace.user(user.user_id), mapping={"username": "u", "epoch": 0})
    token = refresh_tokens.mint(user.user_id, new_session_id())
    started = await store.login(
        user, token.session_id, token.hash, now=now, device="iPhone 15",
        user_agent=USER_AGENT, ip="203.0.113.17", upgraded_password_hash=None, jkt=jkt,
    )  # fmt: skip
    assert started.expires_at > now
    return token


async def _rotate(store: Store, refresh_tokens: RefreshTokens, token: RefreshToken) -> RefreshToken:
    successor = refresh_tokens.successor(token)
    sealed = seal_successor(token, Successor(successor.value, int(time.time()), new_jti()))
    rotation = await store.rotate(
        token.user_id, token.session_id, token.position, token.hash, successor.hash, sealed,
        now=int(time.time()), grace=10,
    )  # fmt: skip
    assert rotation.outcome.value == "ok"
    return successor


async def _session_bytes(client: redis.asyncio.Redis, token: RefreshToken) -> int:
    """The session hash and the index, the whole index: this user has one session."""
    keys = [keyspace.session(token.user_id, token.session_id), keyspace.sessions(token.user_id)]
    return sum([await client.memory_usage(key, samples=0) or 0 for key in keys])


@pytest.mark.parametrize("jkt", [None, JKT], ids=["bearer", "dpop-bound"])
async def test_a_session_costs_at_most_512_bytes_at_login(
    redis_client: redis.asyncio.Redis, jkt: str | None
) -> None:
    """Measured over 10,000 sessions of 10,000 users, each user's index counted whole; a
    session bound to a DPoP key too."""
    store = Store(redis_client, LIMITS)
    refresh_tokens = RefreshTokens(b"k" * 32)
    now = int(time.time())
    tokens = [await _start_session(store, refresh_tokens, now, jkt) for _ in range(10_000)]
    total = 0
    async with redis_client.pipeline(transaction=False) as pipe:
        for token in tokens:
            pipe.memory_usage(keyspace.session(token.user_id, token.session_id), samples=0)
            pipe.memory_usage(keyspace.sessions(token.user_id), samples=0)
        total = sum(await pipe.execute())
    print(f"bytes per session at login ({'bound' if jkt else 'bearer'}): {total / len(tokens)}")
    assert total / len(tokens) <= BUDGET_AT_LOGIN
    # Small hashes stay compact listpacks, the long user agent notwithstanding.
    first = tokens[0]
    session_key = keyspace.session(first.user_id, first.session_id)
    assert await redis_client.object("encoding", session_key) == b"listpack"
    assert await redis_client.object("encoding", keyspace.sessions(first.user_id)) == b"listpack"


async def test_a_session_holds_the_same_bytes_after_3000_refreshes_as_after_one(
    redis_client: redis.asyncio.Redis,
) -> None:
    store = Store(redis_client, LIMITS)
    refresh_tokens = RefreshTokens(b"k" * 32)
    started = await _start_session(store, refresh_tokens, int(time.time()))
    token = await _rotate(store, refresh_tokens, started)
    after_one = await _session_bytes(redis_client, token)
    sealed_key = keyspace.successor(token.user_id, token.session_id)
    sealed_after_one = await redis_client.memory_usage(sealed_key, samples=0)
    for _ in range(2_999):
        token = await _rotate(store, refresh_tokens, token)
    assert token.position == 3_000
    assert await _session_bytes(redis_client, token) == after_one
    # The sealed successor is replaced, not added to, and lives only through the grace.
    assert await redis_client.memory_usage(sealed_key, samples=0) == sealed_after_one
    assert 0 < await redis_client.ttl(sealed_key) <= 12
    assert await redis_client.dbsize() == 4  # user, session, index, sealed successor


async def test_a_token_from_deep_in_a_long_chain_is_still_a_replay(
    client: Any, redis_client: redis.asyncio.Redis, clock: FakeClock
) -> None:
    """Bounded state forgets no used token: the 5th of 500 ends the session when replayed."""
    from support import login, register

    await register(client)
    pair = await login(client)
    tokens = [pair["refresh_token"]]
    for _ in range(500):
        response = await refresh(client, tokens[-1])
        assert response.status == 200
        tokens.append((await response.json())["refresh_token"])
    clock.advance(11)
    replay = await refresh(client, tokens[5])
    assert replay.status == 401
    assert (await replay.json())["error"] == "invalid_grant"
    assert (await refresh(client, tokens[-1])).status == 401


async def test_roles_cost_the_user_record_only_what_they_hold(
    redis_client: redis.asyncio.Redis,
) -> None:
    """No field at all for no roles; a few roles, one field. (The user hash is a hashtable
    with or without them: an argon2id hash is longer than a listpack value.)"""
    store = Store(redis_client, LIMITS)
    user_id = new_user_id()
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$" + "a" * 22 + "$" + "b" * 43
    assert await store.create_user(user_id, "alice", password_hash, now=int(time.time()))
    key = keyspace.user(user_id)
    before = await redis_client.memory_usage(key, samples=0)
    await store.set_roles(user_id, ("support", "billing:read", "orders:write"))
    with_roles = await redis_client.memory_usage(key, samples=0)
    await store.set_roles(user_id, ())
    assert await redis_client.hget(key, "roles") is None  # cleared: no field again
    assert before is not None and with_roles is not None
    # One more hashtable entry: its key and value strings and the entry itself.
    assert with_roles - before <= 192
    print(f"user record: {before} B without roles, {with_roles} B with three")
