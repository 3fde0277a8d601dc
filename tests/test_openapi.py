"""The OpenAPI document: valid OpenAPI 3.1, the same routes as the app, and true to what the
app answers. Every endpoint's success and main error responses are driven through the real
app and checked against ``authsvc/http/openapi.json`` with ``assert_matches_document``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import Any

import pytest
from aiohttp import web
from contract import (
    DOCUMENT,
    DOCUMENT_BYTES,
    HTTP_METHODS,
    assert_documented,
    assert_matches_any_path_response,
    assert_matches_document,
    assert_valid,
    media_examples,
    request_body_allowed,
)
from multidict import CIMultiDict
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts as spec_versions
from openapi_spec_validator.versions.shortcuts import get_spec_version
from support import TEST_PASSWORD, bearer, fast_settings, free_port, login, register

from authsvc.config import RateLimit, Settings
from authsvc.server.app import create_app
from authsvc.store.supervision import StoreState
from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key

INTROSPECTION_CLIENT = ("gateway", "gateway secret")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BEARER_ENDPOINTS = [
    ("POST", "/v1/auth/logout", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all", "/v1/auth/logout-all"),
    ("GET", "/v1/auth/sessions", "/v1/auth/sessions"),
    ("DELETE", "/v1/auth/sessions/{session_id}", "/v1/auth/sessions/some-session"),
    ("GET", "/v1/auth/me", "/v1/auth/me"),
    ("GET", "/v1/auth/verify", "/v1/auth/verify"),
]


def basic(client_id: str, secret: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route; aiohttp's implicit HEAD of a GET aside."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def documented_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


@pytest.fixture
def app(key_ring: KeyRing) -> web.Application:
    """An app that is built but never started: its routes are all it is asked for."""
    return create_app(fast_settings(), key_ring=key_ring)


@pytest.fixture
async def outage_client(client_for: Any, settings: Settings) -> Any:
    """An app like ``client``'s (same keys, issuer and clock) whose store port is closed."""
    return await client_for(
        dataclasses.replace(
            settings,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            store_timeout=0.5,
            store_retry_after=3,
        )
    )


# The document


def test_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert get_spec_version(DOCUMENT) == spec_versions.OPENAPIV31
    assert DOCUMENT["openapi"] == "3.1.0"


def test_every_served_route_is_documented(app: web.Application) -> None:
    undocumented = served_routes(app) - documented_routes()
    assert not undocumented, f"served but not in the document: {sorted(undocumented)}"


def test_every_documented_route_is_served(app: web.Application) -> None:
    unserved = documented_routes() - served_routes(app)
    assert not unserved, f"in the document but not served: {sorted(unserved)}"


async def test_openapi_json_serves_the_document_file(client: Any) -> None:
    body = await assert_documented(await client.get("/openapi.json"), "GET", "/openapi.json", 200)
    assert body == DOCUMENT_BYTES


def test_every_example_in_the_document_matches_its_schema() -> None:
    examples = media_examples()
    assert len(examples) >= 10
    for where, example, schema_pointer in examples:
        assert_valid(example, schema_pointer, where)


# The checker itself: it passes what the document says and refuses what it does not.


