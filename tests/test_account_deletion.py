"""Deleting an account leaves nothing of it in the store: the whole store is scanned (every
key, every value of every type) for the user id; a key added later under the user's hash
tag is caught here too; a login racing the deletion starts nothing; and so on Cluster."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
from collections.abc import Iterable
from typing import Any

import pytest
import redis
import redis.asyncio
from support import TEST_PASSWORD, bearer, fast_settings, login, register
from support import refresh as refresh_request
from topologies import RedisClusterProcesses

from authsvc.domain.passwords import Hasher
from authsvc.store import keyspace

OPS = ("ops", "ops-secret")
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}


def values_of(client: redis.Redis, key: bytes) -> list[bytes]:
    """Every byte string a key holds, whatever its type."""
    kind = client.type(key)
    if kind == b"string":
        return [client.get(key) or b""]
    if kind == b"hash":
        return [part for pair in client.hgetall(key).items() for part in pair]
    if kind == b"zset":
        return [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
    if kind == b"set":
        return list(client.smembers(key))
    if kind == b"list":
        return list(client.lrange(key, 0, -1))
    if kind == b"stream":
        return [
            part for _, fields in client.xrange(key) for pair in fields.items() for part in pair
        ]
    raise AssertionError(f"a key of type {kind!r} this scan cannot read: {key!r}")


def traces(nodes: Iterable[redis.Redis], *needles: str) -> list[str]:
    """Every key, or value of a key, on any node that contains one of ``needles``."""
    found = []
    wanted = [needle.encode() for needle in needles]
    for node in nodes:
        for key in node.scan_iter(count=1000):
            for text in [key, *values_of(node, key)]:
                if any(needle in text for needle in wanted):
                    found.append(f"{key!r} holds {text[:80]!r}")
    return found


def username_traces(name: str) -> list[str]:
    """The forms in which the store may name a username: itself, its key digest."""
    return [name, hashlib.sha256(name.encode()).hexdigest()]


async def _leave_every_kind_of_state(client: Any) -> dict[str, Any]:
    """Sessions, a rotation's sealed successor, a failure log, login buckets, roles and
    security events (the operator's roles_changed among them)."""
    user = await register(client)
    await client.put(
        f"/v1/admin/users/{user['user_id']}/roles", json={"roles": ["support"]}, headers=ADMIN
    )
    pair = await login(client, device="phone")
    await login(client)
    wrong = await client.post("/v1/auth/login", json={"username": "alice", "password": "x" * 20})
    assert wrong.status == 401  # a failure logged under the account's name
    rotated = await refresh_request(client, pair["refresh_token"])
    assert rotated.status == 200
    fresh: dict[str, Any] = await rotated.json()
    fresh["user_id"] = user["user_id"]
    return fresh


@pytest.mark.parametrize("by", ["owner", "operator"])
async def test_the_store_keeps_nothing_of_a_deleted_account(
    make_client: Any, redis_url: str, by: str
) -> None:
    client = await make_client(admin_clients=(OPS,))
    await register(client, "bob")  # another account, which must stay whole
    await login(client, "bob")
    pair = await _leave_every_kind_of_state(client)
    user_id = pair["user_id"]
    with redis.Redis.from_url(redis_url) as store:
        assert traces([store], user_id), "the scan finds the account before its deletion"
        assert store.llen(keyspace.events(user_id)) >= 4, "its events are there to delete"
        if by == "owner":
            response = await client.delete(
                "/v1/users/me", json={"password": TEST_PASSWORD}, headers=bearer(pair)
            )
        else:
            response = await client.delete(f"/v1/admin/users/{user_id}", headers=ADMIN)
        assert response.status == 204, await response.text()
        assert traces([store], user_id, *username_traces("alice")) == []
        assert traces([store], *username_traces("bob")), "another account is left alone"
    again = await register(client)
    assert again["user_id"] != user_id
    assert (await login(client))["access_token"]


def test_every_key_of_a_users_hash_tag_is_one_that_deletion_deletes() -> None:
    """A key function added to keyspace under ``{user_id}`` must be in user_keys or
    session_keys, which deletion goes through, or this fails."""
    user_id, session_id = "u" * 32, "s" * 22
    deleted = set(keyspace.user_keys(user_id)) | set(keyspace.session_keys(user_id, session_id))
    checked = 0
    for name, function in inspect.getmembers(keyspace, inspect.isfunction):
        if function.__module__ != keyspace.__name__ or name.startswith("_"):
            continue
        parameters = list(inspect.signature(function).parameters)
        if not parameters or parameters[0] != "user_id":
            continue
        args = {"user_id": user_id, "session_id": session_id}
        produced = function(*[args.get(p, "x") for p in parameters])
        for key in produced if isinstance(produced, list) else [produced]:
            assert f"{{{user_id}}}" in key, f"keyspace.{name} names a key outside the tag"
            assert key in deleted, f"keyspace.{name} makes {key}, which deletion misses"
            checked += 1
    assert keyspace.events(user_id) in deleted
    assert checked >= 5


async def test_a_login_racing_the_deletion_starts_no_session(
    make_client: Any, redis_url: str, monkeypatch: Any
) -> None:
    """A login whose password check read the user before the deletion runs its script
    after it: login.lua finds no user and starts nothing."""
    client = await make_client(admin_clients=(OPS,))
    user = await register(client)
    checking, deleted = asyncio.Event(), asyncio.Event()
    verify = Hasher.verify

    async def slow_verify(self: Hasher, password_hash: str, password: str) -> Any:
        result = await verify(self, password_hash, password)
        checking.set()
        await deleted.wait()
        return result

    monkeypatch.setattr(Hasher, "verify", slow_verify)
    race = asyncio.create_task(
        client.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
    )
    await checking.wait()
    response = await client.delete(f"/v1/admin/users/{user['user_id']}", headers=ADMIN)
    assert response.status == 204
    deleted.set()
    raced = await race
    assert raced.status == 401
    assert (await raced.json())["error"] == "invalid_credentials"
    with redis.Redis.from_url(redis_url) as store:
        assert traces([store], user["user_id"]) == []


async def test_a_name_left_claimed_by_an_interrupted_deletion_can_be_registered_again(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    """The process stopped after the user's slot was deleted, before the claim was freed."""
    user = await register(client)
    await redis_client.delete(*keyspace.user_keys(user["user_id"]))
    assert await redis_client.get(keyspace.username("alice")) == user["user_id"].encode()
    gone = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}
    )
    assert gone.status == 401
    again = await register(client)
    assert again["user_id"] != user["user_id"]
    assert await redis_client.get(keyspace.username("alice")) == again["user_id"].encode()


