"""A Sentinel failover while requests run: 503s while no master answers, then 200 by itself.

The test has its own master, replica and three sentinels (``topologies``), kills the
master with SIGKILL while clients keep sending requests, and lets the sentinels promote
the replica. authsvc follows the new master without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import TEST_PASSWORD, bearer, fast_settings, login, register
from support import refresh as refresh_request
from topologies import SentinelProcesses

pytestmark = pytest.mark.process

RETRY_AFTER = 1


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelProcesses]:
    processes = SentinelProcesses(tmp_path / "sentinel")
    processes.start()
    try:
        yield processes
    finally:
        processes.stop()


async def test_failover_answers_503_then_200_by_itself_and_keeps_replicated_sessions(
    client_for: Any, sentinel: SentinelProcesses
) -> None:
    client = await client_for(
        fast_settings(redis_url=sentinel.url, store_timeout=0.5, store_retry_after=RETRY_AFTER)
    )
    await register(client)
    pairs = [await login(client) for _ in range(5)]
    successors = [
        await (await refresh_request(client, pair["refresh_token"])).json() for pair in pairs
    ]
    sentinel.wait_replicated()  # what was acknowledged before the failover is on the replica

    statuses: list[tuple[float, int, str]] = []
    promoted = asyncio.Event()

    async def traffic() -> None:
        """Reads and writes, as clients keep sending them, until well after the promotion."""
        deadline = time.monotonic() + 40
        served_after_promotion = 0
        index = 0
        while time.monotonic() < deadline and served_after_promotion < 20:
            index += 1
            me = await client.get("/v1/auth/me", headers=bearer(successors[0]))
            created = await client.post(
                "/v1/users", json={"username": f"user{index}", "password": TEST_PASSWORD}
            )
            for response in (me, created):
                body = await response.json()
                statuses.append((time.monotonic(), response.status, body.get("error", "")))
                if response.status == 503:
                    assert response.headers["Retry-After"] == str(RETRY_AFTER)
            if promoted.is_set() and me.status == 200 and created.status == 201:
                served_after_promotion += 1
            await asyncio.sleep(0.02)

    running = asyncio.create_task(traffic())
    await asyncio.sleep(0.3)
    old_port = sentinel.kill_master()
    killed_at = time.monotonic()
    new_port = await asyncio.to_thread(sentinel.wait_for_new_master, old_port)
    promoted.set()
    await running

    assert new_port != old_port
    assert {status for _, status, _ in statuses} <= {200, 201, 503}, statuses
    unavailable = [at for at, status, _ in statuses if status == 503]
    assert unavailable, "no request met the failover"
    assert {code for _, status, code in statuses if status == 503} == {"store_unavailable"}
    # 200 again by itself: the last requests were all served.
    assert [status for _, status, _ in statuses[-10:]] == [200, 201] * 5
    print(
        f"failover: 503s for {max(unavailable) - min(unavailable):.2f}s, "
        f"first 503 {min(unavailable) - killed_at:.2f}s after the kill"
    )
    # Sessions written and replicated before the failover go on.
    for successor in successors:
        response = await refresh_request(client, successor["refresh_token"])
        assert response.status == 200, await response.text()
    assert (await client.get("/readyz")).status == 200