@dataclasses.dataclass
class StandInResponse:
    """Just what assert_matches_document reads of an aiohttp client response."""

    status: int
    body: Any
    header_fields: dict[str, str]
    content_type: str = "application/json"

    @property
    def headers(self) -> CIMultiDict[str]:
        return CIMultiDict(self.header_fields)

    @property
    def raw(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode()


TOKEN_PAIR = {
    "access_token": "a.b.c",
    "token_type": "Bearer",
    "expires_in": 900,
    "refresh_token": "u.s.0.secret.mac",
    "refresh_expires_in": 1_209_600,
    "session_id": "s",
}
TOKEN_PAIR_HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-Id": "r-1"}
RETRY = {"X-Request-Id": "r-1", "Retry-After": "3"}
LIKE_THE_DOCUMENT = [
    ("POST", "/v1/auth/login", StandInResponse(200, TOKEN_PAIR, TOKEN_PAIR_HEADERS)),
    ("POST", "/v1/auth/login", StandInResponse(429, {"error": "rate_limited",
                                                     "error_description": "later"}, RETRY)),
    ("POST", "/v1/auth/logout", StandInResponse(204, None, {"X-Request-Id": "r-1"})),
]  # fmt: skip
UNLIKE_THE_DOCUMENT = {
    "undocumented status": (
        "POST", "/v1/auth/login", StandInResponse(201, TOKEN_PAIR, TOKEN_PAIR_HEADERS)
    ),
    "required header missing": (
        "POST", "/v1/auth/login", StandInResponse(200, TOKEN_PAIR, {"X-Request-Id": "r-1"})
    ),
    "header unlike its schema": (
        "POST", "/v1/auth/login",
        StandInResponse(200, TOKEN_PAIR, {**TOKEN_PAIR_HEADERS, "Cache-Control": "max-age=60"}),
    ),
    "unknown field": (
        "POST", "/v1/auth/login",
        StandInResponse(200, {**TOKEN_PAIR, "scope": "all"}, TOKEN_PAIR_HEADERS),
    ),
    "field of the wrong type": (
        "POST", "/v1/auth/login",
        StandInResponse(200, {**TOKEN_PAIR, "expires_in": "900"}, TOKEN_PAIR_HEADERS),
    ),
    "missing field": (
        "POST", "/v1/auth/login",
        StandInResponse(
            200, {k: v for k, v in TOKEN_PAIR.items() if k != "session_id"}, TOKEN_PAIR_HEADERS
        ),
    ),
    "wrong content type": (
        "POST", "/v1/auth/login",
        StandInResponse(200, TOKEN_PAIR, TOKEN_PAIR_HEADERS, content_type="text/html"),
    ),
    "another error code": (
        "POST", "/v1/auth/login",
        StandInResponse(401, {"error": "invalid_token", "error_description": "x"},
                        {"X-Request-Id": "r-1"}),
    ),
    "retry-after not seconds": (
        "POST", "/v1/auth/login",
        StandInResponse(429, {"error": "rate_limited", "error_description": "later"},
                        {**RETRY, "Retry-After": "soon"}),
    ),
    "a body where none is documented": (
        "POST", "/v1/auth/logout", StandInResponse(204, {}, {"X-Request-Id": "r-1"})
    ),
    "undocumented operation": (
        "PUT", "/v1/auth/login", StandInResponse(200, TOKEN_PAIR, TOKEN_PAIR_HEADERS)
    ),
}  # fmt: skip


@pytest.mark.parametrize(("method", "template", "response"), LIKE_THE_DOCUMENT)
def test_a_response_like_the_document_matches(
    method: str, template: str, response: StandInResponse
) -> None:
    assert_matches_document(method, template, response, response.raw)


@pytest.mark.parametrize(
    ("method", "template", "response"),
    UNLIKE_THE_DOCUMENT.values(),
    ids=UNLIKE_THE_DOCUMENT.keys(),
)
def test_a_response_unlike_the_document_does_not_match(
    method: str, template: str, response: StandInResponse
) -> None:
    with pytest.raises(AssertionError):
        assert_matches_document(method, template, response, response.raw)


# /v1/users


async def test_register_answers_as_documented(client: Any) -> None:
    async def post(**kwargs: Any) -> Any:
        return await client.post("/v1/users", **kwargs)

    credentials = {"username": "alice", "password": TEST_PASSWORD}
    await assert_documented(await post(json=credentials), "POST", "/v1/users", 201)
    await assert_documented(await post(json=credentials), "POST", "/v1/users", 409)
    weak = {"username": "bob", "password": "short"}
    await assert_documented(await post(json=weak), "POST", "/v1/users", 400)
    await assert_documented(await post(json={"username": "bob"}), "POST", "/v1/users", 400)
    malformed = await post(data=b"{", headers={"Content-Type": "application/json"})
    await assert_documented(malformed, "POST", "/v1/users", 400)
    await assert_documented(await post(data=credentials), "POST", "/v1/users", 415)
    huge = {"username": "bob", "password": "x" * 20_000}
    await assert_documented(await post(json=huge), "POST", "/v1/users", 413)


async def test_closed_registration_answers_as_documented(make_client: Any) -> None:
    client = await make_client(registration="closed")
    response = await client.post("/v1/users", json={"username": "alice", "password": TEST_PASSWORD})
    await assert_documented(response, "POST", "/v1/users", 403)


# /v1/auth/login and /v1/auth/refresh


async def test_login_answers_as_documented(client: Any) -> None:
    await register(client)

    async def post(**kwargs: Any) -> Any:
        return await client.post("/v1/auth/login", **kwargs)

    credentials = {"username": "alice", "password": TEST_PASSWORD, "device": "laptop"}
    await assert_documented(await post(json=credentials), "POST", "/v1/auth/login", 200)
    wrong = {"username": "alice", "password": "not the right password"}
    await assert_documented(await post(json=wrong), "POST", "/v1/auth/login", 401)
    unknown = {"username": "mallory", "password": TEST_PASSWORD}
    await assert_documented(await post(json=unknown), "POST", "/v1/auth/login", 401)
    await assert_documented(await post(json={"username": 1}), "POST", "/v1/auth/login", 400)
    await assert_documented(await post(data=credentials), "POST", "/v1/auth/login", 415)
    huge = {"username": "alice", "password": "x" * 20_000}
    await assert_documented(await post(json=huge), "POST", "/v1/auth/login", 413)


async def test_rate_limited_login_answers_as_documented(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(1, 60))
    await register(client)
    wrong = {"username": "alice", "password": "not the right password"}
    await assert_documented(
        await client.post("/v1/auth/login", json=wrong), "POST", "/v1/auth/login", 401
    )
    await assert_documented(
        await client.post("/v1/auth/login", json=wrong), "POST", "/v1/auth/login", 429
    )


async def test_rate_limited_registration_and_refresh_answer_as_documented(
    make_client: Any,
) -> None:
    client = await make_client(
        registration_rate_limit=RateLimit(1, 3600), refresh_rate_limit=RateLimit(1, 60)
    )
    await register(client)
    again = await client.post("/v1/users", json={"username": "bob", "password": TEST_PASSWORD})
    await assert_documented(again, "POST", "/v1/users", 429)
    pair = await login(client)
    body = {"refresh_token": pair["refresh_token"]}
    await assert_documented(
        await client.post("/v1/auth/refresh", json=body), "POST", "/v1/auth/refresh", 200
    )
    await assert_documented(
        await client.post("/v1/auth/refresh", json=body), "POST", "/v1/auth/refresh", 429
    )


async def test_refresh_answers_as_documented(client: Any) -> None:
    await register(client)
    pair = await login(client)

    async def post(**kwargs: Any) -> Any:
        return await client.post("/v1/auth/refresh", **kwargs)

    rotate = {"refresh_token": pair["refresh_token"]}
    await assert_documented(await post(json=rotate), "POST", "/v1/auth/refresh", 200)
    # Within the grace: the same successor comes back, documented the same way.
    await assert_documented(await post(json=rotate), "POST", "/v1/auth/refresh", 200)
    unknown = {"refresh_token": "not-a-refresh-token"}
    await assert_documented(await post(json=unknown), "POST", "/v1/auth/refresh", 401)
    # {} is cookie mode: with no cookie either, 401 (and the cookie cleared).
    await assert_documented(await post(json={}), "POST", "/v1/auth/refresh", 401)
    await assert_documented(await post(json={"refresh_token": 7}), "POST", "/v1/auth/refresh", 400)
    await assert_documented(await post(data=rotate), "POST", "/v1/auth/refresh", 415)
    huge = {"refresh_token": "x" * 20_000}
    await assert_documented(await post(json=huge), "POST", "/v1/auth/refresh", 413)


async def test_cookie_mode_answers_as_documented(client: Any) -> None:
    """Login, refresh (200, 403, 401) and logout in cookie mode (API.md "Browsers")."""
    await register(client)
    credentials = {"username": "alice", "password": TEST_PASSWORD, "cookie": True}
    response = await client.post("/v1/auth/login", json=credentials)
    await assert_documented(response, "POST", "/v1/auth/login", 200)
    pair = await response.json()
    cookie = {
        "Cookie": f"__Host-authsvc-refresh={response.cookies['__Host-authsvc-refresh'].value}"
    }
    client.session.cookie_jar.clear()  # the test sends the Cookie header it means
    refused = await client.post("/v1/auth/refresh", headers=cookie)
    await assert_documented(refused, "POST", "/v1/auth/refresh", 403)
    csrf = {"X-CSRF-Token": pair["csrf_token"]}
    rotated = await client.post("/v1/auth/refresh", headers={**cookie, **csrf})
    await assert_documented(rotated, "POST", "/v1/auth/refresh", 200)
    tokens = await rotated.json()
    cookie = {"Cookie": f"__Host-authsvc-refresh={rotated.cookies['__Host-authsvc-refresh'].value}"}
    client.session.cookie_jar.clear()
    logout = await client.post("/v1/auth/logout", headers={**bearer(tokens), **cookie})
    await assert_documented(logout, "POST", "/v1/auth/logout", 204)
    gone = await client.post("/v1/auth/refresh", json={}, headers={**cookie, **csrf})
    await assert_documented(gone, "POST", "/v1/auth/refresh", 401)
    assert gone.cookies["__Host-authsvc-refresh"]["max-age"] == "0"


# Bearer endpoints


@pytest.mark.parametrize(("method", "template", "path"), BEARER_ENDPOINTS)
async def test_bearer_endpoint_without_or_with_a_bad_token_answers_as_documented(
    client: Any, method: str, template: str, path: str
) -> None:
    missing = await client.request(method, path)
    await assert_documented(missing, method, template, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    bad = await client.request(method, path, headers={"Authorization": "Bearer not.a.jwt"})
    await assert_documented(bad, method, template, 401)
    assert bad.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_session_endpoints_answer_as_documented(client: Any) -> None:
    await register(client)
    pair = await login(client, device="phone")
    other = await login(client)  # no device: the session list gives null
    auth = bearer(pair)

    sessions = await client.get("/v1/auth/sessions", headers=auth)
    await assert_documented(sessions, "GET", "/v1/auth/sessions", 200)
    assert len((await sessions.json())["sessions"]) == 2
    await assert_documented(
        await client.get("/v1/auth/me", headers=auth), "GET", "/v1/auth/me", 200
    )
    await assert_documented(
        await client.get("/v1/auth/verify", headers=auth), "GET", "/v1/auth/verify", 200
    )
    template = "/v1/auth/sessions/{session_id}"
    delete = await client.delete(f"/v1/auth/sessions/{other['session_id']}", headers=auth)
    await assert_documented(delete, "DELETE", template, 204)
    unknown = await client.delete("/v1/auth/sessions/no-such-session", headers=auth)
    await assert_documented(unknown, "DELETE", template, 404)
    await assert_documented(
        await client.post("/v1/auth/logout", headers=auth), "POST", "/v1/auth/logout", 204
    )
    logout_all = await client.post("/v1/auth/logout-all", headers=bearer(await login(client)))
    await assert_documented(logout_all, "POST", "/v1/auth/logout-all", 204)


# /.well-known/jwks.json


async def test_jwks_of_every_algorithm_answers_as_documented(
    aiohttp_client: Any, settings: Settings
) -> None:
    # Rotated in a second apart just now: all three are published (two wait to sign).
    now = time.time()
    ring = KeyRing(
        [
            SigningKey.create(generate_private_key(alg), created_at=now + index)
            for index, alg in enumerate(["RS256", "ES256", "EdDSA"])
        ]
    )
    client = await aiohttp_client(create_app(settings, key_ring=ring))
    response = await client.get("/.well-known/jwks.json")
    await assert_documented(response, "GET", "/.well-known/jwks.json", 200)
    assert {key["alg"] for key in (await response.json())["keys"]} == {"EdDSA", "ES256", "RS256"}


async def test_jwks_not_modified_answers_as_documented(client: Any) -> None:
    first = await client.get("/.well-known/jwks.json")
    await assert_documented(first, "GET", "/.well-known/jwks.json", 200)
    again = await client.get(
        "/.well-known/jwks.json", headers={"If-None-Match": first.headers["ETag"]}
    )
    await assert_documented(again, "GET", "/.well-known/jwks.json", 304)


# Operations and any path


async def test_health_and_readiness_answer_as_documented(client: Any) -> None:
    await assert_documented(await client.get("/healthz"), "GET", "/healthz", 200)
    await assert_documented(await client.get("/readyz"), "GET", "/readyz", 200)


async def test_healthz_while_the_embedded_store_is_dead_answers_as_documented(
    aiohttp_client: Any, settings: Settings, key_ring: KeyRing
) -> None:
    """The embedded store's supervisor says its process is dead: liveness fails."""
    state = StoreState()
    app = await aiohttp_client(create_app(settings, key_ring=key_ring, embedded_store_state=state))
    await assert_documented(await app.get("/healthz"), "GET", "/healthz", 200)
    state.set_gone(True)
    response = await app.get("/healthz")
    body = await assert_documented(response, "GET", "/healthz", 503)
    assert json.loads(body)["error"] == "store_unavailable"
    assert response.headers["Retry-After"] == str(settings.store_retry_after)
    state.set_gone(False)
    await assert_documented(await app.get("/healthz"), "GET", "/healthz", 200)


async def test_metrics_answer_as_documented(client: Any) -> None:
    await client.get("/healthz")
    body = await assert_documented(await client.get("/metrics"), "GET", "/metrics", 200)
    assert b"authsvc_http_requests_total" in body


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nope", 404),
        ("GET", "/v1/users/123", 404),
        ("GET", "/v1/users", 405),
        ("PUT", "/v1/auth/refresh", 405),
        ("POST", "/.well-known/jwks.json", 405),
        ("DELETE", "/v1/auth/sessions", 405),
    ],
)
async def test_unknown_path_and_wrong_method_answer_as_documented(
    client: Any, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    body = await response.read()
    assert response.status == status, body
    assert_matches_any_path_response(response, body)


async def test_store_outage_answers_as_documented(client: Any, outage_client: Any) -> None:
    """Tokens from a live app, presented to one whose store is down: 503 everywhere."""
    await register(client)
    pair = await login(client)
    auth = bearer(pair)
    credentials = {"username": "alice", "password": TEST_PASSWORD}
    requests: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "/v1/users", "/v1/users", {"json": {**credentials, "username": "bob"}}),
        ("POST", "/v1/auth/login", "/v1/auth/login", {"json": credentials}),
        (
            "POST",
            "/v1/auth/refresh",
            "/v1/auth/refresh",
            {"json": {"refresh_token": pair["refresh_token"]}},
        ),
        *(
            (method, template, path, {"headers": auth})
            for method, template, path in BEARER_ENDPOINTS
        ),
    ]
    for method, template, path, kwargs in requests:
        response = await outage_client.request(method, path, **kwargs)
        await assert_documented(response, method, template, 503)
    await assert_documented(await outage_client.get("/readyz"), "GET", "/readyz", 503)
    await assert_documented(await outage_client.get("/healthz"), "GET", "/healthz", 200)


