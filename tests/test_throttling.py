"""What costs us is throttled: registration and refresh per address, the hash queue, and
bad refresh tokens that are refused before any signature, sealing or store call."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
from argon2 import PasswordHasher
from support import TEST_PASSWORD, FakeClock, login, register
from support import refresh as refresh_request

import authsvc.domain.sessions
from authsvc.config import RateLimit
from authsvc.http.appkeys import HASHER
from authsvc.store import keyspace
from authsvc.tokens.access import AccessTokens

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


async def _register(client: Any, username: str, forwarded: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post(
        "/v1/users", json={"username": username, "password": TEST_PASSWORD}, headers=headers
    )


async def _assert_rate_limited(response: Any, retry_after: int) -> None:
    assert response.status == 429, await response.text()
    assert (await response.json())["error"] == "rate_limited"
    assert response.headers["Retry-After"] == str(retry_after)


async def _commands_run(redis_client: redis.asyncio.Redis) -> int:
    """Commands the suite's Redis has run, INFO itself left out."""
    stats = await redis_client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


# -- registration ----------------------------------------------------------------------


async def test_registration_is_rate_limited_per_address(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(registration_rate_limit=RateLimit(2, 3600), trusted_proxies=LOOPBACK)
    assert (await _register(client, "alice", "203.0.113.9")).status == 201
    assert (await _register(client, "bob", "203.0.113.9")).status == 201
    hasher = client.app[HASHER]
    before = hasher.calls
    await _assert_rate_limited(await _register(client, "carol", "203.0.113.9"), 1800)
    assert hasher.calls == before, "a refused registration must cost no hash"
    # Another address has its own bucket; this one refills at 2 an hour.
    assert (await _register(client, "carol", "198.51.100.7")).status == 201
    clock.advance(1800)
    assert (await _register(client, "dave", "203.0.113.9")).status == 201


async def test_registration_checks_everything_cheap_before_hashing(client: Any) -> None:
    """Bad names, weak passwords and taken names never reach the 64 MiB argon2 hash."""
    await register(client)
    hasher = client.app[HASHER]
    before = hasher.calls
    refused = [
        await client.post("/v1/users", json={"username": "alice", "password": TEST_PASSWORD}),
        await client.post("/v1/users", json={"username": "ALICE ", "password": TEST_PASSWORD}),
        await client.post("/v1/users", json={"username": "\x00", "password": TEST_PASSWORD}),
        await client.post("/v1/users", json={"username": "bob", "password": "password1234"}),
        await client.post("/v1/users", json={"username": "bob", "password": "short"}),
    ]
    assert [response.status for response in refused] == [409, 409, 400, 400, 400]
    assert hasher.calls == before


# -- refresh -------------------------------------------------------------------------


async def test_refresh_is_rate_limited_per_address(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(refresh_rate_limit=RateLimit(2, 60))
    await register(client)
    pair = await login(client)
    token = pair["refresh_token"]
    for _ in range(2):
        response = await refresh_request(client, token)
        assert response.status == 200
        token = (await response.json())["refresh_token"]
    await _assert_rate_limited(await refresh_request(client, token), 30)
    # The refused request did not use the token up: it works once the bucket refills.
    clock.advance(30)
    assert (await refresh_request(client, token)).status == 200


async def _oauth_refresh(client: Any, token: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return await client.post("/oauth/token", data=data)


async def test_oauth_token_answers_429_once_v1_used_the_address_s_bucket_up(
    make_client: Any, clock: FakeClock
) -> None:
    """One bucket per address for both surfaces: 3 refreshes on /v1, then /oauth/token is
    refused with an RFC 6749 §5.2-shaped body and Retry-After, and nothing rotates."""
    client = await make_client(refresh_rate_limit=RateLimit(3, 600))
    await register(client)
    token = (await login(client))["refresh_token"]
    for _ in range(3):
        response = await refresh_request(client, token)
        assert response.status == 200
        token = (await response.json())["refresh_token"]
    refused = await _oauth_refresh(client, token)
    await _assert_rate_limited(refused, 200)
    assert refused.content_type == "application/json"
    assert isinstance((await refused.json())["error_description"], str)
    clock.advance(200)
    assert (await _oauth_refresh(client, token)).status == 200  # not used up by the 429


async def test_refreshes_on_oauth_token_take_from_the_bucket_v1_takes_from(
    make_client: Any,
) -> None:
    client = await make_client(refresh_rate_limit=RateLimit(2, 600))
    await register(client)
    token = (await login(client))["refresh_token"]
    for _ in range(2):
        response = await _oauth_refresh(client, token)
        assert response.status == 200
        token = (await response.json())["refresh_token"]
    await _assert_rate_limited(await refresh_request(client, token), 300)
    await _assert_rate_limited(await _oauth_refresh(client, token), 300)


async def test_a_limit_too_large_to_matter_never_errors(make_client: Any) -> None:
    """A bucket that refills faster than a millisecond (a limit set high to lift it)."""
    client = await make_client(refresh_rate_limit=RateLimit(10**9, 1))
    await register(client)
    token = (await login(client))["refresh_token"]
    for _ in range(3):
        response = await refresh_request(client, token)
        assert response.status == 200, await response.text()
        token = (await response.json())["refresh_token"]


@pytest.fixture
def signing_and_sealing(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Record every access-token signature and successor sealing the app makes."""
    calls: list[str] = []
    sign, seal = AccessTokens.sign, authsvc.domain.sessions.seal_successor

    def counted_sign(self: AccessTokens, **kwargs: Any) -> tuple[str, int]:
        calls.append("sign")
        return sign(self, **kwargs)

    def counted_seal(*args: Any) -> bytes:
        calls.append("seal")
        return seal(*args)

    monkeypatch.setattr(AccessTokens, "sign", counted_sign)
    monkeypatch.setattr(authsvc.domain.sessions, "seal_successor", counted_seal)
    yield calls


async def test_bad_refresh_token_costs_no_signature_sealing_or_store_call(
    client: Any, redis_client: redis.asyncio.Redis, signing_and_sealing: list[str]
) -> None:
    """Check first, sign after: a token that is not ours stops at its MAC."""
    await register(client)
    pair = await login(client)
    user_id, session_id, position, secret, mac = pair["refresh_token"].split(".")
    bad = [
        "garbage",
        pair["access_token"],
        f"{user_id}.{session_id}.{position}.{secret}.{'A' * 22}",
        f"{user_id}.{session_id}.{int(position) + 1}.{secret}.{mac}",
    ]
    signing_and_sealing.clear()
    before = await _commands_run(redis_client)
    for token in bad:
        response = await refresh_request(client, token)
        assert response.status == 401
        assert (await response.json())["error"] == "invalid_grant"
    assert await _commands_run(redis_client) == before
    assert signing_and_sealing == []
    # A good token's successor is sealed for the store call, and signed for after it.
    assert (await refresh_request(client, pair["refresh_token"])).status == 200
    assert signing_and_sealing == ["seal", "sign"]


async def test_a_refused_refresh_costs_no_signature_on_either_surface(
    make_client: Any, signing_and_sealing: list[str]
) -> None:
    """The limit exists because a refresh costs a signature: a refused one signs nothing."""
    client = await make_client(refresh_rate_limit=RateLimit(1, 600))
    await register(client)
    pair = await login(client)
    first = await refresh_request(client, pair["refresh_token"])
    assert first.status == 200
    token = (await first.json())["refresh_token"]
    signing_and_sealing.clear()
    await _assert_rate_limited(await refresh_request(client, token), 600)
    await _assert_rate_limited(await _oauth_refresh(client, token), 600)
    await _assert_rate_limited(await refresh_request(client, pair["refresh_token"]), 600)
    assert "sign" not in signing_and_sealing


async def test_a_grace_retry_signs_its_rotation_s_claims_and_a_replay_signs_nothing(
    client: Any, clock: FakeClock, signing_and_sealing: list[str]
) -> None:
    """Whichever worker a retry lands on, it pays for one signature: of the claims its
    rotation sealed, so the same TokenPair comes back. A replay is refused unsigned."""
    await register(client)
    pair = await login(client)
    first = await refresh_request(client, pair["refresh_token"])
    assert first.status == 200
    signing_and_sealing.clear()
    clock.advance(5)
    retry = await refresh_request(client, pair["refresh_token"])
    assert retry.status == 200
    assert signing_and_sealing == ["seal", "sign"]  # a successor the store did not keep
    issued, again = await first.json(), await retry.json()
    for name in ("access_token", "refresh_token", "session_id"):  # the same TokenPair
        assert again[name] == issued[name]
    signing_and_sealing.clear()
    clock.advance(30)  # past the grace
    replay = await refresh_request(client, pair["refresh_token"])
    assert replay.status == 401
    assert "sign" not in signing_and_sealing
    assert (await refresh_request(client, issued["refresh_token"])).status == 401  # ended


async def test_a_rotation_that_redis_lost_is_done_again(
    client: Any, redis_client: redis.asyncio.Redis, signing_and_sealing: list[str]
) -> None:
    """A failover can lose the last writes: the token rotated last is current again. It
    rotates then like any current token, rather than being refused."""
    await register(client)
    pair = await login(client)
    token = pair["refresh_token"]
    user_id, session_id = token.split(".")[:2]
    session_key = keyspace.session(user_id, session_id)
    before = await redis_client.hgetall(session_key)
    assert (await refresh_request(client, token)).status == 200
    await redis_client.hset(session_key, mapping=before)  # as if that rotation never was
    signing_and_sealing.clear()
    again = await refresh_request(client, token)
    assert again.status == 200
    assert signing_and_sealing == ["seal", "sign"]
    assert (await refresh_request(client, (await again.json())["refresh_token"])).status == 200


# -- introspection client authentication -------------------------------------------------


async def _introspect(client: Any, secret: str, forwarded: str | None = None) -> Any:
    raw = base64.b64encode(f"gateway:{secret}".encode()).decode()
    headers = {"Authorization": f"Basic {raw}"}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    return await client.post("/oauth/introspect", data={"token": "x"}, headers=headers)


async def test_failed_introspection_client_authentication_is_throttled_per_address(
    make_client: Any, redis_client: redis.asyncio.Redis, clock: FakeClock
) -> None:
    """Only failures take from the address's bucket; the configured client never waits."""
    client = await make_client(
        introspection_clients=(("gateway", "s3cret"),),
        client_auth_failure_limit=RateLimit(3, 600),
        trusted_proxies=LOOPBACK,
    )
    for _ in range(10):
        assert (await _introspect(client, "s3cret", "203.0.113.9")).status == 200
    assert await redis_client.keys("authsvc:ratelimit:*") == []  # successes cost no call
    for _ in range(3):
        assert (await _introspect(client, "guess", "203.0.113.9")).status == 401
    refused = await _introspect(client, "guess", "203.0.113.9")
    await _assert_rate_limited(refused, 200)
    assert refused.content_type == "application/json"
    # The right secret still answers, from there too; another address has its own bucket.
    assert (await _introspect(client, "s3cret", "203.0.113.9")).status == 200
    assert (await _introspect(client, "guess", "198.51.100.7")).status == 401
    clock.advance(200)
    assert (await _introspect(client, "guess", "203.0.113.9")).status == 401


# -- the hash queue ----------------------------------------------------------------------


async def test_full_hash_queue_answers_503_with_retry_after(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hash running and one waiting is all a queue of one holds: the next is refused."""
    client = await make_client(hash_concurrency=1, hash_queue_limit=1)
    hasher = client.app[HASHER]
    gate = threading.Event()
    original = PasswordHasher.hash

    def held_hash(self: PasswordHasher, password: str | bytes, **kwargs: Any) -> str:
        gate.wait(30)
        return original(self, password, **kwargs)

    monkeypatch.setattr(PasswordHasher, "hash", held_hash)
    tasks = [asyncio.create_task(_register(client, f"user{i}")) for i in range(3)]
    try:
        done, _ = await asyncio.wait(tasks, timeout=20, return_when=asyncio.FIRST_COMPLETED)
        (first,) = done
        refused = first.result()
        assert refused.status == 503, await refused.text()
        body = await refused.json()
        assert body["error"] == "store_unavailable"
        assert "password" in body["error_description"]
        assert refused.headers["Retry-After"] == "1"
        assert hasher.pending == 2
    finally:
        gate.set()
    statuses = sorted([(await task).status for task in tasks])
    assert statuses == [201, 201, 503]
    assert hasher.pending == 0
    # With the queue drained, registrations go through again.
    assert (await _register(client, "late")).status == 201
