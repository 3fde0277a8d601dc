"""AUTHSVC_REDIS_URL read into a StoreAddress, and Redis failures that become 503s."""

from __future__ import annotations

import importlib.resources
from typing import Any

import pytest
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from authsvc.errors import StoreUnavailable
from authsvc.store.errors import translate_errors
from authsvc.store.sentinel import (
    FollowingConnection,
    FollowingPool,
    FollowingSSLConnection,
    MasterSwitched,
)
from authsvc.store.urls import StoreAddress, parse_store_url


def test_sentinel_url_names_sentinels_service_and_db() -> None:
    address = parse_store_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2/auth/3")
    assert address == StoreAddress(
        "sentinel",
        "redis+sentinel://app:s%40cret@10.0.0.1:26379,10.0.0.2/auth/3",
        nodes=(("10.0.0.1", 26379), ("10.0.0.2", 26379)),
        service_name="auth",
        db=3,
        username="app",
        password="s@cret",
    )


def test_cluster_url_names_seed_nodes_with_tls() -> None:
    address = parse_store_url("rediss+cluster://:pw@n1:7000,[::1]:7001")
    assert address.topology == "cluster"
    assert address.nodes == (("n1", 7000), ("::1", 7001))
    assert (address.username, address.password, address.tls) == (None, "pw", True)


def test_single_and_memory_urls_keep_their_topology() -> None:
    assert parse_store_url("redis://h:1/0").topology == "single"
    assert parse_store_url("unix:///tmp/r.sock").topology == "single"
    assert parse_store_url("memory://").topology == "memory"


def test_a_password_never_shows_in_the_address_repr() -> None:
    assert "hunter2" not in repr(parse_store_url("redis+cluster://u:hunter2@n1:7000"))


class _Failing:
    retry_after = 4

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.unavailable = 0

    def note_unavailable(self) -> None:
        self.unavailable += 1

    @translate_errors
    async def call(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ReadOnlyError("You can't write against a read only replica."),
        MasterDownError("Link with MASTER is down"),
        TryAgainError("Multiple keys request during rehashing of slot"),
        ClusterDownError("The cluster is down"),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's failing"),
        MasterSwitched("the master changed while this reply was awaited"),
        ConnectionRefusedError(),
    ],
)
async def test_a_store_that_cannot_serve_now_is_store_unavailable(error: Exception) -> None:
    failing = _Failing(error)
    with pytest.raises(StoreUnavailable) as raised:
        await failing.call()
    assert raised.value.retry_after == 4
    assert failing.unavailable == 1  # what authsvc_store_errors_total counts


async def test_other_redis_errors_are_bugs_not_outages() -> None:
    """A wrong command is not an outage: it reaches the middleware as a 500 and a log line."""
    failing: Any = _Failing(ResponseError("WRONGTYPE Operation against a key"))
    with pytest.raises(ResponseError):
        await failing.call()
    assert failing.unavailable == 0


@pytest.mark.parametrize(
    ("tls", "connection_class"), [(False, FollowingConnection), (True, FollowingSSLConnection)]
)
def test_the_sentinel_pool_keeps_tls_to_the_data_nodes(tls: bool, connection_class: type) -> None:
    """``rediss+sentinel://`` speaks TLS to the master, as redis-py's own pool would."""
    sentinel = Sentinel([("127.0.0.1", 1)], ssl=tls)  # type: ignore[no-untyped-call]
    master = sentinel.master_for("authsvc", connection_pool_class=FollowingPool)
    assert type(master.connection_pool.make_connection()) is connection_class


def test_no_script_catches_a_refused_write() -> None:
    """READONLY from a script means it wrote nothing, so authsvc may send it again to the
    new master: a replica refuses a script's first write and ``redis.call`` stops the
    script there. A ``redis.pcall`` could catch the refusal and let the script answer as
    if it had written (docs/production.md, Sentinel)."""
    lua = importlib.resources.files("authsvc.store").joinpath("lua")
    texts = [entry.read_text("utf-8") for entry in lua.iterdir() if entry.name.endswith(".lua")]
    texts += [entry.read_text("utf-8") for entry in lua.joinpath("lib").iterdir()]
    assert len(texts) > 10
    assert not [text for text in texts if "pcall" in text]