# The OAuth surface


async def test_authorization_server_metadata_answers_as_documented(make_client: Any) -> None:
    for password_grant in (False, True):
        client = await make_client(password_grant=password_grant)
        response = await client.get("/.well-known/oauth-authorization-server")
        await assert_documented(response, "GET", "/.well-known/oauth-authorization-server", 200)
        grants = (await response.json())["grant_types_supported"]
        assert ("password" in grants) is password_grant


async def test_oauth_token_answers_as_documented(client: Any) -> None:
    await register(client)
    pair = await login(client)

    async def post(**kwargs: Any) -> Any:
        return await client.post("/oauth/token", **kwargs)

    grant = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    await assert_documented(await post(data=grant), "POST", "/oauth/token", 200)
    unknown = {"grant_type": "refresh_token", "refresh_token": "not-a-refresh-token"}
    await assert_documented(await post(data=unknown), "POST", "/oauth/token", 400)
    missing = {"grant_type": "refresh_token"}
    await assert_documented(await post(data=missing), "POST", "/oauth/token", 400)
    unsupported = {"grant_type": "client_credentials"}
    await assert_documented(await post(data=unsupported), "POST", "/oauth/token", 400)
    disabled = {"grant_type": "password", "username": "alice", "password": TEST_PASSWORD}
    await assert_documented(await post(data=disabled), "POST", "/oauth/token", 400)
    await assert_documented(await post(json=grant), "POST", "/oauth/token", 415)
    huge = {"grant_type": "refresh_token", "refresh_token": "x" * 20_000}
    await assert_documented(await post(data=huge), "POST", "/oauth/token", 413)
    wrong_method = await client.get("/oauth/token")
    assert wrong_method.status == 405
    assert_matches_any_path_response(wrong_method, await wrong_method.read())


