"""Real ``python -m authsvc serve`` processes for the tests, and what to ask them.

``Server`` starts one on a free port with cheap argon2 (FAST_ENV), waits for /healthz, and
speaks HTTP to it with the standard library; ``valkeys_on`` and ``workers_of`` look at
the processes it leaves or spawns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
                # Every worker listens (the first may answer long before the last).
                if (
                    self.request("GET", "/healthz").status == 200
                    and listening_sockets(self.port) == self.workers
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
        [sys.executable, "-m", "authsvc", "keys", "generate", "--dir", str(directory)],
        check=True,
        capture_output=True,
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
