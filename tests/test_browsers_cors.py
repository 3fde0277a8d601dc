"""CORS (API.md "Browsers"): a listed origin's headers on every answer, errors included,
preflights on every /v1 and /oauth route, and nothing at all for an origin not listed;
AUTHSVC_CORS_ORIGINS and AUTHSVC_COOKIE_SAMESITE as settings."""

from __future__ import annotations

from typing import Any

import pytest
from support import TEST_PASSWORD, assert_error, bearer, login, register

from authsvc.config import RateLimit, SettingsError, load_settings
from authsvc.server.app import create_app
from authsvc.tokens.keys import KeyRing

APP = "https://app.example.com"
DEV = "http://127.0.0.1:5173"
FOREIGN = "https://evil.example"
REQUIRED_ALLOW_HEADERS = {"authorization", "content-type", "x-csrf-token", "x-request-id", "dpop"}


@pytest.fixture
async def client(make_client: Any) -> Any:
    return await make_client(cors_origins=(APP, DEV))


def cors_headers(response: Any) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


def assert_listed_origin_headers(response: Any, origin: str) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in listed(response.headers["Vary"])
    exposed = listed(response.headers["Access-Control-Expose-Headers"])
    assert {"x-request-id", "retry-after", "www-authenticate"} <= exposed


def api_routes(key_ring: KeyRing) -> list[tuple[str, set[str]]]:
    """(path, methods) of every /v1 and /oauth route of the app, read from its router."""
    app = create_app(load_settings({}), key_ring=key_ring)
    methods: dict[str, set[str]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith(("/v1/", "/oauth/")):
            continue
        path = resource.canonical.replace("{session_id}", "AAAAAAAAAAAAAAAAAAAAAA")
        path = path.replace("{user_id}", "0" * 32)
        methods.setdefault(path, set()).add(route.method)
    return sorted(methods.items())


API_ROUTES = api_routes(KeyRing.generated("EdDSA"))


def test_the_route_list_covers_both_surfaces() -> None:
    paths = {path for path, _ in API_ROUTES}
    assert {"/v1/auth/refresh", "/v1/auth/login", "/oauth/token", "/v1/auth/verify"} <= paths
    assert len(paths) > 15


@pytest.mark.parametrize(("path", "methods"), API_ROUTES, ids=[p for p, _ in API_ROUTES])
async def test_a_preflight_from_a_listed_origin_answers_204_on_every_route(
    client: Any, path: str, methods: set[str]
) -> None:
    requested = sorted(methods - {"HEAD"})[0]
    response = await client.options(
        path,
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": requested,
            "Access-Control-Request-Headers": "content-type, x-csrf-token",
        },
    )
    assert response.status == 204, await response.text()
    assert await response.read() == b""
    assert_listed_origin_headers(response, APP)
    assert listed(response.headers["Access-Control-Allow-Methods"]) == {
        method.lower() for method in methods
    }
    assert listed(response.headers["Access-Control-Allow-Headers"]) >= REQUIRED_ALLOW_HEADERS
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize(("path", "methods"), API_ROUTES, ids=[p for p, _ in API_ROUTES])
async def test_a_preflight_from_an_unlisted_origin_gets_no_cors_headers(
    client: Any, path: str, methods: set[str]
) -> None:
    """Answered as if CORS did not exist: 405 with Allow, which the browser takes as a
    refusal; nothing says which origins are listed."""
    response = await client.options(
        path, headers={"Origin": FOREIGN, "Access-Control-Request-Method": "POST"}
    )
    await assert_error(response, 405, "method_not_allowed")
    assert cors_headers(response) == {}
    assert listed(response.headers["Allow"]) == {method.lower() for method in methods}


async def test_a_listed_origin_is_matched_exactly(client: Any) -> None:
    for origin in (
        "https://app.example.com:443", "https://APP.example.com", "http://app.example.com",
        "https://app.example.com.evil.example", "null", "",
    ):  # fmt: skip
        response = await client.get("/healthz", headers={"Origin": origin})
        assert cors_headers(response) == {}, origin
    response = await client.get("/healthz", headers={"Origin": DEV})
    assert_listed_origin_headers(response, DEV)


async def test_a_listed_origin_reads_every_answer_errors_included(make_client: Any) -> None:
    client = await make_client(cors_origins=(APP,), login_rate_limit=RateLimit(2, 60))
    origin = {"Origin": APP}
    created = await client.post(
        "/v1/users", json={"username": "alice", "password": TEST_PASSWORD}, headers=origin
    )
    assert created.status == 201
    assert_listed_origin_headers(created, APP)
    pair = await login(client)
    me = await client.get("/v1/auth/me", headers={**origin, **bearer(pair)})
    assert me.status == 200
    assert_listed_origin_headers(me, APP)
    unauthorized = await client.get("/v1/auth/me", headers=origin)
    await assert_error(unauthorized, 401, "invalid_token")
    assert_listed_origin_headers(unauthorized, APP)
    refused = await client.post("/v1/auth/refresh", json={}, headers=origin)
    await assert_error(refused, 401, "invalid_grant")
    assert_listed_origin_headers(refused, APP)
    for _ in range(2):
        await client.post("/v1/auth/login", json={"username": "alice", "password": "x" * 12})
    limited = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": "x" * 12}, headers=origin
    )
    await assert_error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"]
    assert_listed_origin_headers(limited, APP)
    # The OAuth surface, the JWKS and aiohttp's own 404 and 405 too.
    token = await client.post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "x"}, headers=origin
    )
    await assert_error(token, 400, "invalid_grant")
    assert_listed_origin_headers(token, APP)
    for path in ("/.well-known/jwks.json", "/no/such/path"):
        assert_listed_origin_headers(await client.get(path, headers=origin), APP)
    wrong_method = await client.get("/v1/auth/login", headers=origin)
    await assert_error(wrong_method, 405, "method_not_allowed")
    assert_listed_origin_headers(wrong_method, APP)


