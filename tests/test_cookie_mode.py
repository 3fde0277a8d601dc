"""Cookie mode (API.md "Browsers"): the refresh token in the ``__Host-authsvc-refresh``
cookie, the session's CSRF token, and the same rotation, grace and replay rules as the
body form, through HTTP on the suite's Redis.

The test client keeps no cookies (DummyCookieJar): each test sends the ``Cookie`` header
it means, as a browser would after the ``Set-Cookie`` it read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import DummyCookieJar
from support import TEST_PASSWORD, FakeClock, assert_error, bearer, register

from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.server.keyring import ensure_signing_key
from authsvc.tokens.keys import KeyRing
from authsvc.tokens.refresh import RefreshTokens

COOKIE = "__Host-authsvc-refresh"
APP = "https://app.example.com"
ISSUER = "https://auth.example.com"
COOKIE_PAIR_FIELDS = {
    "access_token", "token_type", "expires_in", "refresh_expires_in", "session_id",
    "csrf_token",
}  # fmt: skip


@pytest.fixture
def browser(aiohttp_client: Any, clock: FakeClock, key_ring: KeyRing, settings: Settings) -> Any:
    """Build an app (settings overrides) and a client that keeps no cookies of its own."""

    async def make(**overrides: Any) -> Any:
        merged = dataclasses.replace(settings, issuer=ISSUER, cors_origins=(APP,), **overrides)
        app = create_app(merged, clock=clock, key_ring=key_ring)
        return await aiohttp_client(app, cookie_jar=DummyCookieJar())

    return make


@pytest.fixture
async def client(browser: Any) -> Any:
    return await browser()


async def cookie_login(client: Any, username: str = "alice") -> tuple[dict[str, Any], str]:
    """Log in in cookie mode: the body and the cookie's value."""
    response = await client.post(
        "/v1/auth/login", json={"username": username, "password": TEST_PASSWORD, "cookie": True}
    )
    assert response.status == 200, await response.text()
    return await response.json(), set_cookie(response)[COOKIE].value


def set_cookie(response: Any) -> SimpleCookie:
    """The response's Set-Cookie headers, parsed."""
    cookies: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", ()):
        cookies.load(header)
    return cookies


def assert_cookie_cleared(response: Any) -> None:
    morsel = set_cookie(response)[COOKIE]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert morsel["path"] == "/" and morsel["secure"] and morsel["httponly"]


async def cookie_refresh(
    client: Any, cookie: str | None, csrf: str | None, *, body: object = None, **headers: str
) -> Any:
    """POST /v1/auth/refresh as a browser in cookie mode: no body unless given."""
    sent = dict(headers)
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    if csrf is not None:
        sent["X-CSRF-Token"] = csrf
    if body is None:
        return await client.post("/v1/auth/refresh", headers=sent)
    return await client.post("/v1/auth/refresh", json=body, headers=sent)


async def test_cookie_login_sets_the_host_cookie_and_answers_without_refresh_token(
    client: Any,
) -> None:
    await register(client)
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD, "cookie": True}
    )
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == COOKIE_PAIR_FIELDS
    assert body["token_type"] == "Bearer"
    [header] = response.headers.getall("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
    assert attributes == {"path", "secure", "httponly", "samesite", "max-age"}  # no Domain
    morsel = set_cookie(response)[COOKIE]
    assert morsel["path"] == "/"
    assert morsel["samesite"] == "Strict"
    assert morsel["max-age"] == str(body["refresh_expires_in"])
    assert morsel.value.count(".") == 4  # an ordinary refresh token
    assert morsel.value not in await response.text()
    assert (await client.get("/v1/auth/me", headers=bearer(body))).status == 200


async def test_a_login_without_cookie_sets_no_cookie(client: Any) -> None:
    await register(client)
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD, "cookie": False}
    )
    assert response.status == 200
    assert "Set-Cookie" not in response.headers
    body = await response.json()
    assert "refresh_token" in body and "csrf_token" not in body


@pytest.mark.parametrize("samesite", ["Lax", "None"])
async def test_the_cookie_takes_samesite_from_the_setting(browser: Any, samesite: Any) -> None:
    client = await browser(cookie_samesite=samesite)
    await register(client)
    body, cookie = await cookie_login(client)
    response = await cookie_refresh(client, cookie, body["csrf_token"])
    assert response.status == 200
    assert set_cookie(response)[COOKIE]["samesite"] == samesite
    assert set_cookie(response)[COOKIE]["secure"]


