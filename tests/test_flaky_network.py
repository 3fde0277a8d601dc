"""A flaky network between authsvc and Redis: a proxy the tests control sits between them.

Latency, throttled bandwidth, connections reset in the middle of a pipeline, replies lost
after Redis ran the command, connections that hang: every answer is a contract code (200,
401, or 503 with Retry-After), never a 500; every caller of a pipelined batch gets its own
reply or its own 503; a lost rotation is completed by a retry, never a second chain; and
once the network is back, everything works without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio
from netproxy import NetProxy
from support import TEST_PASSWORD, FakeClock, RedisProcess, bearer, fast_settings, login, register
from support import refresh as refresh_request

from authsvc.store import keyspace
from authsvc.store.scripts import source

RETRY_AFTER = 2
# Short, so that the tests of hung connections are quick; long enough that a busy test
# machine does not time out where a test expects a 200.
STORE_TIMEOUT = 1.0
USERS = 50
# Only a guard against a hang: a request the store timeout does not end fails the test.
HANG_GUARD = 20 * STORE_TIMEOUT


@pytest.fixture
async def proxy(own_redis: RedisProcess) -> AsyncIterator[NetProxy]:
    started = NetProxy(own_redis.port)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def flaky_client(client_for: Any, proxy: NetProxy) -> Any:
    """An app whose only way to Redis is the proxy."""
    settings = fast_settings(
        redis_url=proxy.url, store_timeout=STORE_TIMEOUT, store_retry_after=RETRY_AFTER
    )
    return await client_for(settings)


@pytest.fixture
async def direct(own_redis: RedisProcess) -> AsyncIterator[redis.asyncio.Redis]:
    """A client on the same Redis, around the proxy: what the store really holds."""
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


def _claims(access_token: str) -> dict[str, Any]:
    """The claims of a token the app just issued (its signature is the app's own business:
    /v1/auth/me checks it when the test calls it)."""
    payload = access_token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


async def _answer(response: Any) -> tuple[int, Any]:
    """Status and body of a response, after checking it is one the contract allows."""
    status = response.status
    body = await response.json() if response.content_length != 0 else None
    assert status != 500, body
    if status == 503:
        assert body["error"] == "store_unavailable", body
        assert response.headers["Retry-After"] == str(RETRY_AFTER)
    return status, body


def _script_sha(name: str) -> bytes:
    """What an EVALSHA of script ``name`` carries on the wire."""
    return hashlib.sha1(source(name).encode(), usedforsecurity=False).hexdigest().encode()


async def _within_guard(request: Any) -> Any:
    return await asyncio.wait_for(request, HANG_GUARD)


@dataclasses.dataclass
class User:
    username: str
    user_id: str
    pair: dict[str, Any]
    answers: dict[int, int] = dataclasses.field(default_factory=dict)

    def count(self, status: int) -> None:
        self.answers[status] = self.answers.get(status, 0) + 1


async def _users(client: Any, count: int) -> list[User]:
    async def one(i: int) -> User:
        username = f"user{i:03d}"
        created = await register(client, username)
        return User(username, created["user_id"], await login(client, username))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _me_is_own(client: Any, user: User) -> None:
    """GET /v1/auth/me: the user's own id and session, or a 503."""
    status, body = await _answer(
        await _within_guard(client.get("/v1/auth/me", headers=bearer(user.pair)))
    )
    user.count(status)
    assert status in (200, 503), body
    if status == 200:
        assert (body["user_id"], body["username"]) == (user.user_id, user.username)
        assert body["session_id"] == user.pair["session_id"]


async def _refresh_is_own(client: Any, user: User) -> None:
    """A refresh, retried with the same token after a 503 (within the grace, as a client
    whose response was lost would): the user's own session every time."""
    status, body = await _answer(
        await _within_guard(refresh_request(client, user.pair["refresh_token"]))
    )
    user.count(status)
    assert status in (200, 503), body
    if status == 200:
        assert body["session_id"] == user.pair["session_id"]
        claims = _claims(body["access_token"])
        assert (claims["sub"], claims["sid"]) == (user.user_id, user.pair["session_id"])
        user.pair = body


