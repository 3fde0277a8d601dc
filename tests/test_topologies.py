"""Smoke tests of the Redis topologies in topologies.py: a cluster and a sentinel failover."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from topologies import RedisClusterProcesses, SentinelProcesses

# A cluster and sentinels of their own: Redis processes beyond the suite's.
pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(redis_cluster: RedisClusterProcesses) -> RedisClusterProcesses:
    """The suite's cluster (conftest), emptied first."""
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelProcesses]:
    topology = SentinelProcesses(tmp_path / "sentinel")
    topology.start()
    try:
        yield topology
    finally:
        topology.stop()


def test_cluster_spreads_keys_over_three_masters(cluster: RedisClusterProcesses) -> None:
    assert cluster.url.startswith("redis+cluster://127.0.0.1:")
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        for i in range(100):
            client.set(f"k{i}", i)
        client.set("{alice}:a", "1")
        client.set("{bob}:b", "2")
        assert [client.get(f"k{i}") for i in (0, 50, 99)] == [b"0", b"50", b"99"]
        assert client.get("{alice}:a") == b"1"
        assert client.get("{bob}:b") == b"2"
    finally:
        client.close()
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            assert node.dbsize() > 0, f"no key on the master on port {port}"
    cluster.flush()
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            assert node.dbsize() == 0


def test_sentinels_fail_over_to_the_replica(sentinels: SentinelProcesses) -> None:
    old_master = sentinels.master_port()
    (replica,) = [server.port for server in sentinels.servers if server.port != old_master]
    with redis.Redis(port=old_master) as client:
        client.set("before-failover", "kept")
    sentinels.wait_replicated()
    with redis.Redis(port=replica) as client:
        assert client.get("before-failover") == b"kept"

    assert sentinels.kill_master() == old_master
    new_master = sentinels.wait_for_new_master(old_master)
    assert new_master == replica
    assert sentinels.master_port() == new_master
    with redis.Redis(port=new_master) as client:
        assert client.get("before-failover") == b"kept"
        client.set("after-failover", "written")
