"""One validation layer for JSON and form bodies: every malformed request gets a 4xx.

And the catch-all: a crash is a 500 with the contract's body on both surfaces, never a
traceback, and never a 400 under /oauth/.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from support import TEST_PASSWORD, bearer, login, register
from support import assert_error as assert_error_shape

from authsvc.server.app import create_app

JSON_ENDPOINTS = ["/v1/users", "/v1/auth/login", "/v1/auth/refresh"]
FORM_ENDPOINTS = ["/oauth/token", "/oauth/revoke", "/oauth/introspect"]


async def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    body = await response.json()
    assert body["error"] == code
    assert "Traceback" not in body["error_description"]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_invalid_utf8_in_a_json_string_is_an_invalid_request(client: Any, path: str) -> None:
    body = b'{"username": "al\xffice", "password": "x\xfe", "refresh_token": "\xc3\x28"}'
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_a_lone_surrogate_escape_is_an_invalid_request(client: Any, path: str) -> None:
    body = b'{"username": "\\ud800", "password": "\\udfff", "refresh_token": "\\ud83d"}'
    response = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_request")


# Introspection authenticates its caller first: this client ("x:y") may.
CLIENT = {"introspection_clients": (("x", "y"),)}


@pytest.mark.parametrize("path", JSON_ENDPOINTS + FORM_ENDPOINTS)
async def test_a_charset_other_than_utf8_is_unsupported(make_client: Any, path: str) -> None:
    client = await make_client(**CLIENT)
    kind = "application/json" if path.startswith("/v1") else "application/x-www-form-urlencoded"
    for charset in ("latin1", "utf-16", "no-such-charset"):
        response = await client.post(
            path,
            data="{}".encode("latin1"),
            headers={"Content-Type": f"{kind}; charset={charset}", "Authorization": "Basic eDp5"},
        )
        await assert_error(response, 415, "unsupported_media_type")


async def test_utf8_declared_as_a_charset_is_accepted(client: Any) -> None:
    response = await client.post(
        "/v1/users",
        data=f'{{"username": "zoë", "password": "{TEST_PASSWORD}"}}'.encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
    assert response.status == 201


async def test_unknown_json_fields_are_refused_by_name(client: Any) -> None:
    response = await client.post(
        "/v1/users", json={"username": "alice", "password": TEST_PASSWORD, "pasword": "typo"}
    )
    await assert_error(response, 400, "invalid_request")
    assert "pasword" in (await response.json())["error_description"]


async def test_invalid_utf8_in_a_form_is_an_invalid_request(client: Any) -> None:
    response = await client.post(
        "/oauth/token",
        data=b"grant_type=refresh_token&refresh_token=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke"])
async def test_a_repeated_form_parameter_is_an_invalid_request(client: Any, path: str) -> None:
    response = await client.post(
        path,
        data=b"token=a&token=b&grant_type=refresh_token&refresh_token=a&refresh_token=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    await assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", FORM_ENDPOINTS)
async def test_an_oversized_form_is_payload_too_large(make_client: Any, path: str) -> None:
    client = await make_client(max_body_size=1024)
    response = await client.post(
        path,
        data=b"token=" + b"a" * 4096,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "Basic eDp5",
        },
    )
    if path == "/oauth/introspect":
        # The client is authenticated before the body is read.
        await assert_error(response, 401, "invalid_client")
    else:
        await assert_error(response, 413, "payload_too_large")


async def test_a_form_value_over_its_bound_is_an_invalid_request(make_client: Any) -> None:
    client = await make_client(max_body_size=65_536)
    response = await client.post("/oauth/revoke", data={"token": "a" * 5000})
    await assert_error(response, 400, "invalid_request")


async def _crashing_client(aiohttp_client: Any, settings: Any, clock: Any, key_ring: Any) -> Any:
    app = create_app(settings, clock=clock, key_ring=key_ring)

    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_post("/v1/crash", crash)
    app.router.add_post("/oauth/crash", crash)
    return await aiohttp_client(app)


async def test_a_crash_is_a_500_server_error_on_both_surfaces(
    aiohttp_client: Any, settings: Any, clock: Any, key_ring: Any
) -> None:
    """Under /oauth/ too: an unexpected error is not the client's fault (no 400)."""
    client = await _crashing_client(aiohttp_client, settings, clock, key_ring)
    for path in ("/v1/crash", "/oauth/crash"):
        response = await client.post(path)
        await assert_error(response, 500, "server_error")
        assert "secret internals" not in await response.text()


async def test_bearer_routes_still_work_after_the_refactor(client: Any) -> None:
    await register(client)
    pair = await login(client)
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# The body of a JSON endpoint: JSON, as application/json, within the size limit


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"username": "a",}', b"\xff\xfe"])
async def test_register_with_invalid_json_is_invalid_request(client: Any, raw: bytes) -> None:
    response = await client.post(
        "/v1/users", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error_shape(response, 400, "invalid_request")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_register_with_another_content_type_is_unsupported_media_type(
    client: Any, content_type: str
) -> None:
    response = await client.post(
        "/v1/users",
        data=b'{"username": "alice", "password": "correct horse battery staple"}',
        headers={"Content-Type": content_type},
    )
    await assert_error_shape(response, 415, "unsupported_media_type")


async def test_json_with_charset_parameter_is_accepted(client: Any) -> None:
    response = await client.post(
        "/v1/users",
        data=b'{"username": "alice", "password": "correct horse battery staple"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status == 201


async def test_body_over_max_body_size_is_payload_too_large(make_client: Any) -> None:
    client = await make_client(max_body_size=1024)
    response = await client.post("/v1/users", json={"username": "alice", "password": "x" * 2000})
    await assert_error_shape(response, 413, "payload_too_large")


async def test_body_over_default_max_body_size_is_payload_too_large(client: Any) -> None:
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": "x" * 20_000}
    )
    await assert_error_shape(response, 413, "payload_too_large")


async def test_error_bodies_never_carry_a_stack_trace(client: Any) -> None:
    """Odd input gets a 4xx with a plain description, never a 500."""
    odd_bodies: list[Any] = [
        {"username": "a" * 10_000, "password": TEST_PASSWORD},
        {"username": {"$ne": None}, "password": TEST_PASSWORD},
        {"username": "alice", "password": TEST_PASSWORD, "device": "d" * 1000},
        {"refresh_token": ["x"]},
        1e309,
        True,
    ]
    for path in ["/v1/users", "/v1/auth/login", "/v1/auth/refresh"]:
        for body in odd_bodies:
            response = await client.post(path, json=body)
            assert response.status < 500, (path, body, response.status)
            assert "Traceback" not in await response.text()
            if response.status >= 400:
                assert set(await response.json()) == {"error", "error_description"}
