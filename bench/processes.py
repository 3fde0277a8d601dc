"""The benchmark's processes: a private Redis, ``authsvc serve`` and the ceiling.

The benchmark's own runner, not the tests' (``tests/servers.py``): the benchmark is a
feature of the repository and imports no test module. Its processes differ from the
tests' anyway: each runs as its command says (authsvc with the product's defaults, no
cheap argon2), in a process group of its own, started from the main thread with
``die_with_parent`` so that the kernel stops it if the benchmark dies, once, until the
run ends. A server is ready when it answers ``/healthz`` and as many sockets as it has
processes listen on its port (SO_REUSEPORT), so that wrk's connections reach them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from harness import BenchError, die_with_parent

LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """redis-server from PATH, else the Valkey that authsvc bundles."""
    from authsvc.store.embedded import valkey_binary

    return shutil.which("redis-server") or str(valkey_binary())


def listeners(port: int) -> int:
    """The sockets listening on ``port`` on any address, IPv4 or IPv6, from /proc."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                _, local, _, state, *_ = row.split()
                count += state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port
    return count


class Process:
    """A child of the benchmark on a loopback port, its output in ``log_path``; ``ready``
    says when it serves."""

    def __init__(
        self, command: Sequence[str], port: int, log_path: Path, env: Mapping[str, str]
    ) -> None:
        self.command = list(command)
        self.port = port
        self.log_path = log_path
        self.env = dict(env)
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """Also its process group's id."""
        assert self.popen is not None
        return self.popen.pid

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        """Start it and wait until it is ready.

        Raises:
            BenchError: it exited first, or was not ready within READY_TIMEOUT.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        name = Path(self.command[0]).name
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready():
            if self.popen.poll() is not None:
                raise BenchError(f"{name} exited with {self.popen.returncode}: see {self.log_path}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} was not ready in {READY_TIMEOUT:.0f} s: {self.log_path}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM its process group (a server's workers too), then SIGKILL what is left."""
        if self.popen is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        self.popen = None


class RedisServer(Process):
    """redis-server on a free port, working in ``directory``: without persistence, or with
    an append-only file fsynced every second (``appendonly``, as docker-compose.yml runs
    it: what the soak restarts)."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        port = free_port()
        command = [redis_server_binary(), "--port", str(port), "--bind", LOOPBACK]
        command += ["--save", "", "--dir", str(directory)]
        if appendonly:
            command += ["--appendonly", "yes", "--appendfsync", "everysec"]
            command += ["--maxmemory-policy", "noeviction"]
        else:
            command += ["--appendonly", "no"]
        directory.mkdir(parents=True, exist_ok=True)
        super().__init__(command, port, directory / "redis.log", os.environ)

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def ready(self) -> bool:
        with redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1) as client:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any  # the JSON body, or None


class HttpServer(Process):
    """authsvc serve or a process of the ceiling: ready once ``/healthz`` answers and
    ``listening`` sockets listen on its port (its workers; or the ceiling's processes
    started on that port so far, this one included)."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        log_path: Path,
        env: Mapping[str, str],
        *,
        listening: int = 1,
    ) -> None:
        super().__init__(command, port, log_path, env)
        self.listening = listening

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        return self._healthy() and listeners(self.port) == self.listening

    def post(self, path: str, body: object) -> Reply:
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return Reply(status, json.loads(raw) if raw else None)

    def get_headers(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str]]:
        """GET ``path`` with ``headers``: the status and the response's headers."""
        request = urllib.request.Request(self.base_url + path, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers.items())
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers.items())

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False