async def test_oauth_password_grant_answers_as_documented(make_client: Any) -> None:
    client = await make_client(password_grant=True, login_rate_limit=RateLimit(3, 60))
    await register(client)
    grant = {"grant_type": "password", "username": "alice", "password": TEST_PASSWORD}
    await assert_documented(
        await client.post("/oauth/token", data=grant), "POST", "/oauth/token", 200
    )
    wrong = {**grant, "password": "not the right password"}
    # Whether the success counted as an attempt or not, the limit is met within 4 more.
    for _ in range(4):
        response = await client.post("/oauth/token", data=wrong)
        if response.status == 429:
            await assert_documented(response, "POST", "/oauth/token", 429)
            break
        await assert_documented(response, "POST", "/oauth/token", 400)
    else:
        pytest.fail("the password grant was never rate limited")


async def test_oauth_revoke_answers_as_documented(client: Any) -> None:
    await register(client)
    pair = await login(client)

    async def post(**kwargs: Any) -> Any:
        return await client.post("/oauth/revoke", **kwargs)

    revoke = {"token": pair["refresh_token"], "token_type_hint": "refresh_token"}
    await assert_documented(await post(data=revoke), "POST", "/oauth/revoke", 200)
    await assert_documented(await post(data={"token": "unknown"}), "POST", "/oauth/revoke", 200)
    hint_only = {"token_type_hint": "refresh_token"}
    await assert_documented(await post(data=hint_only), "POST", "/oauth/revoke", 400)
    await assert_documented(await post(json=revoke), "POST", "/oauth/revoke", 415)
    await assert_documented(await post(data={"token": "x" * 20_000}), "POST", "/oauth/revoke", 413)


