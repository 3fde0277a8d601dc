"""What a Redis's own settings mean for authsvc's promises: eviction and persistence."""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from authsvc.store.connect import RedisClient
from authsvc.store.records import StoreCheck

logger = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_settings(redis: RedisClient) -> StoreCheck:
    """Read maxmemory-policy and persistence on every master, and say what they risk.

    Connection errors propagate (the caller maps them to an unavailable store).
    """
    nodes: list[Any] = redis.get_primaries() if isinstance(redis, RedisCluster) else [None]
    policies: set[str] = set()
    persistent = True
    try:
        for node in nodes:
            kwargs = {} if node is None else {"target_nodes": node}
            config = await redis.config_get("maxmemory-policy", **kwargs)
            config |= await redis.config_get("appendonly", **kwargs)
            config |= await redis.config_get("save", **kwargs)
            values = {_text(k): _text(v) for k, v in config.items()}
            policies.add(values.get("maxmemory-policy", "noeviction"))
            persistent &= values.get("appendonly") == "yes" or bool(values.get("save"))
    except ResponseError as exc:
        # CONFIG is often renamed or denied by ACLs on managed Redis: then we cannot tell,
        # and say nothing rather than guess.
        logger.info("cannot read the store's settings (%s); not checking them", exc)
        return StoreCheck(maxmemory_policy=None, persistence=None)
    warnings = []
    evicting = sorted(policy for policy in policies if policy != "noeviction")
    if evicting:
        warnings.append(
            f"maxmemory-policy is {', '.join(evicting)}: under memory pressure Redis may "
            "evict live sessions and rate-limit counters; set noeviction"
        )
    if not persistent:
        warnings.append(
            "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart "
            "ends every session; set appendonly yes"
        )
    return StoreCheck(
        maxmemory_policy=", ".join(sorted(policies)),
        persistence=persistent,
        warnings=tuple(warnings),
    )
