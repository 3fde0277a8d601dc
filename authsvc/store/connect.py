"""Build a Redis client from AUTHSVC_REDIS_URL."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

MEMORY_URL = "memory://"


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_URL)


def connect(url: str, *, timeout: float) -> Redis:
    """Return a client for a ``redis://``, ``rediss://``, ``unix://`` or ``memory://`` URL.

    ``memory://`` is fakeredis in this process, running the same Lua scripts (through
    lupa); its state dies with the process.
    """
    if is_memory_url(url):
        import fakeredis

        client: Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # One quick retry on a fresh connection covers pooled connections that died with
        # a Redis restart; more would only hold requests during a real outage.
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        health_check_interval=30,
    )