async def test_oauth_introspect_answers_as_documented(make_client: Any) -> None:
    client = await make_client(introspection_clients=(INTROSPECTION_CLIENT,))
    await register(client)
    pair = await login(client)
    auth = basic(*INTROSPECTION_CLIENT)

    async def post(**kwargs: Any) -> Any:
        return await client.post("/oauth/introspect", **kwargs)

    token = {"token": pair["access_token"], "token_type_hint": "access_token"}
    active = await post(data=token, headers=auth)
    await assert_documented(active, "POST", "/oauth/introspect", 200)
    assert (await active.json())["active"] is True
    inactive = await post(data={"token": "not.a.jwt"}, headers=auth)
    await assert_documented(inactive, "POST", "/oauth/introspect", 200)
    assert await inactive.json() == {"active": False}
    await assert_documented(await post(data=token), "POST", "/oauth/introspect", 401)
    wrong_secret = basic(INTROSPECTION_CLIENT[0], "not the secret")
    await assert_documented(
        await post(data=token, headers=wrong_secret), "POST", "/oauth/introspect", 401
    )
    await assert_documented(await post(data={}, headers=auth), "POST", "/oauth/introspect", 400)
    await assert_documented(await post(json=token, headers=auth), "POST", "/oauth/introspect", 415)
    await assert_documented(
        await post(data={"token": "x" * 20_000}, headers=auth), "POST", "/oauth/introspect", 413
    )