@pytest.mark.parametrize("body", [None, {}], ids=["no body", "empty object"])
async def test_cookie_refresh_rotates_and_keeps_the_csrf_token(client: Any, body: object) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    response = await cookie_refresh(client, cookie, pair["csrf_token"], body=body)
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    successor = await response.json()
    assert set(successor) == COOKIE_PAIR_FIELDS
    assert successor["session_id"] == pair["session_id"]
    assert successor["csrf_token"] == pair["csrf_token"]
    new_cookie = set_cookie(response)[COOKIE]
    assert new_cookie.value != cookie
    assert new_cookie["max-age"] == str(successor["refresh_expires_in"])
    assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 200
    # The chain goes on with the new cookie, and the CSRF token stays the session's.
    again = await cookie_refresh(client, new_cookie.value, pair["csrf_token"])
    assert again.status == 200
    assert (await again.json())["csrf_token"] == pair["csrf_token"]


@pytest.mark.parametrize("csrf", [None, "", "x" * 43], ids=["absent", "empty", "wrong"])
async def test_refresh_without_the_csrf_token_is_refused_and_rotates_nothing(
    client: Any, csrf: str | None
) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    refused = await cookie_refresh(client, cookie, csrf)
    await assert_error(refused, 403, "invalid_csrf")
    assert "Set-Cookie" not in refused.headers
    # Nothing rotated: the cookie's token is still the current one, and rotates once.
    first = await cookie_refresh(client, cookie, pair["csrf_token"])
    assert first.status == 200
    successor = set_cookie(first)[COOKIE].value
    assert (await cookie_refresh(client, successor, pair["csrf_token"])).status == 200


async def test_the_csrf_token_of_another_session_is_refused(client: Any) -> None:
    await register(client)
    await register(client, "bob")
    alice, alice_cookie = await cookie_login(client)
    other, _ = await cookie_login(client)  # alice's second session
    bob, _ = await cookie_login(client, "bob")
    for csrf in (other["csrf_token"], bob["csrf_token"]):
        await assert_error(await cookie_refresh(client, alice_cookie, csrf), 403, "invalid_csrf")
    assert len({alice["csrf_token"], other["csrf_token"], bob["csrf_token"]}) == 3
    assert (await cookie_refresh(client, alice_cookie, alice["csrf_token"])).status == 200


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "null", "https://app.example.com:8443", "http://auth.example.com"],
)
async def test_a_foreign_origin_is_refused_and_rotates_nothing(client: Any, origin: str) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    refused = await cookie_refresh(client, cookie, pair["csrf_token"], Origin=origin)
    await assert_error(refused, 403, "invalid_csrf")
    assert "Set-Cookie" not in refused.headers
    first = await cookie_refresh(client, cookie, pair["csrf_token"])
    assert first.status == 200
    assert (
        await cookie_refresh(client, set_cookie(first)[COOKIE].value, pair["csrf_token"])
    ).status == 200


@pytest.mark.parametrize("origin", [ISSUER, APP], ids=["authsvc's own", "listed"])
async def test_refresh_from_our_own_or_a_listed_origin_is_accepted(
    client: Any, origin: str
) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    response = await cookie_refresh(client, cookie, pair["csrf_token"], Origin=origin)
    assert response.status == 200


async def test_two_refreshes_with_one_cookie_within_the_grace_get_the_same_cookie(
    client: Any,
) -> None:
    """Two tabs refreshing at once with the same cookie: both 200, one successor."""
    await register(client)
    pair, cookie = await cookie_login(client)
    responses = await asyncio.gather(
        *(cookie_refresh(client, cookie, pair["csrf_token"]) for _ in range(2))
    )
    assert [response.status for response in responses] == [200, 200]
    values = {set_cookie(response)[COOKIE].value for response in responses}
    assert len(values) == 1
    bodies = [await response.json() for response in responses]
    assert bodies[0]["access_token"] == bodies[1]["access_token"]
    assert (await cookie_refresh(client, values.pop(), pair["csrf_token"])).status == 200


async def test_replay_of_an_old_cookie_revokes_but_not_without_the_csrf_token(
    client: Any, clock: FakeClock
) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    successor = set_cookie(await cookie_refresh(client, cookie, pair["csrf_token"]))[COOKIE].value
    clock.advance(11)  # past REFRESH_REUSE_GRACE
    # Replayed by who does not have the CSRF token: refused, and the session lives on.
    await assert_error(await cookie_refresh(client, cookie, None), 403, "invalid_csrf")
    following = await cookie_refresh(client, successor, pair["csrf_token"])
    assert following.status == 200
    latest = set_cookie(following)[COOKIE].value
    # Replayed with it: a replay, which revokes the session and clears the cookie.
    replay = await cookie_refresh(client, cookie, pair["csrf_token"])
    await assert_error(replay, 401, "invalid_grant")
    assert_cookie_cleared(replay)
    refused = await cookie_refresh(client, latest, pair["csrf_token"])
    await assert_error(refused, 401, "invalid_grant")
    assert (await client.get("/v1/auth/me", headers=bearer(await following.json()))).status == 401


