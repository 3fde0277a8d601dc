"""config/nginx/forward-auth.conf, run for real: nginx asks authsvc about every request.

nginx (Debian's package) runs in the foreground on a free loopback port, in front of a
tiny upstream that echoes the identity headers it receives, with authsvc in-process on
the suite's Redis. The recipe is used as it is in config/, with only its addresses
changed. Without nginx on the machine, the tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import TEST_PASSWORD, bearer, free_port, login, register

from authsvc.client import DpopKey
from authsvc.http.appkeys import ACCOUNTS, CLOCK

pytestmark = pytest.mark.process

RECIPE = Path(__file__).resolve().parent.parent / "config" / "nginx" / "forward-auth.conf"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

MAIN_CONF = """\
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/forward-auth.conf;
}}
"""


def nginx_binary() -> str:
    """The machine's nginx, or skip: the rest of the suite does not need it."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found is None:
        pytest.skip("nginx not installed: apt-get install nginx")
    version = subprocess.run([found, "-V"], capture_output=True, text=True, check=True)
    if "--with-http_auth_request_module" not in version.stderr:
        pytest.skip(f"{found} lacks the auth_request module: apt-get install nginx")
    return found


def recipe_for(*, listen_port: int, authsvc_port: int, app_port: int) -> str:
    """The recipe with the test's addresses in place of its examples, and nothing else."""
    text = RECIPE.read_text()
    for example, actual in {
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "server authsvc:8080;": f"server 127.0.0.1:{authsvc_port};",
        "server app:3000;": f"server 127.0.0.1:{app_port};",
    }.items():
        assert text.count(example) == 1, f"{RECIPE.name} no longer has {example!r} once"
        text = text.replace(example, actual)
    return text


