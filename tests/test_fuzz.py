"""Property-based: whatever bytes, forms, JSON, headers or content codings arrive, no
endpoint answers 5xx, and nothing is logged at ERROR.

The app runs on a real port in a thread of its own (hypothesis drives plain synchronous
HTTP), behind the runner ``authsvc serve`` uses, on the suite's Redis, with every optional
surface switched on (the password grant, introspection, trusted proxies). Headers and
content codings are fuzzed on every route, each request otherwise one that gets through
(a live token, the right password), so the bytes reach what is done after the checks:
a login's session, written to Redis with the client's User-Agent and address.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import ipaddress
import itertools
import json
import logging
import socket
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TEST_PASSWORD, every_route, fast_settings, free_port

from authsvc.config import RateLimit
from authsvc.server.app import create_app
from authsvc.server.parser_errors import JsonErrorAppRunner
from authsvc.tokens.keys import KeyRing

# Hypothesis runs of hundreds of requests each: seconds in all.
pytestmark = pytest.mark.slow

ROUTES = every_route("{session_id}")
# Every request header authsvc's own code reads (grep authsvc/ for "headers"), and the one
# aiohttp decodes the body by; aiohttp's framing headers are test_parser_errors' concern.
HEADERS_READ = [
    "User-Agent",
    "Authorization",
    "X-Forwarded-For",
    "X-Request-Id",
    "Content-Type",
    "If-None-Match",
    "Content-Encoding",
]
# What fuzzed header values start with, so that the bytes after them reach the parsing of
# a scheme, a charset, a hop list or a coding.
HEADER_PREFIXES = [
    b"",
    b"Bearer ",
    b"Basic ",
    b"Basic Z3c6cHc=",
    b"application/json; charset=",
    b"application/x-www-form-urlencoded",
    b"203.0.113.9, ",
    b"fe80::1%",
    b'W/"',
    b"gzip",
]
CODINGS = ["gzip", "deflate", "br", "zstd", "GZIP", "identity", "x-gzip", "gzip, deflate", ""]
FUZZ_USER = "fuzzer"
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin1",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=bogus",
    "multipart/form-data; boundary=x",
    "text/plain",
    "",
]
FIELDS = [
    "username",
    "password",
    "device",
    "refresh_token",
    "grant_type",
    "token",
    "token_type_hint",
]

examples = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Per route, for the tests that go through every route.
per_route_examples = settings(examples, max_examples=25)


class ErrorRecords(logging.Handler):
    """Every record at ERROR or above, from any logger (aiohttp's included)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


ERRORS = ErrorRecords()


@pytest.fixture(scope="module", autouse=True)
def _errors_recorded() -> Iterator[None]:
    root = logging.getLogger()
    root.addHandler(ERRORS)
    try:
        yield
    finally:
        root.removeHandler(ERRORS)


@pytest.fixture(scope="module")
def server(redis_url: str, key_ring: KeyRing) -> Iterator[tuple[str, int]]:
    """The app on a free loopback port, served by an event loop in its own thread."""
    config = fast_settings(
        redis_url=redis_url,
        password_grant=True,
        introspection_clients=(("gw", "pw"),),
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        login_rate_limit=RateLimit(1_000_000, 60),
        login_failure_limit=RateLimit(1_000_000, 3600),
        registration_rate_limit=RateLimit(1_000_000, 60),
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = JsonErrorAppRunner(create_app(config, key_ring=key_ring))
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield "127.0.0.1", port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def send(
    server: tuple[str, int], method: str, path: str, body: bytes, headers: dict[str, Any]
) -> int:
    encoded = {
        name: value if isinstance(value, bytes) else value.encode("latin-1")
        for name, value in headers.items()
    }
    return send_raw(server, raw_request(method, path, encoded, body))


def send_raw(server: tuple[str, int], request: bytes) -> int:
    """Send bytes as they are and return the status, once the server has closed the
    connection (``Connection: close``) and so logged all it logs about the request: never
    a line at ERROR."""
    ERRORS.messages.clear()
    with socket.create_connection(server, timeout=10) as connection:
        connection.sendall(request)
        chunks = []
        while chunk := connection.recv(65_536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    assert raw.startswith(b"HTTP/1."), raw
    assert ERRORS.messages == []
    return int(raw.split(maxsplit=2)[1])


def raw_request(method: str, path: str, headers: dict[str, bytes], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: authsvc\r\nConnection: close\r\n".encode()
    lines = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers.items())
    return head + lines + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.fixture(scope="module")
def fuzz_user(server: tuple[str, int]) -> str:
    body = json.dumps({"username": FUZZ_USER, "password": TEST_PASSWORD}).encode()
    assert send(server, "POST", "/v1/users", body, {"Content-Type": "application/json"}) == 201
    return FUZZ_USER


def fresh_pair(server: tuple[str, int]) -> dict[str, Any]:
    connection = http.client.HTTPConnection(*server, timeout=10)
    try:
        body = json.dumps({"username": FUZZ_USER, "password": TEST_PASSWORD})
        connection.request("POST", "/v1/auth/login", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200
        pair: dict[str, Any] = json.loads(response.read())
        return pair
    finally:
        connection.close()


_new_names = (f"fuzz-new-{n}" for n in itertools.count())


def passing_request(
    method: str, template: str, pair: dict[str, Any]
) -> tuple[str, dict[str, bytes], bytes]:
    """The path, headers and body of a request to this route that gets through: a live
    token, the right password, a token of the session, a new username."""
    access, refresh = pair["access_token"].encode(), pair["refresh_token"]
    path = template.replace("{session_id}", pair["session_id"])
    headers = {"Authorization": b"Bearer " + access, "User-Agent": b"fuzz/1.0"}
    json_type, form_type = b"application/json", b"application/x-www-form-urlencoded"
    body: bytes = b""
    credentials = {"username": FUZZ_USER, "password": TEST_PASSWORD}
    if template == "/v1/users":
        body = json.dumps({"username": next(_new_names), "password": TEST_PASSWORD}).encode()
    elif template == "/v1/auth/login":
        body = json.dumps({**credentials, "device": "fuzz"}).encode()
    elif template == "/v1/auth/refresh":
        body = json.dumps({"refresh_token": refresh}).encode()
    elif template == "/oauth/token":
        body = urllib.parse.urlencode({"grant_type": "password", **credentials}).encode()
    elif template == "/oauth/revoke":
        body = urllib.parse.urlencode({"token": refresh}).encode()
    elif template == "/oauth/introspect":
        headers["Authorization"] = b"Basic " + base64.b64encode(b"gw:pw")
        body = urllib.parse.urlencode({"token": pair["access_token"]}).encode()
    if body:
        headers["Content-Type"] = form_type if template.startswith("/oauth/") else json_type
    return path, headers, body


def _path(template: str, segment: str) -> str:
    return template.replace("{session_id}", urllib.parse.quote(segment, safe=""))


text = st.text(max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=10,
)


@examples
@given(
    route=st.sampled_from(ROUTES),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=st.binary(max_size=600),
    segment=text,
)
def test_arbitrary_bytes_never_get_a_5xx(
    server: tuple[str, int], route: tuple[str, str], content_type: str, body: bytes, segment: str
) -> None:
    method, template = route
    headers = {"Content-Type": content_type} if content_type else {}
    assert send(server, method, _path(template, segment), body, headers) < 500


@examples
@given(
    route=st.sampled_from(ROUTES),
    form=st.lists(st.tuples(st.sampled_from(FIELDS) | text, text), max_size=6),
)
def test_arbitrary_forms_never_get_a_5xx(
    server: tuple[str, int], route: tuple[str, str], form: list[tuple[str, str]]
) -> None:
    method, template = route
    body = urllib.parse.urlencode(form).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": "Basic Z3c6cHc=",
    }
    assert send(server, method, _path(template, "x"), body, headers) < 500


@examples
@given(
    route=st.sampled_from(ROUTES),
    document=st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=5) | json_values,
)
def test_arbitrary_json_never_gets_a_5xx(
    server: tuple[str, int], route: tuple[str, str], document: Any
) -> None:
    method, template = route
    body = json.dumps(document).encode()
    assert (
        send(server, method, _path(template, "x"), body, {"Content-Type": "application/json"}) < 500
    )


@examples
@given(
    route=st.sampled_from(ROUTES),
    authorization=st.binary(max_size=200).filter(lambda raw: b"\r" not in raw and b"\n" not in raw),
    scheme=st.sampled_from([b"Bearer ", b"Basic ", b"bearer ", b""]),
)
def test_arbitrary_authorization_headers_never_get_a_5xx(
    server: tuple[str, int], route: tuple[str, str], authorization: bytes, scheme: bytes
) -> None:
    method, template = route
    headers = {"Authorization": scheme + authorization, "Content-Type": "application/json"}
    assert send(server, method, _path(template, "x"), b"{}", headers) < 500


header_values = st.tuples(
    st.sampled_from(HEADER_PREFIXES),
    st.binary(max_size=200).filter(lambda raw: b"\r" not in raw and b"\n" not in raw),
).map(b"".join)


@pytest.mark.parametrize(("method", "template"), ROUTES)
@per_route_examples
@given(name=st.sampled_from(HEADERS_READ), value=header_values)
def test_arbitrary_bytes_in_any_header_authsvc_reads_never_get_a_5xx_or_an_error_logged(
    server: tuple[str, int],
    fuzz_user: str,
    method: str,
    template: str,
    name: str,
    value: bytes,
) -> None:
    """Non-UTF-8 bytes reach handlers as lone surrogates: a Latin-1 User-Agent at login once
    gave a 500 after the password had checked out, as Redis's client could not encode it."""
    path, headers, body = passing_request(method, template, fresh_pair(server))
    headers[name] = value
    assert send_raw(server, raw_request(method, path, headers, body)) < 500


_compressions: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw": bytes,
}


@pytest.mark.parametrize(("method", "template"), ROUTES)
@per_route_examples
@given(
    coding=st.sampled_from(CODINGS),
    compression=st.sampled_from(sorted(_compressions)),
    cut=st.integers(min_value=0, max_value=40),
    garbage=st.binary(max_size=300),
    use_garbage=st.booleans(),
)
def test_any_content_encoding_on_any_route_never_gets_a_5xx_or_an_error_logged(
    server: tuple[str, int],
    fuzz_user: str,
    method: str,
    template: str,
    coding: str,
    compression: str,
    cut: int,
    garbage: bytes,
    use_garbage: bool,
) -> None:
    """A body that does not decode as its Content-Encoding says once gave a 500, and an
    ERROR with a traceback from aiohttp, before any authentication. The body here is the
    route's own (or random bytes), compressed or not, and maybe cut short."""
    path, headers, body = passing_request(method, template, fresh_pair(server))
    payload = _compressions[compression](garbage if use_garbage or not body else body)
    payload = payload[: len(payload) - cut] if cut < len(payload) else payload
    headers["Content-Type"] = headers.get("Content-Type", b"application/json")
    if coding:
        headers["Content-Encoding"] = coding.encode()
    assert send_raw(server, raw_request(method, path, headers, payload)) < 500