# -- Cluster ------------------------------------------------------------------------------


@pytest.fixture
def cluster(redis_cluster: RedisClusterProcesses) -> RedisClusterProcesses:
    redis_cluster.flush()
    return redis_cluster


def _nodes(cluster: RedisClusterProcesses) -> list[redis.Redis]:
    return [redis.Redis(port=port) for port in cluster.ports]


async def test_on_cluster_deletion_leaves_nothing_on_any_node(
    client_for: Any, cluster: RedisClusterProcesses
) -> None:
    client = await client_for(fast_settings(redis_url=cluster.url, admin_clients=(OPS,)))
    await register(client, "bob")
    pair = await _leave_every_kind_of_state(client)
    nodes = _nodes(cluster)
    try:
        assert traces(nodes, pair["user_id"])
        response = await client.delete(
            "/v1/users/me", json={"password": TEST_PASSWORD}, headers=bearer(pair)
        )
        assert response.status == 204
        assert traces(nodes, pair["user_id"], *username_traces("alice")) == []
        assert traces(nodes, *username_traces("bob"))
    finally:
        for node in nodes:
            node.close()
    assert (await register(client))["user_id"] != pair["user_id"]


async def test_on_cluster_logins_racing_a_deletion_leave_no_live_session(
    client_for: Any, cluster: RedisClusterProcesses
) -> None:
    """Concurrent logins and the deletion: each login either ran before (its session is
    then ended by the deletion) or is refused; nothing of the account is left."""
    client = await client_for(fast_settings(redis_url=cluster.url, admin_clients=(OPS,)))
    user = await register(client)
    body = {"username": "alice", "password": TEST_PASSWORD}
    results = await asyncio.gather(
        *[client.post("/v1/auth/login", json=body) for _ in range(8)],
        client.delete(f"/v1/admin/users/{user['user_id']}", headers=ADMIN),
        *[client.post("/v1/auth/login", json=body) for _ in range(8)],
    )
    assert results[8].status == 204
    for response in results[:8] + results[9:]:
        if response.status == 200:
            pair = await response.json()
            assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 401
            assert (await refresh_request(client, pair["refresh_token"])).status == 401
        else:
            assert response.status == 401
    nodes = _nodes(cluster)
    try:
        assert traces(nodes, user["user_id"]) == []
    finally:
        for node in nodes:
            node.close()


async def test_on_cluster_password_change_disable_and_roles_work(
    client_for: Any, cluster: RedisClusterProcesses
) -> None:
    client = await client_for(fast_settings(redis_url=cluster.url, admin_clients=(OPS,)))
    user = await register(client)
    path = f"/v1/admin/users/{user['user_id']}"
    current, other = await login(client), await login(client)
    changed = await client.post(
        "/v1/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": "a cluster wide new phrase"},
        headers=bearer(current),
    )
    assert changed.status == 204
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(current))).status == 200
    assert (await client.put(f"{path}/roles", json={"roles": ["a:b"]}, headers=ADMIN)).status == 204
    refreshed = await (await refresh_request(client, current["refresh_token"])).json()
    verify = await client.get("/v1/auth/verify", headers=bearer(refreshed))
    assert verify.headers["X-Auth-Roles"] == "a:b"
    assert (await client.post(f"{path}/disable", headers=ADMIN)).status == 204
    assert (await client.get("/v1/auth/me", headers=bearer(refreshed))).status == 401
    login_body = {"username": "alice", "password": "a cluster wide new phrase"}
    disabled = await client.post("/v1/auth/login", json=login_body)
    assert disabled.status == 403
    assert (await client.post(f"{path}/enable", headers=ADMIN)).status == 204
    assert (await client.post("/v1/auth/login", json=login_body)).status == 200
    shown = await (await client.get(path, headers=ADMIN)).json()
    assert shown["session_count"] == 1 and shown["roles"] == ["a:b"]
    assert (await client.delete(f"{path}/sessions", headers=ADMIN)).status == 204
    assert (await (await client.get(path, headers=ADMIN)).json())["session_count"] == 0
