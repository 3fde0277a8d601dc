"""A Redis outage: 503 store_unavailable with Retry-After, never a 500, and recovery alone.

Each test has a Redis of its own, stopped and started again on the same port, so the
suite's shared server is never disturbed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions
from support import TEST_PASSWORD, FakeClock, RedisProcess, bearer, fast_settings, login, register
from support import refresh as refresh_request

from authsvc.config import Settings

RETRY_AFTER = 3


@pytest.fixture
def server(own_redis: RedisProcess) -> RedisProcess:
    """A Redis of this test's own on a fixed port, so it can come back where it was."""
    return own_redis


@pytest.fixture
def outage_settings(server: RedisProcess) -> Settings:
    return fast_settings(redis_url=server.url, store_timeout=0.5, store_retry_after=RETRY_AFTER)


@pytest.fixture
async def outage_client(client_for: Any, outage_settings: Settings) -> Any:
    return await client_for(outage_settings)


async def _assert_store_unavailable(response: Any) -> None:
    assert response.status == 503, await response.text()
    body = await response.json()
    assert body["error"] == "store_unavailable"
    assert body["error_description"]
    assert response.headers["Retry-After"] == str(RETRY_AFTER)


async def _every_store_request(client: Any, pair: dict[str, Any]) -> dict[str, Any]:
    """Send one request to each store-backed endpoint; return the responses by name."""
    credentials = {"username": "alice", "password": TEST_PASSWORD}
    return {
        "register": await client.post(
            "/v1/users", json={"username": "bob", "password": TEST_PASSWORD}
        ),
        "login": await client.post("/v1/auth/login", json=credentials),
        "refresh": await refresh_request(client, pair["refresh_token"]),
        "me": await client.get("/v1/auth/me", headers=bearer(pair)),
        "verify": await client.get("/v1/auth/verify", headers=bearer(pair)),
        "sessions": await client.get("/v1/auth/sessions", headers=bearer(pair)),
        "revoke": await client.delete(
            f"/v1/auth/sessions/{pair['session_id']}", headers=bearer(pair)
        ),
        "logout": await client.post("/v1/auth/logout", headers=bearer(pair)),
        "logout-all": await client.post("/v1/auth/logout-all", headers=bearer(pair)),
    }


async def test_store_outage_answers_503_store_unavailable_everywhere(
    outage_client: Any, server: RedisProcess
) -> None:
    await register(outage_client)
    pair = await login(outage_client)
    assert (await outage_client.get("/readyz")).status == 200

    server.stop()

    for name, response in (await _every_store_request(outage_client, pair)).items():
        assert response.status == 503, name
        await _assert_store_unavailable(response)
    # A second round: the pool's dead connections are gone by now, and it still holds.
    for response in (await _every_store_request(outage_client, pair)).values():
        await _assert_store_unavailable(response)
    ready = await outage_client.get("/readyz")
    assert ready.status == 503
    assert ready.headers["Retry-After"] == str(RETRY_AFTER)
    assert (await outage_client.get("/healthz")).status == 200


async def test_bad_input_during_an_outage_is_still_a_client_error(
    outage_client: Any, server: RedisProcess
) -> None:
    """Input that fails before the store is touched keeps its own error, not 503."""
    server.stop()
    missing_token = await outage_client.get("/v1/auth/me")
    assert missing_token.status == 401
    malformed = await outage_client.post("/v1/auth/refresh", data=b"{", headers={
        "Content-Type": "application/json"
    })  # fmt: skip
    assert malformed.status == 400


