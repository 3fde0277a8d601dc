"""Property-based: whatever bytes, forms, JSON or headers arrive, no endpoint answers 5xx.

The app runs on a real port in a thread of its own (hypothesis drives plain synchronous
HTTP), on the suite's Redis, with every optional surface switched on.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fast_settings, free_port

from authsvc.app import create_app
from authsvc.keys import KeyRing

ROUTES = [
    ("POST", "/v1/users"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("GET", "/v1/auth/sessions"),
    ("DELETE", "/v1/auth/sessions/{session_id}"),
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/auth/verify"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
    ("POST", "/oauth/introspect"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
]
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


@pytest.fixture(scope="module")
def server(redis_url: str, key_ring: KeyRing) -> Iterator[tuple[str, int]]:
    """The app on a free loopback port, served by an event loop in its own thread."""
    config = fast_settings(
        redis_url=redis_url, password_grant=True, introspection_clients=(("gw", "pw"),)
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(create_app(config, key_ring=key_ring))
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
    connection = http.client.HTTPConnection(*server, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


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
