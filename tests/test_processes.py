"""Real ``python -m authsvc serve`` processes: instances sharing Redis, workers, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from support import TEST_PASSWORD, free_port

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

# Only for testing! Cheap argon2, so each process start and login is quick.
FAST_ENV = {
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_COST": "64",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
    "AUTHSVC_LOG_LEVEL": "WARNING",
}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Server:
    """One ``python -m authsvc serve`` process on a port of its own."""

    def __init__(
        self, log_path: Path, env: dict[str, str], *args: str, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.args = args
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")},
            **FAST_ENV,
            "AUTHSVC_HOST": "127.0.0.1",
            "AUTHSVC_PORT": str(self.port),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "authsvc", "serve", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # A process group of its own, as a shell gives a foreground job.
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"authsvc exited with {self.process.returncode}: {self.log()}")
            try:
                if self.request("GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"authsvc did not answer /healthz in {READY_TIMEOUT}s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM, as an orchestrator stops it; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> Reply:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, reply_headers = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, raw, reply_headers = error.code, error.read(), error.headers
        return Reply(status, dict(reply_headers), json.loads(raw) if raw else None)

    def register(self, username: str) -> Reply:
        return self.request("POST", "/v1/users", {"username": username, "password": TEST_PASSWORD})

    def login(self, username: str) -> dict[str, Any]:
        reply = self.request(
            "POST", "/v1/auth/login", {"username": username, "password": TEST_PASSWORD}
        )
        assert reply.status == 200, reply.body
        body: dict[str, Any] = reply.body
        return body

    def refresh(self, refresh_token: str) -> Reply:
        return self.request("POST", "/v1/auth/refresh", {"refresh_token": refresh_token})


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Every server a test starts; all killed at the end, whatever happened."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One AUTHSVC_KEYS_DIR, written by the CLI, that every instance signs with."""
    directory = tmp_path_factory.mktemp("keys")
    subprocess.run(
        [sys.executable, "-m", "authsvc", "keys", "generate", "--dir", str(directory)],
        check=True,
        capture_output=True,
    )
    return directory


def _valkeys_on(data_dir: Path) -> list[int]:
    """Pids of live valkey-server processes working in ``data_dir``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone, a zombie, or not ours to look at
        if b"valkey-server" in cmdline and cwd == str(data_dir.resolve()):
            found.append(int(entry.name))
    return found


def _workers(pid: int) -> list[int]:
    """Pids of the worker processes a ``serve --workers N`` parent spawned."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


