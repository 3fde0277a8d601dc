"""Sensitive actions need a fresh access token: logout-all, listing sessions and ending
another session take only tokens issued by a login or refresh within SENSITIVE_MAX_AGE."""

from __future__ import annotations

from typing import Any

from support import FakeClock, bearer, login, register
from support import refresh as refresh_request

MAX_AGE = 300


async def _assert_needs_a_fresh_token(response: Any) -> None:
    assert response.status == 401, await response.text()
    body = await response.json()
    assert body["error"] == "invalid_token"
    assert "issued in the last 300 seconds" in body["error_description"]
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def _fresh(client: Any, pair: dict[str, Any]) -> dict[str, Any]:
    response = await refresh_request(client, pair["refresh_token"])
    assert response.status == 200
    fresh: dict[str, Any] = await response.json()
    return fresh


async def test_logout_all_refuses_a_token_older_than_the_max_age(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(sensitive_max_age=MAX_AGE)
    await register(client)
    pair, other = await login(client), await login(client)
    clock.advance(MAX_AGE + 1)
    await _assert_needs_a_fresh_token(
        await client.post("/v1/auth/logout-all", headers=bearer(pair))
    )
    # Nothing ended, and the token still does what is not sensitive.
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
    # A refresh issues a fresh one.
    fresh = await _fresh(client, pair)
    assert (await client.post("/v1/auth/logout-all", headers=bearer(fresh))).status == 204
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 401


async def test_listing_sessions_refuses_a_token_older_than_the_max_age(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(sensitive_max_age=MAX_AGE)
    await register(client)
    pair = await login(client)
    clock.advance(MAX_AGE)  # exactly the max age: still fresh
    assert (await client.get("/v1/auth/sessions", headers=bearer(pair))).status == 200
    clock.advance(1)
    await _assert_needs_a_fresh_token(await client.get("/v1/auth/sessions", headers=bearer(pair)))
    fresh = await _fresh(client, pair)
    assert (await client.get("/v1/auth/sessions", headers=bearer(fresh))).status == 200


async def test_deleting_another_session_refuses_a_stale_token_but_ending_ones_own_does_not(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(sensitive_max_age=MAX_AGE)
    await register(client)
    pair, other = await login(client), await login(client)
    clock.advance(MAX_AGE + 1)
    await _assert_needs_a_fresh_token(
        await client.delete(f"/v1/auth/sessions/{other['session_id']}", headers=bearer(pair))
    )
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200
    # Ending one's own session is a logout, which any live token may ask for.
    response = await client.delete(f"/v1/auth/sessions/{pair['session_id']}", headers=bearer(pair))
    assert response.status == 204
    assert (await client.post("/v1/auth/logout", headers=bearer(other))).status == 204


async def test_a_fresh_token_of_an_ended_session_is_refused(client: Any) -> None:
    """Fresh is not enough: the token's session must be live."""
    await register(client)
    pair, other = await login(client), await login(client)
    assert (await client.post("/v1/auth/logout", headers=bearer(pair))).status == 204
    for response in [
        await client.post("/v1/auth/logout-all", headers=bearer(pair)),
        await client.get("/v1/auth/sessions", headers=bearer(pair)),
        await client.delete(f"/v1/auth/sessions/{other['session_id']}", headers=bearer(pair)),
    ]:
        assert response.status == 401
        assert (await response.json())["error"] == "invalid_token"
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200


async def test_sensitive_max_age_defaults_to_five_minutes(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    clock.advance(301)
    await _assert_needs_a_fresh_token(await client.get("/v1/auth/sessions", headers=bearer(pair)))
