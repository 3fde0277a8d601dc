"""What an operator sees of a real process: its version, its start-up lines, its headers."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from servers import Servers, authsvc_command, child_env

from authsvc.tokens.keys import KeyRing

pytestmark = pytest.mark.process

INFO = {"AUTHSVC_LOG_LEVEL": "INFO"}


def test_version_prints_the_installed_version() -> None:
    result = subprocess.run(
        [*authsvc_command(), "--version"],
        capture_output=True,
        text=True,
        check=False,
        env=child_env(os.environ),
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"authsvc {metadata.version('authsvc')}"


def start_and_stop(servers: Servers, tmp_path: Path, env: dict[str, str], *args: str) -> str:
    server = servers.start(tmp_path / "serve.log", {**INFO, **env}, *args)
    reply = server.request("GET", "/healthz")
    assert reply.headers["Server"] == "authsvc"  # no Python or aiohttp version for scanners
    assert server.terminate() == 0, server.log()
    return server.log()


def test_start_up_lines_name_the_version_store_workers_and_key_ids(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str
) -> None:
    log = start_and_stop(
        servers, tmp_path, {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_KEYS_DIR": str(keys_dir)}
    )
    version = metadata.version("authsvc")
    assert f"authsvc {version} starting on 127.0.0.1:" in log
    assert ": 1 worker, store: single" in log
    assert "listening on http://127.0.0.1:" in log
    kid = KeyRing.from_directory(keys_dir).current.kid
    assert f"signing with kid {kid}; JWKS kids: {kid} (keys from {keys_dir})" in log


def test_start_up_lines_name_the_embedded_store_and_the_workers(
    servers: Servers, tmp_path: Path
) -> None:
    log = start_and_stop(
        servers, tmp_path, {"AUTHSVC_DATA_DIR": str(tmp_path / "data")}, "--workers", "2"
    )
    assert ": 2 workers, store: embedded" in log
    assert log.count("listening on http://127.0.0.1:") == 2  # one line per worker
    # The embedded default keeps its key beside its data, so a restart logs nobody out.
    assert f"(keys from {tmp_path / 'data'})" in log


@pytest.mark.parametrize("topology", ["memory", "sentinel", "cluster"])
def test_start_up_lines_name_every_store_topology(
    servers: Servers,
    tmp_path: Path,
    topology: str,
    request: pytest.FixtureRequest,
) -> None:
    url = "memory://" if topology == "memory" else request.getfixturevalue(f"redis_{topology}").url
    log = start_and_stop(servers, tmp_path, {"AUTHSVC_REDIS_URL": url})
    assert f": 1 worker, store: {topology}" in log