@pytest.mark.parametrize("body", [None, {}], ids=["no body", "empty object"])
async def test_no_cookie_and_no_body_token_is_invalid_grant(client: Any, body: object) -> None:
    response = await cookie_refresh(client, None, "anything", body=body)
    await assert_error(response, 401, "invalid_grant")
    assert_cookie_cleared(response)


async def test_a_refused_cookie_is_cleared(client: Any) -> None:
    response = await cookie_refresh(client, "not-a-refresh-token", "csrf")
    await assert_error(response, 401, "invalid_grant")
    assert_cookie_cleared(response)


async def test_a_body_token_wins_over_the_cookie(client: Any) -> None:
    await register(client)
    cookie_pair, cookie = await cookie_login(client)
    login = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD}
    )
    body_pair = await login.json()
    response = await cookie_refresh(
        client, cookie, None, body={"refresh_token": body_pair["refresh_token"]}
    )
    assert response.status == 200
    answer = await response.json()
    assert answer["session_id"] == body_pair["session_id"]
    assert "refresh_token" in answer and "csrf_token" not in answer
    assert "Set-Cookie" not in response.headers
    # The cookie's session was not touched.
    assert (await cookie_refresh(client, cookie, cookie_pair["csrf_token"])).status == 200


async def test_a_cookie_token_is_an_ordinary_refresh_token(client: Any, clock: FakeClock) -> None:
    """One chain whichever way its tokens travel: rotated in the body, the cookie's token
    is used up like any other (within the grace: the same successor; after it: a replay)."""
    await register(client)
    pair, cookie = await cookie_login(client)
    response = await client.post("/v1/auth/refresh", json={"refresh_token": cookie})
    assert response.status == 200
    rotated = await response.json()
    assert rotated["session_id"] == pair["session_id"]
    again = await cookie_refresh(client, cookie, pair["csrf_token"])
    assert again.status == 200
    assert set_cookie(again)[COOKIE].value == rotated["refresh_token"]
    clock.advance(11)
    replay = await cookie_refresh(client, cookie, pair["csrf_token"])
    await assert_error(replay, 401, "invalid_grant")
    refused = await client.post(
        "/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )
    await assert_error(refused, 401, "invalid_grant")


@pytest.mark.parametrize("path", ["/v1/auth/logout", "/v1/auth/logout-all"])
async def test_logout_clears_the_cookie_and_its_token_is_refused(client: Any, path: str) -> None:
    await register(client)
    pair, cookie = await cookie_login(client)
    refreshed = await cookie_refresh(client, cookie, pair["csrf_token"])
    latest, tokens = set_cookie(refreshed)[COOKIE].value, await refreshed.json()
    response = await client.post(path, headers={**bearer(tokens), "Cookie": f"{COOKIE}={latest}"})
    assert response.status == 204
    assert_cookie_cleared(response)
    # A refresh answer that reached the browser after the logout brings nothing back.
    refused = await cookie_refresh(client, latest, pair["csrf_token"])
    await assert_error(refused, 401, "invalid_grant")
    assert_cookie_cleared(refused)


async def test_logout_without_the_cookie_sets_none(client: Any) -> None:
    await register(client)
    pair, _ = await cookie_login(client)
    response = await client.post("/v1/auth/logout", headers=bearer(pair))
    assert response.status == 204
    assert "Set-Cookie" not in response.headers


async def test_the_csrf_token_is_the_same_on_every_instance(client: Any, browser: Any) -> None:
    """Instances that share the keys share the CSRF secret: the cookie and its CSRF token
    from one work on another."""
    other = await browser()
    await register(client)
    pair, cookie = await cookie_login(client)
    response = await cookie_refresh(other, cookie, pair["csrf_token"])
    assert response.status == 200
    assert (await response.json())["csrf_token"] == pair["csrf_token"]


def test_the_csrf_token_survives_a_restart(tmp_path: Path) -> None:
    """The secret is the keys directory's refresh-token secret: read again after a restart,
    it gives the same CSRF token; another directory's gives another."""
    for directory in (tmp_path / "a", tmp_path / "b"):
        ensure_signing_key(directory, "EdDSA")
    first = RefreshTokens(KeyRing.from_directory(tmp_path / "a").refresh_secret)
    restarted = RefreshTokens(KeyRing.from_directory(tmp_path / "a").refresh_secret)
    elsewhere = RefreshTokens(KeyRing.from_directory(tmp_path / "b").refresh_secret)
    session_id = "Yp4cN0aV6hJd-Lq2Rs8TwA"
    assert first.csrf_token(session_id) == restarted.csrf_token(session_id)
    assert first.csrf_token(session_id) != elsewhere.csrf_token(session_id)
    assert first.csrf_token(session_id) != first.csrf_token("Zp4cN0aV6hJd-Lq2Rs8TwA")
