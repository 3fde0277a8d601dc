"""Requests aiohttp's HTTP parser refuses still get the contract's JSON error body."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from servers import Servers
from support import TEST_PASSWORD, every_route, free_port

from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.server.parser_errors import JsonErrorAppRunner
from authsvc.tokens.keys import KeyRing


@pytest.fixture
async def port(settings: Settings, key_ring: KeyRing) -> AsyncIterator[int]:
    """The app behind the server's own runner, on a real port."""
    runner = JsonErrorAppRunner(create_app(settings, key_ring=key_ring))
    await runner.setup()
    number = free_port()
    await web.TCPSite(runner, "127.0.0.1", number).start()
    try:
        yield number
    finally:
        await runner.cleanup()


async def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


BAD_REQUESTS = {
    "header line over the limit": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 20_000
    + b"\r\n\r\n",
    "malformed request line": b"GET /healthz HTTP/1.1 extra words\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "bad content length": b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
}


@pytest.mark.parametrize("data", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
async def test_a_request_the_parser_refuses_gets_a_json_invalid_request(
    port: int, data: bytes
) -> None:
    status, headers, body = await raw_request(port, data)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "invalid_request"
    assert headers["x-request-id"]
    assert headers["server"] == "authsvc"
    # Nothing of what was sent is echoed back.
    assert b"aaaa" not in body and b"extra words" not in body and b"NoColon" not in body


async def test_a_good_request_on_the_same_server_is_served(port: int) -> None:
    status, _, body = await raw_request(
        port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


# -- bodies whose Content-Encoding does not decode ---------------------------------------


def _coded_request(
    method: str, path: str, coding: str, body: bytes, *, keep_alive: bool = True
) -> bytes:
    """Kept alive unless told (no ``Connection: close``): the server must close it."""
    connection = "" if keep_alive else "Connection: close\r\n"
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{connection}Content-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZip", "br", "zstd"])
@pytest.mark.parametrize(("method", "path"), every_route())
async def test_a_body_whose_content_encoding_does_not_decode_is_invalid_request(
    port: int, caplog: pytest.LogCaptureFixture, method: str, path: str, coding: str
) -> None:
    """On every route, whether its handler reads a body or not: once a 500 with a traceback,
    and an ERROR from aiohttp when it read on after the answer. (br and zstd are refused by
    the parser when their libraries are not installed, decoded like gzip when they are.)"""
    raw = _coded_request(method, path, coding, b"these bytes are no " + coding.encode())
    status, headers, body = await raw_request(port, raw)  # returns once the server closes
    assert status == 400, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)
    assert error["error"] == "invalid_request"
    assert "Content-Encoding" in error["error_description"]
    assert headers["x-request-id"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "coding", [("gzip", gzip.compress), ("deflate", zlib.compress), ("x-unknown", bytes)]
)
async def test_a_body_that_decodes_as_its_content_encoding_says_is_read(
    port: int, coding: tuple[str, Any]
) -> None:
    """aiohttp ignores a coding it does not know: the bytes are read as they are."""
    name, encode = coding
    document = json.dumps({"username": f"coded-{name}", "password": TEST_PASSWORD}).encode()
    status, _, body = await raw_request(
        port, _coded_request("POST", "/v1/users", name, encode(document), keep_alive=False)
    )
    assert status == 201, body


async def test_the_served_process_answers_parser_errors_in_json(
    servers: Servers, tmp_path: Path, keys_dir: Path, redis_url: str
) -> None:
    """``authsvc serve`` runs the app with this runner, not aiohttp's default."""
    server = servers.start(
        tmp_path / "serve.log", {"AUTHSVC_REDIS_URL": redis_url, "AUTHSVC_KEYS_DIR": str(keys_dir)}
    )
    status, headers, body = await raw_request(
        server.port, BAD_REQUESTS["header line over the limit"]
    )
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert headers["server"] == "authsvc"
    assert "aaaa" not in server.log()
