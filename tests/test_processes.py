"""Real ``python -m authsvc serve`` processes: instances sharing Redis, workers, restarts."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest
import redis.asyncio
from servers import (
    STOP_TIMEOUT,
    Reply,
    Server,
    Servers,
    listening_sockets,
    valkeys_on,
    workers_of,
)

pytestmark = pytest.mark.process


async def test_two_instances_share_sessions_through_redis(
    servers: Servers,
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
    a = servers.start(tmp_path / "a.log", env)
    b = servers.start(tmp_path / "b.log", env)

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


def _start_twoworkers_of(servers: Servers, tmp_path: Path, **env: str) -> tuple[Server, Path]:
    """Start ``serve --workers 2`` on the embedded store in ``tmp_path/data``."""
    data_dir = tmp_path / "data"
    server = servers.start(
        tmp_path / "workers.log", {"AUTHSVC_DATA_DIR": str(data_dir), **env}, "--workers", "2"
    )
    assert server.process is not None
    return server, data_dir


def test_workers_on_the_embedded_store_serve_and_stop_cleanly(
    servers: Servers, tmp_path: Path, keys_dir: Path
) -> None:
    server, data_dir = _start_twoworkers_of(servers, tmp_path, AUTHSVC_KEYS_DIR=str(keys_dir))
    assert len(valkeys_on(data_dir)) == 1

    assert server.request("GET", "/readyz").status == 200
    assert server.register("alice").status == 201
    pair = server.login("alice")
    # Whichever worker answers, they share the store and the key ring.
    for _ in range(10):
        me = server.request("GET", "/v1/auth/me", token=pair["access_token"])
        assert me.status == 200, me.body
    rotated = server.refresh(pair["refresh_token"])
    assert rotated.status == 200, rotated.body
    workers = workers_of(server.process.pid)
    assert len(workers) == 2

    assert server.terminate() == 0, server.log()
    assert valkeys_on(data_dir) == []
    assert all(not Path(f"/proc/{pid}/cmdline").exists() for pid in workers)
    assert "Traceback" not in server.log()


def test_ctrl_c_stops_workers_and_their_store_cleanly(servers: Servers, tmp_path: Path) -> None:
    """Ctrl-C signals the whole process group: workers stopping then is no failure."""
    server, data_dir = _start_twoworkers_of(servers, tmp_path)
    assert server.request("GET", "/readyz").status == 200

    os.killpg(server.process.pid, signal.SIGINT)

    assert server.process.wait(STOP_TIMEOUT) == 0, server.log()
    assert "a worker exited unexpectedly" not in server.log()
    assert valkeys_on(data_dir) == []


def test_embedded_store_keeps_a_session_across_a_process_restart(
    servers: Servers, tmp_path: Path, keys_dir: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_KEYS_DIR": str(keys_dir)}
    first = servers.start(tmp_path / "first.log", env)
    assert first.register("alice").status == 201
    pair = first.login("alice")
    assert first.terminate() == 0, first.log()
    assert valkeys_on(data_dir) == []

    # Same address, so the same issuer: the old access token still verifies.
    second = servers.start(tmp_path / "second.log", env, port=first.port)
    assert second.request("GET", "/v1/auth/me", token=pair["access_token"]).status == 200
    rotated = second.refresh(pair["refresh_token"])
    assert rotated.status == 200, rotated.body
    assert rotated.body["session_id"] == pair["session_id"]
    assert second.login("alice")["session_id"] != pair["session_id"]
    assert second.terminate() == 0, second.log()
    assert valkeys_on(data_dir) == []


def test_the_embedded_default_keeps_its_signing_key_across_a_restart(
    servers: Servers, tmp_path: Path
) -> None:
    """``./scripts/serve`` restarted with no AUTHSVC_KEYS_DIR: nobody is logged out."""
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir)}
    first = servers.start(tmp_path / "first.log", env)
    assert first.register("alice").status == 201
    pair = first.login("alice")
    assert first.terminate() == 0, first.log()
    keys = list(data_dir.glob("*.pem"))
    assert len(keys) == 1
    assert stat.S_IMODE(keys[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    second = servers.start(tmp_path / "second.log", env, port=first.port)
    me = second.request("GET", "/v1/auth/me", token=pair["access_token"])
    assert me.status == 200, me.body
    assert second.refresh(pair["refresh_token"]).status == 200
    assert second.terminate() == 0, second.log()
    assert list(data_dir.glob("*.pem")) == keys  # made once, not once per start
    assert "generated at start" not in first.log() + second.log()


def test_killed_server_leaves_no_valkey_and_the_next_one_takes_over(
    servers: Servers, tmp_path: Path, keys_dir: Path
) -> None:
    """SIGKILL skips every cleanup; the parent-death signal still stops the store.

    Valkey writes its AOF before it replies, and the SIGTERM it gets flushes the file, so
    the session written just before the crash is there for the next process.
    """
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_KEYS_DIR": str(keys_dir)}
    first = servers.start(tmp_path / "first.log", env)
    assert first.register("alice").status == 201
    pair = first.login("alice")
    first.kill()

    deadline = time.monotonic() + STOP_TIMEOUT
    while valkeys_on(data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert valkeys_on(data_dir) == []

    # Same address, so the same issuer: the old access token still verifies.
    second = servers.start(tmp_path / "second.log", env, port=first.port)
    assert second.refresh(pair["refresh_token"]).status == 200
    assert second.terminate() == 0, second.log()


def test_a_worker_killed_by_a_signal_is_started_again_in_its_place(
    servers: Servers, tmp_path: Path
) -> None:
    """kill -9 of a worker, as the OOM killer does: the parent starts another, the other
    worker serves meanwhile, and a session of before is still there."""
    server, data_dir = _start_twoworkers_of(servers, tmp_path)
    assert server.register("alice").status == 201
    pair = server.login("alice")
    workers = workers_of(server.process.pid)
    assert len(workers) == 2

    os.kill(workers[0], signal.SIGKILL)

    deadline = time.monotonic() + STOP_TIMEOUT
    while not (
        len(now := workers_of(server.process.pid)) == 2
        and workers[0] not in now
        and listening_sockets(server.port) == 2
    ):
        assert server.process.poll() is None, server.log()
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert workers[1] in now
    (replacement,) = set(now) - {workers[1]}
    # Each request a new connection, spread over both workers by SO_REUSEPORT.
    for _ in range(10):
        assert server.request("GET", "/v1/auth/me", token=pair["access_token"]).status == 200
    assert server.refresh(pair["refresh_token"]).status == 200
    assert (
        f"worker {workers[0]} was killed by SIGKILL; started worker {replacement} in its place"
        in server.log()
    )
    assert server.terminate() == 0, server.log()
    assert valkeys_on(data_dir) == []
    assert "Traceback" not in server.log()


def _wait_for_status(server: Server, path: str, status: int, timeout: float = 20.0) -> Reply:
    deadline = time.monotonic() + timeout
    while True:
        reply = server.request("GET", path)
        if reply.status == status:
            return reply
        assert time.monotonic() < deadline, f"{path} still answers {reply.status}: {server.log()}"
        time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_embedded_store_comes_back_and_healthz_fails_until_it_does(
    servers: Servers, tmp_path: Path, keys_dir: Path, workers: int
) -> None:
    """kill -9 of the Valkey child, as the OOM killer does: the process that owns it (the
    parent, with workers) starts it again on the same data, and until it is back every
    /healthz answers 503. A corrupt AOF manifest keeps the first tries failing, so the
    outage lasts until the test mends it, as a disk problem would."""
    data_dir = tmp_path / "data"
    env = {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_KEYS_DIR": str(keys_dir)}
    server = servers.start(tmp_path / "serve.log", env, "--workers", str(workers))
    assert server.register("alice").status == 201
    pair = server.login("alice")
    (old,) = valkeys_on(data_dir)
    manifest = data_dir / "appendonlydir" / "appendonly.aof.manifest"
    kept = manifest.read_bytes()
    manifest.write_text("garbage\n")

    os.kill(old, signal.SIGKILL)

    down = _wait_for_status(server, "/healthz", 503)
    assert down.body["error"] == "store_unavailable", down.body
    assert down.headers["Retry-After"] == "1"
    # Each request a new connection, spread over the workers by SO_REUSEPORT: all know.
    assert [server.request("GET", "/healthz").status for _ in range(20)] == [503] * 20
    refused = server.refresh(pair["refresh_token"])
    assert refused.status == 503, refused.body
    assert refused.body["error"] == "store_unavailable"
    assert server.request("GET", "/readyz").status == 503
    deadline = time.monotonic() + 20
    while "embedded store did not start again" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert server.request("GET", "/healthz").status == 503

    manifest.write_bytes(kept)

    _wait_for_status(server, "/healthz", 200)
    assert [server.request("GET", "/healthz").status for _ in range(10)] == [200] * 10
    # The session written before the crash is back, and its client was never told.
    rotated = server.refresh(pair["refresh_token"])
    assert rotated.status == 200, rotated.body
    assert rotated.body["session_id"] == pair["session_id"]
    (new,) = valkeys_on(data_dir)
    assert new != old
    log = server.log()
    assert f"ERROR authsvc.store.embedded[{server.pid}] -: embedded store (pid {old}) died: " in log
    assert "killed by SIGKILL" in log
    assert f"embedded store started again (pid {new})" in log
    assert server.terminate() == 0, server.log()
    assert valkeys_on(data_dir) == []
    assert "Traceback" not in server.log()


def test_healthz_stays_200_while_the_embedded_store_is_only_slow(
    servers: Servers, tmp_path: Path
) -> None:
    """A Valkey that does not answer (stopped, swapping) is not known dead: /readyz says
    so, liveness does not, and nothing restarts it."""
    data_dir = tmp_path / "data"
    server = servers.start(
        tmp_path / "serve.log", {"AUTHSVC_DATA_DIR": str(data_dir), "AUTHSVC_STORE_TIMEOUT": "0.5"}
    )
    (pid,) = valkeys_on(data_dir)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert server.request("GET", "/readyz").status == 503
        assert server.request("GET", "/healthz").status == 200
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_for_status(server, "/readyz", 200)
    assert valkeys_on(data_dir) == [pid]
    assert "died" not in server.log()


def test_serve_warns_at_start_when_the_store_keeps_nothing_on_disk(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str
) -> None:
    """The suite's Redis runs without AOF or snapshots: a restart of it would end sessions."""
    server = servers.start(
        tmp_path / "serve.log", {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_KEYS_DIR": str(keys_dir)}
    )
    assert "persistence is off" in server.log()
    ready = server.request("GET", "/readyz")
    assert ready.status == 200
    assert any("persistence is off" in warning for warning in ready.body["store_warnings"])