# Request bodies: the document allows exactly what the server takes. tests/test_schemathesis.py
# checks the same with generated bodies; these are the cases it found, and their neighbours.

TAKES = True
REFUSES = False
REQUEST_BODIES = {
    # RFC 6749 §3.1: a parameter sent without a value counts as omitted.
    "revoke: empty token": ("/oauth/revoke", {"token": ""}, REFUSES),
    "revoke: longest token": ("/oauth/revoke", {"token": "t" * 4096}, TAKES),
    "revoke: token too long": ("/oauth/revoke", {"token": "t" * 4097}, REFUSES),
    "revoke: empty hint": ("/oauth/revoke", {"token": "t", "token_type_hint": ""}, TAKES),
    "introspect: empty token": ("/oauth/introspect", {"token": ""}, REFUSES),
    "token: empty refresh_token": (
        "/oauth/token", {"grant_type": "refresh_token", "refresh_token": ""}, REFUSES
    ),
    "token: empty password": (
        "/oauth/token", {"grant_type": "password", "username": "alice", "password": ""}, REFUSES
    ),
    "token: empty username": (
        "/oauth/token", {"grant_type": "password", "username": "", "password": "p"}, REFUSES
    ),
    "token: longest username": (
        "/oauth/token", {"grant_type": "password", "username": "u" * 256, "password": "p"}, TAKES
    ),
    "token: username too long": (
        "/oauth/token", {"grant_type": "password", "username": "u" * 257, "password": "p"}, REFUSES
    ),
    # §3.2: unknown parameters are ignored, and so are those of the other grant type.
    "revoke: unknown parameters": (
        "/oauth/revoke", {"token": "t", "client_id": "app", "scope": "a b"}, TAKES
    ),
    "introspect: unknown parameters": ("/oauth/introspect", {"token": "t", "x": "y"}, TAKES),
    "token: unknown and other-grant parameters": (
        "/oauth/token",
        {"grant_type": "password", "username": "alice", "password": "p", "scope": "a",
         "refresh_token": "r" * 600},
        TAKES,
    ),
    # Usernames: 1 to 64 characters as sent (and after normalisation) to register; a login
    # takes up to 256, and one no account can have fails like a wrong password.
    "register: longest username": (
        "/v1/users", {"username": "b" * 64, "password": TEST_PASSWORD}, TAKES
    ),
    "register: username too long": (
        "/v1/users", {"username": "c" * 65, "password": TEST_PASSWORD}, REFUSES
    ),
    "register: padded username too long as sent": (
        "/v1/users", {"username": " " * 60 + "carol", "password": TEST_PASSWORD}, REFUSES
    ),
    "register: empty username": ("/v1/users", {"username": "", "password": TEST_PASSWORD}, REFUSES),
    "login: longest username": (
        "/v1/auth/login", {"username": "u" * 256, "password": TEST_PASSWORD}, TAKES
    ),
    "login: username too long": (
        "/v1/auth/login", {"username": "u" * 257, "password": TEST_PASSWORD}, REFUSES
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "takes"), REQUEST_BODIES.values(), ids=REQUEST_BODIES.keys()
)
async def test_the_document_allows_the_request_bodies_the_server_takes(
    make_client: Any, path: str, body: dict[str, str], takes: bool
) -> None:
    assert request_body_allowed("POST", path, body) is takes
    client = await make_client(password_grant=True, introspection_clients=(INTROSPECTION_CLIENT,))
    if path.startswith("/oauth/"):
        response = await client.post(path, data=body, headers=basic(*INTROSPECTION_CLIENT))
    else:
        response = await client.post(path, json=body)
    await assert_documented(response, "POST", path, response.status)
    refused = response.status == 400 and (await response.json())["error"] == "invalid_request"
    assert refused is not takes, await response.text()