async def test_app_recovers_when_the_store_comes_back(
    outage_client: Any, server: RedisProcess, clock: FakeClock
) -> None:
    """Redis restarted empty: the pool reconnects and EVALSHA reloads the scripts."""
    await register(outage_client)
    await login(outage_client)

    server.stop()
    assert (await outage_client.get("/readyz")).status == 503
    server.start()

    assert (await outage_client.get("/readyz")).status == 200
    # Persistence is off: the restarted Redis is empty and has no scripts cached.
    await register(outage_client)
    pair = await login(outage_client)
    response = await refresh_request(outage_client, pair["refresh_token"])
    assert response.status == 200, await response.text()
    successor = await response.json()
    me = await outage_client.get("/v1/auth/me", headers=bearer(successor))
    assert me.status == 200
    listed = await (await outage_client.get("/v1/auth/sessions", headers=bearer(successor))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [pair["session_id"]]
    # Grace and replay still run on the reloaded scripts.
    clock.advance(11)
    assert (await refresh_request(outage_client, pair["refresh_token"])).status == 401
    assert (await outage_client.get("/v1/auth/me", headers=bearer(successor))).status == 401


async def test_requests_during_a_restart_recover_without_a_500(
    outage_client: Any, server: RedisProcess
) -> None:
    """Pooled connections that died with Redis give 503 or success, never 500."""
    await register(outage_client)
    pair = await login(outage_client)
    for attempt in range(3):
        server.stop()
        server.start()
        await register(outage_client, f"user{attempt}")
        response = await outage_client.get("/v1/auth/me", headers=bearer(pair))
        # The restarted Redis lost the session: 401, not 500.
        assert response.status == 401


async def test_every_pooled_connection_that_died_with_redis_is_replaced(
    outage_client: Any, server: RedisProcess
) -> None:
    """After a restart, requests on each dead pooled connection retry on a fresh one."""
    await register(outage_client)
    pair = await login(outage_client)
    # Concurrent requests fill the pool with connections that the restart will kill.
    me = [outage_client.get("/v1/auth/me", headers=bearer(pair)) for _ in range(20)]
    assert {response.status for response in await asyncio.gather(*me)} == {200}

    server.stop()
    server.start()

    names = [f"user{i}" for i in range(20)]
    created = await asyncio.gather(
        *(outage_client.post("/v1/users", json={"username": name, "password": TEST_PASSWORD})
          for name in names)
    )  # fmt: skip
    assert [response.status for response in created] == [201] * len(names)
    pairs = await asyncio.gather(*(login(outage_client, name) for name in names))
    rotated = await asyncio.gather(
        *(refresh_request(outage_client, pair["refresh_token"]) for pair in pairs)
    )
    assert [response.status for response in rotated] == [200] * len(names)


async def test_app_started_while_the_store_is_down_serves_once_it_is_up(
    client_for: Any, outage_settings: Settings, server: RedisProcess
) -> None:
    server.stop()
    client = await client_for(outage_settings)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 503
    await _assert_store_unavailable(
        await client.post("/v1/users", json={"username": "alice", "password": TEST_PASSWORD})
    )

    server.start()

    assert (await client.get("/readyz")).status == 200
    await register(client)
    pair = await login(client)
    response = await refresh_request(client, pair["refresh_token"])
    assert response.status == 200, await response.text()
    assert (await client.get("/v1/auth/me", headers=bearer(await response.json()))).status == 200


async def test_store_that_stops_answering_times_out_to_503_and_recovers(
    client_for: Any, outage_settings: Settings, server: RedisProcess
) -> None:
    """A hung Redis (as behind a network partition) is a timeout: 503, then recovery."""
    client = await client_for(dataclasses.replace(outage_settings, store_timeout=0.2))
    await register(client)
    pair = await login(client)
    assert server.process is not None

    server.process.send_signal(signal.SIGSTOP)
    try:
        await _assert_store_unavailable(await refresh_request(client, pair["refresh_token"]))
        await _assert_store_unavailable(await client.get("/v1/auth/me", headers=bearer(pair)))
        assert (await client.get("/readyz")).status == 503
    finally:
        server.process.send_signal(signal.SIGCONT)

    # Replies to the timed-out commands must not be read as answers to later ones.
    for _ in range(5):
        me = await client.get("/v1/auth/me", headers=bearer(pair))
        assert me.status == 200, await me.text()
        assert (await me.json())["session_id"] == pair["session_id"]
    # The timed-out refresh may have reached Redis after all: a retry is within the grace,
    # so it gets that rotation's successor and the session goes on.
    response = await refresh_request(client, pair["refresh_token"])
    assert response.status == 200, await response.text()
    assert (await response.json())["session_id"] == pair["session_id"]


async def _refuse_writes_for_a_failed_snapshot(server: RedisProcess) -> None:
    """Make Redis answer MISCONF to writes, as it does when its disk fills up.

    Redis refuses writes after a failed background save while stop-writes-on-bgsave-error
    is on and snapshots are configured. The save fails because the server's directory is
    gone (the suite runs as root, so taking permissions away would not do, and CONFIG SET
    dir is a protected setting).
    """
    admin = redis.asyncio.Redis(port=server.port)
    try:
        shutil.rmtree(server.directory)
        await admin.config_set("save", "3600 1")
        await admin.config_set("stop-writes-on-bgsave-error", "yes")
        await admin.bgsave()
        for _ in range(200):
            info = await admin.info("persistence")
            if not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "err":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the background save did not fail")
        with pytest.raises(redis.exceptions.ResponseError, match=r"^MISCONF"):
            await admin.set("probe", "1")
    finally:
        await admin.aclose()


async def test_store_refusing_writes_with_misconf_answers_503(
    outage_client: Any, server: RedisProcess
) -> None:
    """A disk that refuses writes (MISCONF) is 503 store_unavailable, never a 500."""
    await register(outage_client)
    pair = await login(outage_client)

    await _refuse_writes_for_a_failed_snapshot(server)

    await _assert_store_unavailable(
        await outage_client.post("/v1/users", json={"username": "bob", "password": TEST_PASSWORD})
    )
    await _assert_store_unavailable(
        await outage_client.post(
            "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}
        )
    )
    await _assert_store_unavailable(await refresh_request(outage_client, pair["refresh_token"]))
    await _assert_store_unavailable(
        await outage_client.post("/v1/auth/logout-all", headers=bearer(pair))
    )
    # Reads still answer: the session is live and the failed writes changed nothing.
    assert (await outage_client.get("/v1/auth/me", headers=bearer(pair))).status == 200