class Nginx:
    """One foreground nginx (master and worker in a process group of their own)."""

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.directory = directory
        self.port = port
        self.log_path = directory / "nginx.log"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-p",
                    str(self.directory),
                    "-c",
                    str(self.directory / "nginx.conf"),
                    "-g",
                    f"daemon off; pid {self.directory}/nginx.pid; error_log stderr;",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"nginx did not listen: {self.log()}") from None
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL whatever is left of the group."""
        if self.process is None:
            return
        try:
            self.process.terminate()
            self.process.wait(STOP_TIMEOUT)
        finally:
            # Gone already, as they should be, unless the master died before its worker.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Upstream:
    """What the protected app received: the identity headers of each request."""

    received: list[dict[str, list[str]]] = field(default_factory=list)

    async def echo(self, request: web.Request) -> web.Response:
        seen = {
            name: request.headers.getall(name, [])
            for name in ("X-Auth-User-Id", "X-Auth-Session-Id", "X-Auth-Roles")
        }
        self.received.append(seen)
        return web.json_response(seen)


@dataclass
class Gateway:
    url: str
    upstream: Upstream
    authsvc: Any

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url + path, headers=headers) as response,
        ):
            text = await response.text()
            is_json = response.content_type == "application/json"
            return response.status, response.headers, json.loads(text) if is_json else text


@pytest.fixture
async def gateway(client: Any, aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[Gateway]:
    binary = nginx_binary()
    upstream = Upstream()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.echo)
    app_server = await aiohttp_server(app)

    port = free_port()
    (tmp_path / "forward-auth.conf").write_text(
        recipe_for(listen_port=port, authsvc_port=client.server.port, app_port=app_server.port)
    )
    (tmp_path / "nginx.conf").write_text(MAIN_CONF.format(tmp=tmp_path))
    nginx = Nginx(binary, tmp_path, port)
    try:
        await nginx.start()
        yield Gateway(f"http://127.0.0.1:{port}", upstream, client)
    finally:
        nginx.stop()


async def test_live_token_reaches_the_upstream_with_its_user_id(gateway: Gateway) -> None:
    user = await register(gateway.authsvc)
    pair = await login(gateway.authsvc)

    status, _, body = await gateway.get("/orders", bearer(pair))

    assert status == 200
    assert body == {
        "X-Auth-User-Id": [user["user_id"]],
        "X-Auth-Session-Id": [pair["session_id"]],
        # nginx passes no header whose value is empty: none for a user without roles.
        "X-Auth-Roles": [],
    }


async def test_request_without_token_gets_401_and_never_reaches_the_upstream(
    gateway: Gateway,
) -> None:
    status, headers, body = await gateway.get("/orders", {"X-Auth-User-Id": "someone-else"})

    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert body["error"] == "invalid_token"
    assert gateway.upstream.received == []


async def test_token_is_refused_right_after_logout_all(gateway: Gateway) -> None:
    await register(gateway.authsvc)
    pair = await login(gateway.authsvc)
    assert (await gateway.get("/orders", bearer(pair)))[0] == 200

    response = await gateway.authsvc.post("/v1/auth/logout-all", headers=bearer(pair))
    assert response.status == 204
    status, headers, _ = await gateway.get("/orders", bearer(pair))

    assert status == 401
    assert headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert len(gateway.upstream.received) == 1


async def test_identity_headers_sent_by_the_client_are_replaced(gateway: Gateway) -> None:
    user = await register(gateway.authsvc)
    pair = await login(gateway.authsvc)
    forged = {"X-Auth-User-Id": "someone-else", "X-Auth-Session-Id": "another-session"}

    status, _, body = await gateway.get("/orders", {**bearer(pair), **forged})

    assert status == 200
    assert body == {
        "X-Auth-User-Id": [user["user_id"]],
        "X-Auth-Session-Id": [pair["session_id"]],
        # nginx passes no header whose value is empty: none for a user without roles.
        "X-Auth-Roles": [],
    }


async def test_the_roles_reach_the_upstream_and_a_clients_own_are_replaced(
    gateway: Gateway,
) -> None:
    user = await register(gateway.authsvc)
    app = gateway.authsvc.app
    await app[ACCOUNTS].set_roles(
        user["user_id"], ["support", "billing:read"], operator="test", now=app[CLOCK]()
    )
    pair = await login(gateway.authsvc)

    status, _, body = await gateway.get("/orders", {**bearer(pair), "X-Auth-Roles": "admin"})
    assert status == 200
    assert body["X-Auth-Roles"] == ["support,billing:read"]

    await app[ACCOUNTS].set_roles(user["user_id"], [], operator="test", now=app[CLOCK]())
    bare = await login(gateway.authsvc)
    status, _, body = await gateway.get("/orders", {**bearer(bare), "X-Auth-Roles": "admin"})
    assert status == 200
    assert body["X-Auth-Roles"] == []


async def test_verify_subrequest_location_is_not_reachable_from_outside(
    gateway: Gateway,
) -> None:
    await register(gateway.authsvc)
    pair = await login(gateway.authsvc)

    status, _, _ = await gateway.get("/_authsvc/verify", bearer(pair))

    assert status == 404


async def test_a_dpop_bound_call_through_nginx_works_and_a_copied_token_does_not(
    gateway: Gateway,
) -> None:
    """nginx passes the DPoP header and the request it checks (X-Forwarded-*) to verify:
    a proof of the call the client made to nginx passes; the same token with another
    key's proof, or as Bearer, gets 401 and never reaches the upstream."""
    user = await register(gateway.authsvc)
    key, thief = DpopKey(), DpopKey()
    url = gateway.url + "/orders/7?page=2"
    response = await gateway.authsvc.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD},
        headers={"DPoP": key.proof("POST", "http://127.0.0.1:8080/v1/auth/login")},
    )
    pair = await response.json()
    assert pair["token_type"] == "DPoP"
    token = pair["access_token"]

    def signed(by: DpopKey, method: str = "GET") -> dict[str, str]:
        return {"Authorization": f"DPoP {token}", "DPoP": by.proof(method, url, token)}

    status, _, body = await gateway.get("/orders/7?page=2", signed(key))
    assert status == 200
    assert body["X-Auth-User-Id"] == [user["user_id"]]
    for headers in (signed(thief), signed(key, "POST"), {"Authorization": f"Bearer {token}"}):
        status, response_headers, _ = await gateway.get("/orders/7?page=2", headers)
        assert status == 401
        assert response_headers["WWW-Authenticate"].startswith(("DPoP", "Bearer"))
    assert len(gateway.upstream.received) == 1
