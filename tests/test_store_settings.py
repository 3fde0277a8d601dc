"""Redis settings that break authsvc's promises are named at start and in /readyz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from support import RedisProcess, fast_settings

# A Redis of each test's own to reconfigure, or the embedded store: processes of their own.
pytestmark = pytest.mark.slow


def _configure(server: RedisProcess, **settings: str) -> None:
    with redis.Redis(port=server.port) as client:
        for name, value in settings.items():
            client.config_set(name.replace("_", "-"), value)


async def _warnings(client_for: Any, server: RedisProcess) -> list[str]:
    client = await client_for(fast_settings(redis_url=server.url))
    response = await client.get("/readyz")
    assert response.status == 200
    warnings: list[str] = (await response.json())["store_warnings"]
    return warnings


async def test_readyz_warns_that_an_allkeys_policy_can_evict_sessions(
    client_for: Any, own_redis: RedisProcess
) -> None:
    _configure(own_redis, maxmemory_policy="allkeys-lru", appendonly="yes")
    (warning,) = await _warnings(client_for, own_redis)
    assert "allkeys-lru" in warning
    assert "evict live sessions" in warning


async def test_readyz_warns_that_a_store_without_persistence_forgets_sessions(
    client_for: Any, own_redis: RedisProcess
) -> None:
    _configure(own_redis, maxmemory_policy="noeviction", appendonly="no", save="")
    (warning,) = await _warnings(client_for, own_redis)
    assert "persistence is off" in warning


async def test_a_store_configured_as_advised_draws_no_warning(
    client_for: Any, own_redis: RedisProcess
) -> None:
    _configure(own_redis, maxmemory_policy="noeviction", appendonly="yes")
    assert await _warnings(client_for, own_redis) == []


async def test_the_embedded_store_is_configured_right_by_construction(
    client_for: Any, tmp_path: Path
) -> None:
    client = await client_for(fast_settings(redis_url=None, data_dir=tmp_path / "data"))
    body = await (await client.get("/readyz")).json()
    assert body["store_warnings"] == []


async def test_a_store_that_denies_config_is_not_guessed_about(
    client_for: Any, own_redis: RedisProcess
) -> None:
    """Managed Redis often forbids CONFIG: readiness still holds, with nothing claimed."""
    with redis.Redis(port=own_redis.port) as admin:
        admin.acl_setuser(
            "app", enabled=True, passwords=["+app-secret"], keys=["*"],
            commands=["+@all", "-config"],
        )  # fmt: skip
    url = f"redis://app:app-secret@127.0.0.1:{own_redis.port}/0"
    client = await client_for(fast_settings(redis_url=url))
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["store_warnings"] == []