async def test_oauth_rate_limits_answer_as_documented(make_client: Any) -> None:
    client = await make_client(
        introspection_clients=(INTROSPECTION_CLIENT,),
        refresh_rate_limit=RateLimit(1, 60),
        client_auth_failure_limit=RateLimit(1, 60),
    )
    await register(client)
    token = (await login(client))["refresh_token"]
    grant = {"grant_type": "refresh_token", "refresh_token": token}
    await assert_documented(
        await client.post("/oauth/token", data=grant), "POST", "/oauth/token", 200
    )
    await assert_documented(
        await client.post("/oauth/token", data=grant), "POST", "/oauth/token", 429
    )
    wrong = {"data": {"token": "x"}, "headers": basic(INTROSPECTION_CLIENT[0], "not it")}
    await assert_documented(
        await client.post("/oauth/introspect", **wrong), "POST", "/oauth/introspect", 401
    )
    await assert_documented(
        await client.post("/oauth/introspect", **wrong), "POST", "/oauth/introspect", 429
    )


async def test_oauth_endpoints_during_a_store_outage_answer_as_documented(
    client: Any, client_for: Any, settings: Settings
) -> None:
    await register(client)
    pair = await login(client)
    outage = await client_for(
        dataclasses.replace(
            settings,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            store_timeout=0.5,
            introspection_clients=(INTROSPECTION_CLIENT,),
        )
    )
    grant = {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"]}
    await assert_documented(
        await outage.post("/oauth/token", data=grant), "POST", "/oauth/token", 503
    )
    revoke = {"token": pair["refresh_token"]}
    await assert_documented(
        await outage.post("/oauth/revoke", data=revoke), "POST", "/oauth/revoke", 503
    )
    introspect = await outage.post(
        "/oauth/introspect",
        data={"token": pair["access_token"]},
        headers=basic(*INTROSPECTION_CLIENT),
    )
    await assert_documented(introspect, "POST", "/oauth/introspect", 503)
