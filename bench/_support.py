"""Shared by bench/loadtest.py and bench/micro.py: a private redis-server, child-process
hygiene and a hard deadline.

Nothing here ever talks to a Redis it did not start: every server is a fresh
``redis-server`` on a free loopback port, with no persistence, in a temporary directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class DeadlineExceeded(RuntimeError):
    """The whole benchmark ran past its hard time limit."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:  # pragma: no cover - runs between fork and exec
    """preexec_fn: the kernel sends SIGTERM to the child if this process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    from authsvc.store.embedded import valkey_binary  # bundled with authsvc

    return str(valkey_binary())


def clean_env() -> dict[str, str]:
    """The environment without any AUTHSVC_* setting of the caller's."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AUTHSVC_")}


class RedisServer:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
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
                    "--logfile",
                    str(self.directory / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError("could not start a private redis-server")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def stop_process(
    process: subprocess.Popen[bytes], *, group: bool = False, grace: float = 10.0
) -> None:
    """SIGTERM a child we started (its process group when ``group``), then SIGKILL."""
    if process.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(process.pid, sig)  # the group we created with start_new_session
            else:
                process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(5)
    if group:
        # Workers of a multi-worker server are in the same group; make sure none is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def install_hard_deadline(seconds: float) -> None:
    """Raise DeadlineExceeded in the main thread after ``seconds``; SIGTERM/SIGINT exit."""

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"benchmark exceeded its hard limit of {seconds:.0f} s")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max(1, int(seconds)))


def cancel_hard_deadline() -> None:
    signal.alarm(0)


def machine_summary() -> dict[str, object]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
