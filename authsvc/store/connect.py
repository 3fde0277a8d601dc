"""Open a Redis client for AUTHSVC_REDIS_URL: one server, Sentinel, Cluster or memory://.

``authsvc.store.urls`` reads the URL into a ``StoreAddress`` (config validation calls it,
so a bad URL stops the start with one line); ``open_redis`` builds the client for its
topology and, as the one who opened it, closes it when its ``async with`` ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from authsvc.store.sentinel import FollowingPool, MasterWatcher
from authsvc.store.urls import StoreAddress, parse_store_url

RedisClient: TypeAlias = "Redis | RedisCluster"


def _client_options(timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # One quick retry on a fresh connection covers pooled connections that died with a
        # Redis restart or a failover; more would only hold requests during an outage.
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
    }


def _single_server_options(timeout: float) -> dict[str, Any]:
    """``_client_options``, but a timeout is not retried: the store timeout bounds a call.

    redis-py retries a timed-out command, and a timed-out handshake of a new connection,
    each after a wait of the whole timeout: on a connection that hangs (a half-open
    network, a peer gone without a FIN or RST) a call took up to four times
    AUTHSVC_STORE_TIMEOUT before its 503. A reset connection is still retried at once.
    """
    return {
        **_client_options(timeout),
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.01),
            retries=1,
            supported_errors=(RedisConnectionError,),
        ),
    }


@contextlib.asynccontextmanager
async def open_redis(url: str, *, socket_timeout: float) -> AsyncIterator[RedisClient]:
    """Yield a client for AUTHSVC_REDIS_URL, closed when the block ends.

    ``memory://`` is fakeredis in this process, running the same Lua scripts (through
    lupa); its state dies with the process. Nothing connects before the first command,
    so a store that is down at start is no error here.

    Raises:
        StoreUrlError: when the URL cannot be read.
    """
    address = parse_store_url(url)
    options = _client_options(socket_timeout)
    if address.topology == "memory":
        import fakeredis

        client: RedisClient = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    elif address.topology == "single":
        client = Redis.from_url(
            url, health_check_interval=30, **_single_server_options(socket_timeout)
        )
    elif address.topology == "cluster":
        # Not entered with "async with": that would connect now, and a cluster that is
        # down at start must only make /readyz say so.
        client = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in address.nodes],
            username=address.username,
            password=address.password,
            ssl=address.tls,
            **options,
        )
    else:
        async with _sentinel_master(address, options) as master:
            yield master
        return
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _sentinel_master(address: StoreAddress, options: dict[str, Any]) -> AsyncIterator[Redis]:
    # The credentials are the data nodes'; sentinels are asked without them, as they
    # usually run without a password of their own.
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.nodes),
        sentinel_kwargs={
            "socket_timeout": options["socket_timeout"],
            "socket_connect_timeout": options["socket_connect_timeout"],
            "ssl": address.tls,
        },
        db=address.db,
        username=address.username,
        password=address.password,
        ssl=address.tls,
        health_check_interval=30,
        **options,
    )
    # The watcher follows each switch the sentinels announce before the next command;
    # a server that answers READONLY or is no master sends the pool to the sentinels.
    master = sentinel.master_for(address.service_name, connection_pool_class=FollowingPool)
    watcher = MasterWatcher(sentinel, master.connection_pool, address.service_name)
    watcher.start()
    try:
        yield master
    finally:
        await watcher.stop()
        await master.aclose()
        for client in sentinel.sentinels:
            await client.aclose()
