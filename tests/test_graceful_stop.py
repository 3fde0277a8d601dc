"""SIGTERM and SIGINT on real processes: no new connections, requests in flight finish,
exit 0.

The test holds requests in flight without timing: it pauses the writes of the suite's Redis
(CLIENT PAUSE WRITE), so every request that reaches the store waits there, and the server
counts them (authsvc_http_requests_in_flight: Redis's blocked_clients would not, as a
worker sends the store calls of one loop turn as one pipeline, on one connection). Once all
40 clients have a request waiting, the signal goes; once the port refuses connections, the
pause ends and the requests go on. What the server did is then read back from Redis: every
login it processed is a session, and every rotation it processed moved a chain on, so a
request that was processed but whose response was cut would show there, whatever the client
saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from servers import STOP_TIMEOUT, Server, Servers
from support import TEST_PASSWORD

from authsvc.store import keyspace

pytestmark = pytest.mark.process

LOAD_ENV = {
    # Only for testing! Real argon2id, but cheap: a login takes a few milliseconds, one at
    # a time per worker, so that the logins let go at once queue up behind each other.
    "AUTHSVC_ARGON2_MEMORY_COST": "8192",
    "AUTHSVC_HASH_CONCURRENCY": "1",
    "AUTHSVC_LOGIN_RATE_LIMIT": "1000000/60",
    "AUTHSVC_MAX_SESSIONS_PER_USER": "100000",
    # A store call waits out the pause instead of becoming a 503.
    "AUTHSVC_STORE_TIMEOUT": "60",
}
LOGIN_CLIENTS, REFRESH_CLIENTS, ME_CLIENTS = 16, 16, 8  # 40 clients
PAUSE_MS = 60_000  # a bound only: every test ends the pause itself


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # accepted into the backlog of a socket closing just then: ask again
    writer.close()
    return False


async def wait_until_refused(server: Server) -> None:
    """Poll until nothing listens on the port; the requests held in flight keep it alive."""
    deadline = time.monotonic() + STOP_TIMEOUT
    while not await refused(server.port):
        assert time.monotonic() < deadline, "the server still takes connections"
        await asyncio.sleep(0.02)
    assert server.process is not None
    assert server.process.poll() is None, "the server exited with requests in flight"


async def wait_until_waiting_in_redis(client: redis.asyncio.Redis, count: int) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while (await client.info("clients"))["blocked_clients"] < count:
        assert time.monotonic() < deadline, f"fewer than {count} requests reached the store"
        await asyncio.sleep(0.01)


async def wait_until_in_flight(server: Server, count: int) -> None:
    """Poll /metrics until ``count`` requests are in flight, besides the scrape itself."""
    deadline = time.monotonic() + STOP_TIMEOUT
    async with aiohttp.ClientSession(server.base_url) as session:
        while True:
            async with session.get("/metrics") as response:
                text = await response.text()
            (family,) = (
                f for f in text_string_to_metric_families(text)
                if f.name == "authsvc_http_requests_in_flight"
            )  # fmt: skip
            if family.samples[0].value - 1 >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} requests in flight"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def writes_paused(client: redis.asyncio.Redis) -> AsyncIterator[None]:
    await client.client_pause(PAUSE_MS, all=False)  # WRITE: reads, INFO included, go on
    try:
        yield
    finally:
        await client.client_unpause()


def exit_status(server: Server) -> int:
    assert server.process is not None
    return server.process.wait(STOP_TIMEOUT)


def start_server(
    servers: Servers, tmp_path: Path, redis_url: str, keys_dir: Path, workers: int, **env: str
) -> Server:
    args = ("--workers", str(workers)) if workers > 1 else ()
    server = servers.start(
        tmp_path / "serve.log",
        {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_KEYS_DIR": str(keys_dir), **LOAD_ENV, **env},
        *args,
    )
    return server


async def test_the_shutdown_timeout_bounds_the_wait_for_requests_in_flight(
    servers: Servers,
    tmp_path: Path,
    keys_dir: Path,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    """A request that does not finish does not hold the stop past AUTHSVC_SHUTDOWN_TIMEOUT."""
    server = start_server(servers, tmp_path, redis_url, keys_dir, 1, AUTHSVC_SHUTDOWN_TIMEOUT="0.5")
    async with writes_paused(redis_client), aiohttp.ClientSession(server.base_url) as session:
        register = asyncio.create_task(
            session.post("/v1/users", json={"username": "held", "password": TEST_PASSWORD})
        )
        await wait_until_waiting_in_redis(redis_client, 1)

        os.kill(server.pid, signal.SIGTERM)

        assert await asyncio.to_thread(exit_status, server) == 0, server.log()
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await register  # cut at the bound, with no response


@dataclass
class Client:
    """One of the load clients: what it sent, what came back, and how it ended."""

    kind: str
    token: str = ""
    answered: list[int] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    ended_by: str = ""


async def run_client(base_url: str, client: Client, username: str) -> None:
    """Send requests one after another on one keep-alive connection until one fails."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=1)) as session:
        while True:
            if client.kind == "login":
                request = session.post(
                    "/v1/auth/login", json={"username": username, "password": TEST_PASSWORD}
                )
            elif client.kind == "refresh":
                request = session.post("/v1/auth/refresh", json={"refresh_token": client.token})
            else:
                request = session.get(
                    "/v1/auth/me", headers={"Authorization": f"Bearer {client.token}"}
                )
            try:
                async with request as response:
                    try:
                        body = await response.read()
                    except aiohttp.ClientError as exc:  # a response began, then broke
                        client.ended_by = f"cut: {type(exc).__name__}"
                        return
            except aiohttp.ClientConnectionError as exc:
                # No response began: the server refused, closed or reset the connection.
                client.ended_by = f"no response: {type(exc).__name__}"
                return
            client.answered.append(response.status)
            client.answered_at.append(loop.time())
            if response.status != 200:
                client.ended_by = f"status {response.status}: {body!r}"
                return
            if client.kind == "refresh":
                client.token = json.loads(body)["refresh_token"]


