"""A real server's log, in both formats: request ids on every line of a request, no secrets.

The log is the process's own stderr, at DEBUG, after the main flows of API.md ran through
it. A secret counts as leaked when any 12 characters of it show, so a prefix or a piece of
a token is caught as well as the whole. The public parts of tokens are left out of that
search on purpose: a refresh token begins with its user and session ids and an access
token with its JWT header, which name no secret and which the logs may name.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from servers import Servers
from support import TEST_PASSWORD

WINDOW = 12
TEXT_LINE = re.compile(
    r"\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+)\[\d+\] (?P<request_id>\S+): (?P<message>.*)"
)
SERVICE_LOGGERS = {"authsvc.domain.sessions", "authsvc.domain.security_events"}
REQUEST_LOGGERS = {"authsvc.access", *SERVICE_LOGGERS}


def secret_windows(secret: str, public_prefix: int = 0) -> set[str]:
    """Every 12-character piece of ``secret`` that holds at least one non-public character."""
    first = max(0, public_prefix - WINDOW + 1)
    return {secret[i : i + WINDOW] for i in range(first, len(secret) - WINDOW + 1)}


def refresh_token_windows(token: str) -> set[str]:
    user_id, session_id, position, _ = token.split(".", 3)
    return secret_windows(token, len(f"{user_id}.{session_id}.{position}."))


def access_token_windows(token: str) -> set[str]:
    return secret_windows(token, len(token.split(".")[0]) + 1)


def parse_lines(log: str, log_format: str) -> list[dict[str, Any]]:
    entries = []
    for line in log.splitlines():
        if log_format == "json":
            entry = json.loads(line)  # every line is one JSON object
            assert isinstance(entry, dict), line
            assert {"ts", "level", "logger", "message"} <= set(entry), line
        else:
            match = TEXT_LINE.fullmatch(line)
            assert match, line
            entry = match.groupdict()
            if entry["request_id"] == "-":
                del entry["request_id"]
        entries.append(entry)
    return entries


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_carry_request_ids_and_never_a_secret(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str, log_format: str
) -> None:
    server = servers.start(
        tmp_path / "serve.log",
        {
            "AUTHSVC_REDIS_URL": redis_url,
            "AUTHSVC_KEYS_DIR": str(keys_dir),
            "AUTHSVC_LOG_LEVEL": "DEBUG",
            "AUTHSVC_LOG_FORMAT": log_format,
        },
    )
    sent: list[str] = []
    counter = itertools.count()

    def call(method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        request_id = f"flow-{log_format}-{next(counter)}"
        sent.append(request_id)
        reply = server.request(
            method, path, body, token=token, headers={"X-Request-Id": request_id}
        )
        assert reply.headers["X-Request-Id"] == request_id
        return reply

    username = f"logged-{log_format}"
    credentials = {"username": username, "password": TEST_PASSWORD}
    wrong_password = "not the password, also secret"
    assert call("POST", "/v1/users", credentials).status == 201
    assert call("POST", "/v1/auth/login", {**credentials, "password": wrong_password}).status == 401
    first = call("POST", "/v1/auth/login", {**credentials, "device": "phone"}).body
    rotated = call("POST", "/v1/auth/refresh", {"refresh_token": first["refresh_token"]}).body
    retried = call("POST", "/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert retried.body["refresh_token"] == rotated["refresh_token"]  # the grace
    token = rotated["access_token"]
    assert call("GET", "/v1/auth/me", token=token).status == 200
    assert call("GET", "/v1/auth/verify", token=token).status == 200
    assert call("GET", "/v1/auth/sessions", token=token).status == 200
    # A client that puts a token in the query string: the access log drops the query.
    assert call("GET", f"/v1/auth/me?access_token={token}").status == 401
    assert call("POST", "/v1/auth/logout", token=token).status == 204
    second = call("POST", "/v1/auth/login", credentials).body
    assert call("POST", "/v1/auth/logout-all", token=second["access_token"]).status == 204
    assert (
        call("POST", "/v1/auth/refresh", {"refresh_token": second["refresh_token"]}).status == 401
    )
    assert server.terminate() == 0

    log = server.log()
    entries = parse_lines(log, log_format)
    # Every request shows in the access log under its own id; every line the service wrote
    # while handling one carries that request's id.
    access = [e for e in entries if e["logger"] == "authsvc.access"]
    # (Server.start polls /healthz until the server answers.)
    assert [e["request_id"] for e in access if "/healthz" not in e["message"]] == sent
    service = [e for e in entries if e["logger"] in SERVICE_LOGGERS]
    # registered; the security events: a failed login, 2 sessions started, one ended, all
    assert len(service) == 6
    if log_format == "json":  # an event's type, user and session are fields of their own
        events = [(e["event"], e["session_id"]) for e in service if "event" in e]
        assert events == [
            ("login_failed", None), ("login", first["session_id"]),
            ("logout", first["session_id"]), ("login", second["session_id"]),
            ("logout_all", second["session_id"]),
        ]  # fmt: skip
        assert all(e["user_id"] for e in service if "event" in e)
    assert all(e.get("request_id") in sent for e in service), service
    assert all("request_id" in e for e in entries if e["logger"] in REQUEST_LOGGERS)

    windows = secret_windows(TEST_PASSWORD) | secret_windows(wrong_password)
    for pair in (first, rotated, second):
        windows |= refresh_token_windows(pair["refresh_token"])
        windows |= access_token_windows(pair["access_token"])
    leaked = sorted(window for window in windows if window in log)
    assert leaked == [], leaked


FORGED = (
    "2026-12-01 12:00:00,000 WARNING authsvc.domain.sessions[1] -: refresh token replayed after "
    "its grace: session AAAAAAAAAAAAAAAAAAAAAA of user 0123456789abcdef revoked"
)


def _get(port: int, target: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := connection.recv(65_536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_url_cannot_forge_a_log_line_or_send_a_terminal_escape(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str, log_format: str
) -> None:
    """``%0A``, ``%0D`` and ``%1B`` are decoded in the path aiohttp hands over: the access
    log once wrote them as they are, so a URL could add a line (a fake replay warning) or
    drive the terminal of whoever reads the log."""
    server = servers.start(
        tmp_path / "serve.log",
        {
            "AUTHSVC_REDIS_URL": redis_url,
            "AUTHSVC_KEYS_DIR": str(keys_dir),
            "AUTHSVC_LOG_LEVEL": "INFO",
            "AUTHSVC_LOG_FORMAT": log_format,
        },
    )
    targets = [
        f"/v1/auth/me{separator}{urllib.parse.quote(FORGED)}".encode()
        for separator in ("%0A", "%0D", "%0D%0A", "%E2%80%A8", "%C2%85")
    ]
    targets += [b"/x%1B%5B2J%1B%5B31mred%1B%5D0;owned%07", b"/caf%E9", b"/x%C2%9B31m"]
    for target in targets:
        assert _get(server.port, target).startswith(b"HTTP/1.1 404 "), target
    assert server.terminate() == 0

    raw = server.log_path.read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw and b"\x07" not in raw
    log = raw.decode()  # UTF-8 throughout: no byte the client sent as it is
    assert all(line.isprintable() for line in log.splitlines())
    entries = parse_lines(log, log_format)  # every line is one of ours, whole
    access = [
        e for e in entries if e["logger"] == "authsvc.access" and "/healthz" not in e["message"]
    ]
    assert len(access) == len(targets)
    assert not any("replayed" in e["message"] for e in entries if e["logger"] != "authsvc.access")
    assert not any(line.startswith("2026-12-01 12:00:00,000") for line in log.splitlines())
    messages = "\n".join(e["message"] for e in access)
    assert "/v1/auth/me\\n2026-12-01 12:00:00,000 WARNING" in messages
    assert "/x\\x1b[2J\\x1b[31mred\\x1b]0;owned\\x07" in messages