async def _traffic(client: Any, users: list[User], rounds: int) -> None:
    for _ in range(rounds):
        await asyncio.gather(
            *(_me_is_own(client, user) for user in users),
            *(_refresh_is_own(client, user) for user in users),
        )


async def _one_live_chain_each(client: Any, direct: redis.asyncio.Redis, users: list[User]) -> None:
    """Once the network is back: every user's session works, is the only one, and its token
    moves on (one live chain: the stored position is the one the user holds)."""
    for user in users:
        me = await client.get("/v1/auth/me", headers=bearer(user.pair))
        assert me.status == 200, await me.text()
        assert (await me.json())["user_id"] == user.user_id
        listed = await client.get("/v1/auth/sessions", headers=bearer(user.pair))
        assert listed.status == 200
        assert [s["session_id"] for s in (await listed.json())["sessions"]] == [
            user.pair["session_id"]
        ]
        response = await refresh_request(client, user.pair["refresh_token"])
        assert response.status == 200, await response.text()
        user.pair = await response.json()
    for user in users:
        index = await direct.zrange(keyspace.sessions(user.user_id), 0, -1)
        assert index == [user.pair["session_id"].encode()]


async def test_batched_callers_get_their_own_replies_while_pipelines_are_cut(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    """50 users at once (/v1/auth/me and refreshes, batched into pipelines) while every
    connection is reset after a varying number of reply bytes: each gets its own user and
    session, or a 503, never another's, and never a 500."""
    users = await _users(flaky_client, USERS)
    shuffled = random.Random(19)
    for after in (0, 7, 60, 300, 1500, 5000):
        proxy.cut_replies(after=after + shuffled.randrange(40))
        await _traffic(flaky_client, users, rounds=2)
    proxy.normal()
    await _traffic(flaky_client, users, rounds=1)

    assert proxy.resets > 20
    # Batches there were: pipelines of several callers' scripts in one write.
    biggest = max(chunk.count(b"EVALSHA") for chunk in proxy.requests)
    assert biggest > 10
    answered = {status: sum(u.answers.get(status, 0) for u in users) for status in (200, 503)}
    print(f"cut pipelines: {proxy.resets} resets, answers {answered}, pipelines up to {biggest}")
    assert sum(u.answers.get(503, 0) for u in users) > 0  # the faults were felt
    assert sum(u.answers.get(200, 0) for u in users) > 0
    await _one_live_chain_each(flaky_client, direct, users)


async def test_batched_callers_get_their_own_replies_or_503_when_pipelines_stall(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    """The same, with connections that go silent in the middle of a batch's replies: the
    callers whose replies came get them, the others a 503 after the store timeout."""
    users = await _users(flaky_client, 30)
    for after in (0, 250, 1200):
        proxy.cut_replies(after=after, stall=True)
        await _traffic(flaky_client, users, rounds=1)
    proxy.normal()
    await _traffic(flaky_client, users, rounds=1)

    assert sum(u.answers.get(503, 0) for u in users) > 0
    await _one_live_chain_each(flaky_client, direct, users)


async def test_connections_reset_at_random_moments_answer_only_contract_codes(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    users = await _users(flaky_client, 20)

    async def resets() -> None:
        for _ in range(30):
            await asyncio.sleep(0.005)
            proxy.reset_all()

    await asyncio.gather(resets(), _traffic(flaky_client, users, rounds=3))
    assert proxy.resets > 0
    await _one_live_chain_each(flaky_client, direct, users)


async def test_rotation_whose_reply_was_lost_is_completed_by_redis_clients_retry(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    """The rotation ran; its reply was lost once: redis-py's one retry on a fresh
    connection finds the rotation done and gets the same successor back (the grace)."""
    created = await register(flaky_client)
    pair = await login(flaky_client)
    proxy.lose_replies(containing=pair["session_id"].encode(), times=1)

    status, successor = await _answer(await refresh_request(flaky_client, pair["refresh_token"]))

    assert status == 200, successor
    assert proxy.resets == 1
    await _assert_one_chain(flaky_client, direct, created["user_id"], pair, successor)


async def test_rotation_whose_replies_were_lost_is_completed_by_the_clients_retry(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    """Both tries of the rotation ran and both replies were lost: the client gets a 503,
    and its retry with the same token, within the grace, gets the successor the first try
    made, never a second chain."""
    created = await register(flaky_client)
    pair = await login(flaky_client)
    proxy.lose_replies(containing=pair["session_id"].encode(), times=2)

    status, body = await _answer(await refresh_request(flaky_client, pair["refresh_token"]))
    assert status == 503, body
    assert proxy.resets == 2
    # The rotation did happen: the chain moved on by one, not two.
    stored = await direct.hget(keyspace.session(created["user_id"], pair["session_id"]), "n")
    assert stored == b"1"

    status, successor = await _answer(await refresh_request(flaky_client, pair["refresh_token"]))
    assert status == 200, successor
    status, again = await _answer(await refresh_request(flaky_client, pair["refresh_token"]))
    assert status == 200
    assert again["refresh_token"] == successor["refresh_token"]
    await _assert_one_chain(flaky_client, direct, created["user_id"], pair, successor)


async def _assert_one_chain(
    client: Any,
    direct: redis.asyncio.Redis,
    user_id: str,
    pair: dict[str, Any],
    successor: dict[str, Any],
) -> None:
    assert successor["session_id"] == pair["session_id"]
    stored = await direct.hget(keyspace.session(user_id, pair["session_id"]), "n")
    assert stored == b"1"
    listed = await client.get("/v1/auth/sessions", headers=bearer(successor))
    assert [s["session_id"] for s in (await listed.json())["sessions"]] == [pair["session_id"]]
    following = await refresh_request(client, successor["refresh_token"])
    assert following.status == 200, await following.text()
    assert (await direct.hget(keyspace.session(user_id, pair["session_id"]), "n")) == b"2"
    me = await client.get("/v1/auth/me", headers=bearer(await following.json()))
    assert me.status == 200


async def test_login_whose_reply_was_lost_ends_no_second_session_at_the_cap(
    client_for: Any, proxy: NetProxy, direct: redis.asyncio.Redis, clock: FakeClock
) -> None:
    """At the session cap, a login ends the least recently used session; its reply lost,
    redis-py runs the script again: that run finds its session made, ends no other one,
    and records no second login event."""
    settings = fast_settings(
        redis_url=proxy.url, store_timeout=STORE_TIMEOUT, max_sessions_per_user=3
    )
    client = await client_for(settings)
    created = await register(client)
    sessions = []
    for _ in range(3):
        sessions.append(await login(client))
        clock.advance(1)  # the least recently used is the oldest
    oldest, *kept = sessions
    proxy.lose_replies(containing=_script_sha("login"), times=1)

    status, pair = await _answer(
        await client.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
    )

    assert status == 200, pair
    assert proxy.resets == 1
    listed = await client.get("/v1/auth/sessions", headers=bearer(pair))
    assert listed.status == 200, await listed.text()
    live = {s["session_id"] for s in (await listed.json())["sessions"]}
    assert live == {pair["session_id"], *(k["session_id"] for k in kept)}
    assert oldest["session_id"] not in live
    for session in kept:
        assert (await client.get("/v1/auth/me", headers=bearer(session))).status == 200
    events = await (await client.get("/v1/auth/events", headers=bearer(pair))).json()
    types = [e["type"] for e in events["events"]]
    assert types.count("login") == 4
    assert types.count("session_evicted") == 1
    assert await direct.zcard(keyspace.sessions(created["user_id"])) == 3


async def test_a_hung_connection_is_abandoned_after_the_store_timeout(
    flaky_client: Any, proxy: NetProxy
) -> None:
    """Pooled connections that went silent (no FIN, no RST): the request waits the store
    timeout once (its command is not sent again) and gets a 503; the connection is
    dropped, and the next request works over a fresh one."""
    await register(flaky_client)
    pair = await login(flaky_client)
    proxy.hang()

    sent = len(proxy.requests)
    started = time.monotonic()
    status, body = await _answer(
        await _within_guard(flaky_client.get("/v1/auth/me", headers=bearer(pair)))
    )
    waited = time.monotonic() - started
    assert status == 503, body
    assert len(proxy.requests) - sent == 1, proxy.requests[sent:]
    status, body = await _answer(
        await _within_guard(flaky_client.get("/v1/auth/me", headers=bearer(pair)))
    )
    assert status == 200, body
    print(f"hung connection: 503 after {waited:.2f} s (store timeout {STORE_TIMEOUT} s)")


async def test_a_half_open_network_answers_503_after_one_timeout_and_recovers(
    flaky_client: Any, proxy: NetProxy
) -> None:
    """Every connection, new ones too, accepts and never answers: each caller gets a 503
    once the store timeout has passed, and waits it once: what a request sent towards
    Redis is one write (its command, or a new connection's handshake), never sent again
    after its timeout, each a whole timeout more. The network back, the same app works
    without a restart."""
    await register(flaky_client)
    pair = await login(flaky_client)
    proxy.half_open = True

    for _ in range(3):
        sent = len(proxy.requests)
        status, body = await _answer(
            await _within_guard(flaky_client.get("/v1/auth/me", headers=bearer(pair)))
        )
        assert status == 503, body
        assert len(proxy.requests) - sent == 1, proxy.requests[sent:]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(_within_guard(flaky_client.get("/v1/auth/me", headers=bearer(pair))) for _ in range(10))
    )
    waited = time.monotonic() - started
    for response in answers:
        status, body = await _answer(response)
        assert status == 503, body
    status, body = await _answer(
        await _within_guard(refresh_request(flaky_client, pair["refresh_token"]))
    )
    assert status == 503, body
    ready = await _within_guard(flaky_client.get("/readyz"))
    assert ready.status == 503

    proxy.normal()
    assert (await flaky_client.get("/readyz")).status == 200
    status, body = await _answer(await flaky_client.get("/v1/auth/me", headers=bearer(pair)))
    assert status == 200, body
    # The refresh that got 503 may have rotated: its retry within the grace completes it.
    status, successor = await _answer(await refresh_request(flaky_client, pair["refresh_token"]))
    assert status == 200, successor
    print(f"half-open: 10 callers answered 503 after {waited:.2f} s (timeout {STORE_TIMEOUT} s)")


async def test_latency_and_throttled_bandwidth_are_slower_but_correct(
    flaky_client: Any, proxy: NetProxy, direct: redis.asyncio.Redis
) -> None:
    """Every answer a 200 with the caller's own session. The store timeout counts per reply
    read, not per batch: a pipeline that trickles in over a throttled link for longer than
    the timeout is not cut, while each of its replies comes well within it."""
    users = await _users(flaky_client, 20)
    proxy.latency = 0.02
    proxy.bandwidth = 8_000
    started = time.monotonic()
    await _traffic(flaky_client, users, rounds=2)
    slow = time.monotonic() - started
    assert all(set(user.answers) == {200} for user in users), [u.answers for u in users]

    proxy.normal()
    started = time.monotonic()
    await _traffic(flaky_client, users, rounds=2)
    fast = time.monotonic() - started
    assert all(set(user.answers) == {200} for user in users)
    await _one_live_chain_each(flaky_client, direct, users)
    print(f"latency 20 ms + 8 kB/s: 2 rounds in {slow:.2f} s (store timeout {STORE_TIMEOUT} s);")
    print(f"  normal: {fast:.2f} s")


async def test_login_and_registration_through_a_flaky_network_never_answer_500(
    flaky_client: Any, proxy: NetProxy
) -> None:
    """The other writes (registration, login, logout) under mid-pipeline cuts: contract
    codes only, and once the network is back each account can log in."""
    proxy.cut_replies(after=90)

    async def account(i: int) -> None:
        body = {"username": f"u{i}", "password": TEST_PASSWORD}
        for _ in range(5):
            status, _ = await _answer(
                await _within_guard(flaky_client.post("/v1/users", json=body))
            )
            assert status in (201, 409, 503)
            status, pair = await _answer(
                await _within_guard(flaky_client.post("/v1/auth/login", json=body))
            )
            assert status in (200, 401, 503), pair
            if status == 200:
                status, _ = await _answer(
                    await _within_guard(flaky_client.post("/v1/auth/logout", headers=bearer(pair)))
                )
                assert status in (204, 401, 503)

    await asyncio.gather(*(account(i) for i in range(20)))
    proxy.normal()
    for i in range(20):
        await flaky_client.post("/v1/users", json={"username": f"u{i}", "password": TEST_PASSWORD})
        await login(flaky_client, f"u{i}")
