"""openid-client (Node, by panva), unchanged, against a real ``authsvc serve``.

``tests/clients/openid-client/check.mjs`` discovers the RFC 8414 metadata, introspects as
a gateway with client_secret_basic (openid-client form-urlencodes the secret, so
``gw-secret`` goes as ``gw%2Dsecret``), refreshes as a public first-party app and revokes;
it prints what each step saw as JSON. Its dependencies are pinned in package-lock.json and
installed with ``npm ci`` when missing. Without node and npm the test skips: ./scripts/test
installs them as root (scripts/system-packages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from servers import TEST_PASSWORD, Servers

CHECK_DIR = Path(__file__).parent / "clients" / "openid-client"
# Every character of these that openid-client escapes and `curl -u` does not: `-_.~`.
GATEWAY = ("gw-client_1.x~y", "gw-secret_1.2~3")
CLIENTS = f"other:pw,{GATEWAY[0]}:{GATEWAY[1]}"
NPM_TIMEOUT = 300
NODE_TIMEOUT = 60


def _tools() -> tuple[str, str]:
    """node and npm from PATH, or skip and say what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    missing = [name for name, path in (("node", node), ("npm", npm)) if path is None]
    if node is None or npm is None:
        pytest.skip(
            f"{' and '.join(missing)} not on PATH: the openid-client check needs Node.js 18+ "
            "and npm (Debian: apt-get install nodejs npm; ./scripts/test does it as root)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < 18:
        pytest.skip(f"node {version.stdout.strip()} is too old for openid-client: 18+ needed")
    return node, npm


def _locked_version() -> str:
    lock = json.loads((CHECK_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/openid-client"]["version"])


def _installed_version() -> str | None:
    installed = CHECK_DIR / "node_modules" / "openid-client" / "package.json"
    if not installed.exists():
        return None
    return str(json.loads(installed.read_text())["version"])


@pytest.fixture(scope="module")
def node() -> str:
    """node, with check.mjs's locked dependencies installed (``npm ci`` when missing)."""
    node, npm = _tools()
    if _installed_version() != _locked_version():
        installed = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=CHECK_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
    assert _installed_version() == _locked_version()
    return node


def test_openid_client_discovers_introspects_refreshes_and_revokes(
    node: str,
    servers: Servers,
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    server = servers.start(
        tmp_path / "authsvc.log",
        {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_INTROSPECTION_CLIENTS": CLIENTS},
    )
    user = server.register("alice")
    assert user.status == 201, user.body

    run = subprocess.run(
        [node, "check.mjs"],
        cwd=CHECK_DIR,
        env={
            **os.environ,
            "AUTHSVC_URL": server.base_url,
            "GATEWAY_ID": GATEWAY[0],
            "GATEWAY_SECRET": GATEWAY[1],
            "APP_CLIENT_ID": "mobile-app",
            "APP_USERNAME": "alice",
            "APP_PASSWORD": TEST_PASSWORD,
        },
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{server.log()}"
    result: dict[str, Any] = json.loads(run.stdout)

    # Discovery with algorithm 'oauth2': the metadata as openid-client accepted it.
    metadata = result["metadata"]
    assert metadata["issuer"] == server.base_url
    assert metadata["response_types_supported"] == ["none"]
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]

    # client_secret_basic, with the secret form-urlencoded (gw%2Dsecret%5F1%2E2%7E3).
    session_id = result["login"]["session_id"]
    active = {
        "active": True,
        "sub": user.body["user_id"],
        "sid": session_id,
        "client_id": "authsvc",
        "token_type": "Bearer",
    }
    assert result["introspection"] == active

    wrong = result["wrong_secret"]
    assert wrong["status"] == 401
    assert wrong["body"]["error"] == "invalid_client"
    assert wrong["www_authenticate"] == 'Basic realm="authsvc"'
    assert wrong["challenges"] == [{"scheme": "basic", "parameters": {"realm": "authsvc"}}]

    refresh = result["refresh"]
    assert refresh["token_type"] == "bearer"  # openid-client lower-cases it
    assert refresh["new_refresh_token"] is True
    assert refresh["session_id"] == session_id
    assert refresh["expires_in"] > 0
    assert refresh["introspection"] == active

    # RFC 7009 revocation of the refresh token ends the session, access token included.
    revocation = result["revocation"]
    assert revocation["introspection"] == {"active": False}
    assert revocation["refresh_again"]["status"] == 400
    assert revocation["refresh_again"]["error"] == "invalid_grant"