async def test_two_instances_share_sessions_through_redis(
    servers: list[Server],
    tmp_path: Path,
    keys_dir: Path,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    env = {
        "AUTHSVC_REDIS_URL": redis_url,
        "AUTHSVC_KEYS_DIR": str(keys_dir),
        # The issuer defaults to http://HOST:PORT; instances of one service share one.
        "AUTHSVC_ISSUER": "http://auth.test",
    }
    a = Server(tmp_path / "a.log", env)
    b = Server(tmp_path / "b.log", env)
    servers += [a, b]
    a.start()
    b.start()

    assert a.register("alice").status == 201
    assert b.register("Alice").status == 409  # one account table for both
    on_a = a.login("alice")
    rotated = b.refresh(on_a["refresh_token"])
    assert rotated.status == 200, rotated.body
    on_b = rotated.body
    assert on_b["session_id"] == on_a["session_id"]

    # B's access token verifies on A: both sign with the keys in AUTHSVC_KEYS_DIR.
    me = a.request("GET", "/v1/auth/me", token=on_b["access_token"])
    assert me.status == 200, me.body
    assert me.body["session_id"] == on_a["session_id"]
    # A's rotated-away refresh token, presented on A, is within the grace: same successor.
    again = a.refresh(on_a["refresh_token"])
    assert again.status == 200
    assert again.body["refresh_token"] == on_b["refresh_token"]

    assert b.request("POST", "/v1/auth/logout-all", token=on_b["access_token"]).status == 204
    for token in (on_a["access_token"], on_b["access_token"]):
        assert a.request("GET", "/v1/auth/me", token=token).status == 401
        assert a.request("GET", "/v1/auth/verify", token=token).status == 401
    assert a.refresh(on_b["refresh_token"]).status == 401


def _start_two_workers(servers: list[Server], tmp_path: Path, **env: str) -> tuple[Server, Path]:
    """Start ``serve --workers 2`` on the embedded store in ``tmp_path/data``."""
    data_dir = tmp_path / "data"
    server = Server(
        tmp_path / "workers.log", {"AUTHSVC_DATA_DIR": str(data_dir), **env}, "--workers", "2"
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    return server, data_dir


def test_workers_on_the_embedded_store_serve_and_stop_cleanly(
    servers: list[Server], tmp_path: Path, keys_dir: Path
) -> None:
    server, data_dir = _start_two_workers(servers, tmp_path, AUTHSVC_KEYS_DIR=str(keys_dir))
    assert len(_valkeys_on(data_dir)) == 1

    assert server.request("GET", "/readyz").status == 200
    assert server.register("alice").status == 201
    pair = server.login("alice")
    # Whichever worker answers, they share the store and the key ring.
    for _ in range(10):
        me = server.request("GET", "/v1/auth/me", token=pair["access_token"])
        assert me.status == 200, me.body
    rotated = server.refresh(pair["refresh_token"])
    assert rotated.status == 200, rotated.body
    workers = _workers(server.process.pid)
    assert len(workers) == 2

    assert server.terminate() == 0, server.log()
    assert _valkeys_on(data_dir) == []
    assert all(not Path(f"/proc/{pid}/cmdline").exists() for pid in workers)
    assert "Traceback" not in server.log()


def test_ctrl_c_stops_workers_and_their_store_cleanly(
    servers: list[Server], tmp_path: Path
) -> None:
    """Ctrl-C signals the whole process group: workers stopping then is no failure."""
    server, data_dir = _start_two_workers(servers, tmp_path)
    assert server.request("GET", "/readyz").status == 200

    os.killpg(server.process.pid, signal.SIGINT)

    assert server.process.wait(STOP_TIMEOUT) == 0, server.log()
    assert "a worker exited unexpectedly" not in server.log()
    assert _valkeys_on(data_dir) == []


def test_embedded_store_keeps_a_session_across_a_process_restart(
    servers: list[Server], tmp_path: Path, keys_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_KEYS_DIR": str(keys_dir)}
    first = Server(tmp_path / "first.log", env)
    servers.append(first)
    first.start()
    assert first.register("alice").status == 201
    pair = first.login("alice")
    assert first.terminate() == 0, first.log()
    assert _valkeys_on(data_dir) == []

    # Same address, so the same issuer: the old access token still verifies.
    second = Server(tmp_path / "second.log", env, port=first.port)
    servers.append(second)
    second.start()
    assert second.request("GET", "/v1/auth/me", token=pair["access_token"]).status == 200
    rotated = second.refresh(pair["refresh_token"])
    assert rotated.status == 200, rotated.body
    assert rotated.body["session_id"] == pair["session_id"]
    assert second.login("alice")["session_id"] != pair["session_id"]
    assert second.terminate() == 0, second.log()
    assert _valkeys_on(data_dir) == []


def test_killed_server_leaves_no_valkey_and_the_next_one_takes_over(
    servers: list[Server], tmp_path: Path, keys_dir: Path
) -> None:
    """SIGKILL skips every cleanup; the parent-death signal still stops the store.

    Valkey writes its AOF before it replies, and the SIGTERM it gets flushes the file, so
    the session written just before the crash is there for the next process.
    """
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_KEYS_DIR": str(keys_dir)}
    first = Server(tmp_path / "first.log", env)
    servers.append(first)
    first.start()
    assert first.register("alice").status == 201
    pair = first.login("alice")
    first.kill()

    deadline = time.monotonic() + STOP_TIMEOUT
    while _valkeys_on(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _valkeys_on(data_dir) == []

    # Same address, so the same issuer: the old access token still verifies.
    second = Server(tmp_path / "second.log", env, port=first.port)
    servers.append(second)
    second.start()
    assert second.refresh(pair["refresh_token"]).status == 200
    assert second.terminate() == 0, second.log()


def test_a_worker_that_dies_stops_the_server_and_its_store(
    servers: list[Server], tmp_path: Path
) -> None:
    """The parent does not serve on with half its workers: it stops all and exits 1."""
    server, data_dir = _start_two_workers(servers, tmp_path)
    workers = _workers(server.process.pid)
    assert len(workers) == 2

    os.kill(workers[0], signal.SIGKILL)

    assert server.process.wait(STOP_TIMEOUT) == 1
    assert "a worker exited unexpectedly" in server.log()
    assert _valkeys_on(data_dir) == []
    assert not Path(f"/proc/{workers[1]}/cmdline").exists()


def test_serve_warns_at_start_when_the_store_keeps_nothing_on_disk(
    servers: list[Server], tmp_path: Path, keys_dir: Path, redis_url: str
) -> None:
    """The suite's Redis runs without AOF or snapshots: a restart of it would end sessions."""
    server = Server(
        tmp_path / "serve.log", {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_KEYS_DIR": str(keys_dir)}
    )
    servers.append(server)
    server.start()
    assert "persistence is off" in server.log()
    ready = server.request("GET", "/readyz")
    assert ready.status == 200
    assert any("persistence is off" in warning for warning in ready.body["store_warnings"])
