"""The Redis ACL user of docs/production.md, applied as written to a real Redis: every flow
of authsvc works under it, and Redis denies nothing but the optional CONFIG GET."""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions
from support import TEST_PASSWORD, FakeClock, RedisProcess, bearer, fast_settings, login, refresh
from topologies import RedisClusterProcesses

# A Redis of its own with the guide's ACL user, and the suite's cluster.
pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "production.md"
ACL_PASSWORD = "acl-test-password"
# authsvc reads maxmemory-policy and persistence when it may; denied, it claims nothing.
TOLERATED_DENIALS = {"config|get"}


def acl_lines() -> list[str]:
    """The ``ACL SETUSER authsvc`` lines of the guide, in order, with a test password."""
    lines = re.findall(r"^ACL SETUSER authsvc .*$", GUIDE.read_text(encoding="utf-8"), re.M)
    assert lines, "docs/production.md names no ACL SETUSER authsvc line"
    return [line.replace(">CHANGE-ME", f">{ACL_PASSWORD}") for line in lines]


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own, with the guide's user (the first line: not Cluster)."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        with redis.Redis(port=server.port) as admin:
            admin.execute_command(*shlex.split(acl_lines()[0]))
        yield server
    finally:
        server.stop()


async def run_every_flow(client: Any, clock: FakeClock) -> None:
    """Each endpoint that touches the store, with the status the contract gives it."""
    assert (await client.get("/readyz")).status == 200
    response = await client.post("/v1/users", json={"username": "alice", "password": TEST_PASSWORD})
    assert response.status == 201
    duplicate = await client.post(
        "/v1/users", json={"username": "Alice", "password": TEST_PASSWORD}
    )
    assert duplicate.status == 409
    wrong = await client.post("/v1/auth/login", json={"username": "alice", "password": "x" * 12})
    assert wrong.status == 401
    first, second, third = [await login(client) for _ in range(3)]
    assert (await client.get("/v1/auth/me", headers=bearer(first))).status == 200
    assert (await client.get("/v1/auth/verify", headers=bearer(first))).status == 200
    listed = await client.get("/v1/auth/sessions", headers=bearer(first))
    assert listed.status == 200
    assert len((await listed.json())["sessions"]) == 3
    rotated = await refresh(client, first["refresh_token"])
    assert rotated.status == 200
    assert (await refresh(client, first["refresh_token"])).status == 200  # the grace
    clock.advance(60)
    assert (await refresh(client, first["refresh_token"])).status == 401  # a replay
    deleted = await client.delete(
        f"/v1/auth/sessions/{second['session_id']}", headers=bearer(third)
    )
    assert deleted.status == 204
    assert (await client.post("/v1/auth/logout", headers=bearer(third))).status == 204
    fourth = await login(client)
    assert (await client.post("/v1/auth/logout-all", headers=bearer(fourth))).status == 204
    assert (await client.get("/v1/auth/me", headers=bearer(fourth))).status == 401
    fifth = await login(client)
    events = await client.get("/v1/auth/events", headers=bearer(fifth))
    assert events.status == 200
    assert [e["type"] for e in (await events.json())["events"]] == [
        "login", "logout_all", "login", "logout", "session_revoked", "refresh_replay",
        "login", "login", "login", "login_failed",
    ]  # fmt: skip
    await run_account_flows(client)


async def run_account_flows(client: Any) -> None:
    """A password change, every operator action, and both deletions."""
    new_password = "a new passphrase under acl"
    pair = await login(client)
    changed = await client.post(
        "/v1/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": new_password},
        headers=bearer(pair),
    )
    assert changed.status == 204
    user_id = (await (await client.get("/v1/auth/me", headers=bearer(pair))).json())["user_id"]
    base = f"/v1/admin/users/{user_id}"
    admin = {"Authorization": "Basic " + base64.b64encode(b"ops:ops-secret").decode()}
    for method, path, body in [
        ("GET", "/v1/admin/users?username=alice", None),
        ("GET", base, None),
        ("GET", f"{base}/sessions", None),
        ("PUT", f"{base}/roles", {"roles": ["support"]}),
        ("PUT", f"{base}/roles", {"roles": []}),
        ("POST", f"{base}/disable", None),
        ("POST", f"{base}/enable", None),
        ("PUT", f"{base}/password", {"new_password": TEST_PASSWORD}),
        ("DELETE", f"{base}/sessions", None),
        ("GET", f"{base}/events", None),
    ]:
        response = await client.request(method, path, json=body, headers=admin)
        assert response.status in (200, 204), (method, path, await response.text())
    second = await login(client)
    assert (
        await client.delete(f"{base}/sessions/{second['session_id']}", headers=admin)
    ).status == 204
    third = await login(client)
    deleted = await client.delete(
        "/v1/users/me", json={"password": TEST_PASSWORD}, headers=bearer(third)
    )
    assert deleted.status == 204
    await client.post("/v1/users", json={"username": "alice", "password": TEST_PASSWORD})
    uid = (await (await client.get("/v1/admin/users?username=alice", headers=admin)).json())[
        "user_id"
    ]
    assert (await client.delete(f"/v1/admin/users/{uid}", headers=admin)).status == 204


def denied(nodes: list[redis.Redis]) -> set[str]:
    return {entry["object"] for node in nodes for entry in node.acl_log()}


async def test_authsvc_runs_every_flow_as_the_guides_acl_user(
    acl_redis: RedisProcess, client_for: Any, clock: FakeClock
) -> None:
    url = f"redis://authsvc:{ACL_PASSWORD}@127.0.0.1:{acl_redis.port}/0"
    client = await client_for(fast_settings(redis_url=url, admin_clients=(("ops", "ops-secret"),)))

    await run_every_flow(client, clock)

    with redis.Redis(port=acl_redis.port) as admin:
        assert denied([admin]) <= TOLERATED_DENIALS
    # Least privilege: nothing outside authsvc's own keys.
    with redis.Redis.from_url(url) as as_authsvc:
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_authsvc.get("someone-elses:key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_authsvc.flushdb()


async def test_authsvc_runs_every_flow_as_the_guides_acl_user_on_cluster(
    redis_cluster: RedisClusterProcesses, client_for: Any, clock: FakeClock
) -> None:
    redis_cluster.flush()
    nodes = [redis.Redis(port=port) for port in redis_cluster.ports]
    try:
        for node in nodes:
            for line in acl_lines():  # the Cluster line adds to the first
                node.execute_command(*shlex.split(line))
            node.acl_log_reset()
        url = redis_cluster.url.replace("://", f"://authsvc:{ACL_PASSWORD}@", 1)
        client = await client_for(
            fast_settings(redis_url=url, admin_clients=(("ops", "ops-secret"),))
        )

        await run_every_flow(client, clock)

        assert denied(nodes) <= TOLERATED_DENIALS
    finally:
        for node in nodes:
            node.acl_deluser("authsvc")
            node.close()
        redis_cluster.flush()