def chain_position(refresh_token: str) -> int:
    return int(refresh_token.split(".")[2])


@pytest.mark.parametrize(
    ("sig", "workers"),
    [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
    ids=["sigterm", "sigint", "sigterm-2-workers"],
)
async def test_a_stop_under_load_cuts_no_request_in_flight(
    servers: Servers,
    tmp_path: Path,
    keys_dir: Path,
    redis_url: str,
    redis_client: redis.asyncio.Redis,
    sig: signal.Signals,
    workers: int,
) -> None:
    server = start_server(servers, tmp_path, redis_url, keys_dir, workers)
    login_user = server.register("dave").body["user_id"]
    assert server.register("carol").status == 201
    carol = [server.login("carol") for _ in range(REFRESH_CLIENTS + ME_CLIENTS)]
    clients = (
        [Client("login") for _ in range(LOGIN_CLIENTS)]
        + [Client("refresh", pair["refresh_token"]) for pair in carol[:REFRESH_CLIENTS]]
        + [Client("me", pair["access_token"]) for pair in carol[REFRESH_CLIENTS:]]
    )
    tasks = [asyncio.create_task(run_client(server.base_url, client, "dave")) for client in clients]
    while not all(len(client.answered) >= 2 for client in clients):
        assert not any(task.done() for task in tasks), [c.ended_by for c in clients]
        await asyncio.sleep(0.01)

    async with writes_paused(redis_client):
        # Every client's next request reaches the store and waits there: 40 in flight.
        await wait_until_in_flight(server, len(clients))
        signalled_at = asyncio.get_running_loop().time()  # the signal's moment, not later
        os.kill(server.pid, sig)
        await wait_until_refused(server)
    await asyncio.wait_for(asyncio.gather(*tasks), STOP_TIMEOUT)
    assert await asyncio.to_thread(exit_status, server) == 0, server.log()

    for client in clients:
        # Each ran until the server stopped taking its requests; no response was cut.
        assert client.ended_by.startswith("no response"), (client.kind, client.ended_by)
        assert set(client.answered) == {200}
        # The request it had in flight at the signal was answered after it.
        assert client.answered_at[-1] > signalled_at
    # Every login the server processed was answered: one session per 200, no more.
    logins = sum(len(c.answered) for c in clients if c.kind == "login")
    assert await redis_client.zcard(keyspace.sessions(login_user)) == logins
    # Every rotation the server processed was answered: each chain is where its client
    # thinks it is.
    for client in (c for c in clients if c.kind == "refresh"):
        user_id, session_id = client.token.split(".")[:2]
        position = await redis_client.hget(keyspace.session(user_id, session_id), "n")
        assert position is not None and int(position) == chain_position(client.token)
    assert "Traceback" not in server.log()


@dataclass
class SlowUpload:
    """A request whose headers are sent at once and whose body trickles in later."""

    path: str
    body: bytes
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def begin(self, port: int, keep_alive: bool = True) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        # The headers and a first byte of the body: the server has the request, not its body.
        self.writer.write(head.encode() + self.body[:1])
        await self.writer.drain()

    async def finish(self) -> tuple[int, dict[str, str], bytes]:
        """Send the rest of the body; read the response (status, headers, body)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.body[1:])
        await self.writer.drain()
        status_line = await self.reader.readline()
        assert status_line, "the connection closed with no response"
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def access_lines(server: Server, path: str) -> list[str]:
    return [line for line in server.log().splitlines() if f'"POST {path}' in line]


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
async def test_uploads_whose_headers_came_before_the_stop_are_answered(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str, workers: int
) -> None:
    """Three clients sent their headers, then SIGTERM, then their bodies 0.5 s later: all
    three get their 201, with Connection: close; new connections are refused at once."""
    server = start_server(
        servers, tmp_path, redis_url, keys_dir, workers,
        AUTHSVC_SHUTDOWN_TIMEOUT="10", AUTHSVC_LOG_LEVEL="INFO",
    )  # fmt: skip
    uploads = [
        SlowUpload(
            "/v1/users",
            json.dumps({"username": f"upload{workers}-{i}", "password": TEST_PASSWORD}).encode(),
        )
        for i in range(3)
    ]
    try:
        for upload in uploads:
            await upload.begin(server.port)
        # Every upload is in a worker's hands (its connection accepted, headers parsed):
        # the access log has nothing yet, so look at the established connections instead.
        await asyncio.sleep(0.3)
        os.kill(server.pid, signal.SIGTERM)
        await wait_until_refused(server)
        await asyncio.sleep(0.5)
        answers = await asyncio.wait_for(
            asyncio.gather(*(upload.finish() for upload in uploads)), STOP_TIMEOUT
        )
    finally:
        for upload in uploads:
            upload.close()
    for status, headers, body in answers:
        assert status == 201, (status, body, server.log())
        assert json.loads(body)["username"].startswith("upload")
        # The keep-alive connection ends with this response.
        assert headers.get("connection", "").lower() == "close", headers
    assert await asyncio.to_thread(exit_status, server) == 0, server.log()
    assert " 500 " not in "\n".join(access_lines(server, "/v1/users")), server.log()


async def test_a_client_that_drops_mid_upload_is_logged_as_dropped(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str
) -> None:
    """Headers, part of the body, then the client goes: a 499 in the access log and the
    metrics, never a 500; the server goes on answering."""
    server = start_server(servers, tmp_path, redis_url, keys_dir, 1, AUTHSVC_LOG_LEVEL="INFO")
    upload = SlowUpload(
        "/v1/auth/login",
        json.dumps({"username": "nobody-here", "password": TEST_PASSWORD}).encode(),
    )
    await upload.begin(server.port)
    await asyncio.sleep(0.3)
    assert upload.writer is not None
    upload.writer.transport.abort()  # an RST: the client is gone
    deadline = time.monotonic() + STOP_TIMEOUT
    while not access_lines(server, "/v1/auth/login"):
        assert time.monotonic() < deadline, server.log()
        await asyncio.sleep(0.05)
    (line,) = access_lines(server, "/v1/auth/login")
    assert '"POST /v1/auth/login" 499 ' in line, server.log()
    assert "Traceback" not in server.log()
    assert server.request("GET", "/healthz").status == 200
    metrics = server.request("GET", "/metrics").body
    samples = [
        sample
        for family in text_string_to_metric_families(metrics)
        if family.name == "authsvc_http_requests"
        for sample in family.samples
        if sample.labels.get("route", "").endswith("/v1/auth/login")
    ]
    assert samples, metrics
    assert {sample.labels["status"] for sample in samples} == {"499"}, samples