async def test_an_unlisted_origin_gets_no_cors_header_on_any_answer(client: Any) -> None:
    await register(client)
    headers = {"Origin": FOREIGN}
    pair = await login(client)
    answers = [
        await client.post(
            "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}, headers=headers
        ),
        await client.get("/v1/auth/me", headers={**headers, **bearer(pair)}),
        await client.get("/v1/auth/me", headers=headers),
        await client.post("/v1/auth/refresh", json={}, headers=headers),
        await client.get("/.well-known/jwks.json", headers=headers),
    ]
    for response in answers:
        assert cors_headers(response) == {}, response.url
        assert "origin" in listed(response.headers["Vary"])


async def test_without_an_origin_header_there_is_no_cors_header(client: Any) -> None:
    for response in (await client.get("/healthz"), await client.get("/v1/auth/me")):
        assert cors_headers(response) == {}
        # A cache between must not give this answer to a page of a listed origin.
        assert "origin" in listed(response.headers["Vary"])


async def test_with_no_origin_listed_nothing_changes(make_client: Any) -> None:
    client = await make_client()
    response = await client.options(
        "/v1/auth/refresh", headers={"Origin": APP, "Access-Control-Request-Method": "POST"}
    )
    await assert_error(response, 405, "method_not_allowed")
    assert cors_headers(response) == {}
    plain = await client.get("/healthz", headers={"Origin": APP})
    assert cors_headers(plain) == {}
    assert "Vary" not in plain.headers


async def test_options_without_a_preflight_header_is_a_405(client: Any) -> None:
    response = await client.options("/v1/auth/refresh", headers={"Origin": APP})
    await assert_error(response, 405, "method_not_allowed")
    assert_listed_origin_headers(response, APP)
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_a_preflight_off_the_routes_is_a_404(client: Any) -> None:
    response = await client.options(
        "/v1/no/such/route", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    await assert_error(response, 404, "not_found")
    assert "Access-Control-Allow-Methods" not in response.headers


async def test_a_preflight_is_counted_under_its_route(client: Any) -> None:
    await client.options(
        "/v1/auth/sessions/AAAAAAAAAAAAAAAAAAAAAA",
        headers={"Origin": APP, "Access-Control-Request-Method": "DELETE"},
    )
    metrics = await (await client.get("/metrics")).text()
    counted = [
        line for line in metrics.splitlines()
        if line.startswith("authsvc_http_requests_total{") and 'method="OPTIONS"' in line
    ]  # fmt: skip
    assert len(counted) == 1
    assert 'route="/v1/auth/sessions/{session_id}"' in counted[0]
    assert 'status="204"' in counted[0]


def test_cors_origins_are_read_as_exact_origins() -> None:
    settings = load_settings({"AUTHSVC_CORS_ORIGINS": f" {APP} ,{DEV},"})
    assert settings.cors_origins == (APP, DEV)
    assert load_settings({}).cors_origins == ()


@pytest.mark.parametrize(
    "value",
    ["*", "null", "https://app.example.com/", "HTTPS://app.example.com", "app.example.com",
     "https://app.example.com:443", "ftp://app.example.com", "https://user@app.example.com"],
)  # fmt: skip
def test_a_cors_origin_that_is_not_an_exact_origin_fails_at_start(value: str) -> None:
    with pytest.raises(SettingsError, match="AUTHSVC_CORS_ORIGINS"):
        load_settings({"AUTHSVC_CORS_ORIGINS": value})


def test_cookie_samesite_takes_strict_lax_or_none() -> None:
    assert load_settings({}).cookie_samesite == "Strict"
    for value, expected in (("lax", "Lax"), ("None", "None"), (" STRICT ", "Strict")):
        assert load_settings({"AUTHSVC_COOKIE_SAMESITE": value}).cookie_samesite == expected
    with pytest.raises(SettingsError, match="AUTHSVC_COOKIE_SAMESITE"):
        load_settings({"AUTHSVC_COOKIE_SAMESITE": "sometimes"})


def test_the_settings_can_come_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "authsvc.toml"
    path.write_text(f'cors_origins = ["{APP}", "{DEV}"]\ncookie_samesite = "Lax"\n')
    settings = load_settings({}, path)
    assert settings.cors_origins == (APP, DEV)
    assert settings.cookie_samesite == "Lax"
