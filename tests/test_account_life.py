"""An account's life through the real HTTP surface on a real Redis (API.md, Accounts, the
second table): a password change, deleting one's own account, freshness, disabled accounts
and the ``roles`` claim."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import jwt
import redis.asyncio
from support import TEST_PASSWORD, FakeClock, bearer, login, register
from support import refresh as refresh_request

from authsvc.config import RateLimit
from authsvc.domain.passwords import Hasher

NEW_PASSWORD = "a brand new passphrase of mine"
MAX_AGE = 300


def claims_of(pair: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return payload


async def change(client: Any, pair: dict[str, Any], current: str, new: str = NEW_PASSWORD) -> Any:
    return await client.post(
        "/v1/auth/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(pair),
    )


async def delete_me(client: Any, pair: dict[str, Any], password: str = TEST_PASSWORD) -> Any:
    return await client.delete("/v1/users/me", json={"password": password}, headers=bearer(pair))


async def try_login(client: Any, password: str, username: str = "alice") -> Any:
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


async def _code(response: Any) -> str:
    body: dict[str, Any] = await response.json()
    return str(body["error"])


# -- POST /v1/auth/password -----------------------------------------------------------------


async def test_password_change_ends_every_other_session_and_keeps_the_current_one(
    client: Any,
) -> None:
    await register(client)
    current, other, third = [await login(client) for _ in range(3)]
    response = await change(client, current, TEST_PASSWORD)
    assert response.status == 204, await response.text()
    # The other sessions' access tokens and refresh tokens are refused at once.
    for ended in (other, third):
        assert (await client.get("/v1/auth/me", headers=bearer(ended))).status == 401
        assert (await client.get("/v1/auth/verify", headers=bearer(ended))).status == 401
        assert (await refresh_request(client, ended["refresh_token"])).status == 401
    # The current session stays: its access token and its refresh token work.
    assert (await client.get("/v1/auth/me", headers=bearer(current))).status == 200
    assert (await refresh_request(client, current["refresh_token"])).status == 200
    # The new password logs in, the old one does not.
    assert (await try_login(client, NEW_PASSWORD)).status == 200
    old = await try_login(client, TEST_PASSWORD)
    assert old.status == 401
    assert await _code(old) == "invalid_credentials"


async def test_password_change_with_a_wrong_current_password_is_invalid_credentials(
    client: Any,
) -> None:
    await register(client)
    current, other = await login(client), await login(client)
    response = await change(client, current, "not my password at all")
    assert response.status == 401
    assert await _code(response) == "invalid_credentials"
    # Nothing changed: the other session lives, the old password still logs in.
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200
    assert (await try_login(client, TEST_PASSWORD)).status == 200


async def test_wrong_current_passwords_count_toward_the_login_failure_cap(
    make_client: Any,
) -> None:
    client = await make_client(login_failure_limit=RateLimit(3, 3600))
    await register(client)
    pair = await login(client)  # a success clears the log
    for _ in range(3):
        assert (await change(client, pair, "not my password at all")).status == 401
    capped = await change(client, pair, TEST_PASSWORD)
    assert capped.status == 429
    assert await _code(capped) == "rate_limited"
    assert int(capped.headers["Retry-After"]) > 0
    # The cap is the account's: the login form is capped too.
    assert (await try_login(client, TEST_PASSWORD)).status == 429


async def test_password_change_applies_the_password_policy(client: Any) -> None:
    await register(client)
    pair = await login(client)
    for weak in ("short", "alice alice alice", "password1234"):
        response = await change(client, pair, TEST_PASSWORD, weak)
        assert response.status == 400, weak
        assert await _code(response) == "weak_password"
    assert (await try_login(client, TEST_PASSWORD)).status == 200


async def test_password_change_normalises_the_new_password_with_nfkc(client: Any) -> None:
    await register(client)
    pair = await login(client)
    composed = "caf\u00e9 on a long winter afternoon"
    assert (await change(client, pair, TEST_PASSWORD, composed)).status == 204
    assert (await try_login(client, "cafe\u0301 on a long winter afternoon")).status == 200


async def test_password_change_needs_a_token(client: Any) -> None:
    await register(client)
    body = {"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}
    missing = await client.post("/v1/auth/password", json=body)
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    bad = await client.post("/v1/auth/password", json=body, headers={"Authorization": "Bearer x"})
    assert bad.status == 401
    assert await _code(bad) == "invalid_token"


async def test_password_change_and_deletion_need_a_fresh_token(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(sensitive_max_age=MAX_AGE)
    await register(client)
    pair = await login(client)
    clock.advance(MAX_AGE + 1)
    for response in (await change(client, pair, TEST_PASSWORD), await delete_me(client, pair)):
        assert response.status == 401
        assert await _code(response) == "invalid_token"
        assert "issued in the last 300 seconds" in (await response.json())["error_description"]
    # A refresh makes a fresh token, and the account is still there.
    fresh = await (await refresh_request(client, pair["refresh_token"])).json()
    assert (await change(client, fresh, TEST_PASSWORD)).status == 204


async def test_a_login_racing_a_password_change_cannot_survive_it(
    client: Any, redis_client: redis.asyncio.Redis, monkeypatch: Any
) -> None:
    """A login whose password check read the old password before the change started its
    session after it: the change's epoch ends it."""
    await register(client)
    pair = await login(client)
    checking, changed = asyncio.Event(), asyncio.Event()
    verify = Hasher.verify

    async def slow_verify(self: Hasher, password_hash: str, password: str) -> Any:
        result = await verify(self, password_hash, password)
        if password == TEST_PASSWORD and not checking.is_set():
            checking.set()
            await changed.wait()
        return result

    monkeypatch.setattr(Hasher, "verify", slow_verify)

    async def racing_login() -> Any:
        return await try_login(client, TEST_PASSWORD)

    race = asyncio.create_task(racing_login())
    await checking.wait()
    # The change's own check of the current password goes through the patched verify,
    # now that the racing login holds the first one.
    assert (await change(client, pair, TEST_PASSWORD)).status == 204
    changed.set()
    raced = await race
    assert raced.status == 401
    assert await _code(raced) == "invalid_credentials"
    assert await redis_client.zcard(f"authsvc:{{{claims_of(pair)['sub']}}}:sessions") == 1


async def test_a_refresh_racing_a_password_change_leaves_only_the_current_session(
    client: Any,
) -> None:
    await register(client)
    current, other = await login(client), await login(client)
    results = await asyncio.gather(
        change(client, current, TEST_PASSWORD),
        *[refresh_request(client, other["refresh_token"]) for _ in range(5)],
    )
    assert results[0].status == 204
    listed = await client.get("/v1/auth/sessions", headers=bearer(current))
    assert [s["session_id"] for s in (await listed.json())["sessions"]] == [current["session_id"]]
    for response in results[1:]:
        if response.status == 200:  # rotated before the change: ended by it
            successor = await response.json()
            assert (await client.get("/v1/auth/me", headers=bearer(successor))).status == 401


# -- DELETE /v1/users/me ----------------------------------------------------------------------


async def test_deleting_ones_account_ends_every_session_and_frees_the_username(
    client: Any,
) -> None:
    user = await register(client)
    pair, other = await login(client), await login(client)
    response = await delete_me(client, pair)
    assert response.status == 204, await response.text()
    for ended in (pair, other):
        assert (await client.get("/v1/auth/me", headers=bearer(ended))).status == 401
        assert (await client.get("/v1/auth/verify", headers=bearer(ended))).status == 401
        assert (await refresh_request(client, ended["refresh_token"])).status == 401
    gone = await try_login(client, TEST_PASSWORD)
    assert gone.status == 401
    assert await _code(gone) == "invalid_credentials"
    again = await register(client)
    assert again["user_id"] != user["user_id"]
    assert (await try_login(client, TEST_PASSWORD)).status == 200


async def test_deleting_ones_account_with_a_wrong_password_keeps_it(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await delete_me(client, pair, "not my password at all")
    assert response.status == 401
    assert await _code(response) == "invalid_credentials"
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
    missing = await client.delete("/v1/users/me", json={"password": TEST_PASSWORD})
    assert missing.status == 401
    assert await _code(missing) == "invalid_token"


# -- the roles claim --------------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


ADMIN = _basic("ops", "ops-secret")


async def _set_roles(client: Any, user_id: str, roles: list[str]) -> None:
    response = await client.put(
        f"/v1/admin/users/{user_id}/roles", json={"roles": roles}, headers=ADMIN
    )
    assert response.status == 204, await response.text()


async def test_access_tokens_carry_the_roles_and_a_refresh_the_current_ones(
    make_client: Any,
) -> None:
    client = await make_client(
        admin_clients=(("ops", "ops-secret"),), introspection_clients=(("gw", "gw-secret"),)
    )
    user = await register(client)
    pair = await login(client)
    assert claims_of(pair)["roles"] == []
    verify = await client.get("/v1/auth/verify", headers=bearer(pair))
    assert verify.headers["X-Auth-Roles"] == ""
    await _set_roles(client, user["user_id"], ["support", "billing:read"])
    # A token already issued keeps the roles it was issued with.
    assert claims_of(pair)["roles"] == []
    refreshed = await (await refresh_request(client, pair["refresh_token"])).json()
    assert claims_of(refreshed)["roles"] == ["support", "billing:read"]
    assert claims_of(await login(client))["roles"] == ["support", "billing:read"]
    verify = await client.get("/v1/auth/verify", headers=bearer(refreshed))
    assert verify.headers["X-Auth-Roles"] == "support,billing:read"
    introspected = await client.post(
        "/oauth/introspect",
        data={"token": refreshed["access_token"]},
        headers=_basic("gw", "gw-secret"),
    )
    assert (await introspected.json())["roles"] == ["support", "billing:read"]
    old = await client.post(
        "/oauth/introspect", data={"token": pair["access_token"]}, headers=_basic("gw", "gw-secret")
    )
    # The session lives on, and the older token says what it was issued with.
    assert (await old.json())["roles"] == []
    # Cleared: [] again from the next refresh on.
    await _set_roles(client, user["user_id"], [])
    cleared = await (await refresh_request(client, refreshed["refresh_token"])).json()
    assert claims_of(cleared)["roles"] == []


async def test_a_grace_retry_carries_the_roles_of_its_rotation(make_client: Any) -> None:
    client = await make_client(admin_clients=(("ops", "ops-secret"),))
    user = await register(client)
    await _set_roles(client, user["user_id"], ["reader"])
    pair = await login(client)
    first = await (await refresh_request(client, pair["refresh_token"])).json()
    retry = await (await refresh_request(client, pair["refresh_token"])).json()
    assert retry == first
    assert json.loads(json.dumps(claims_of(retry)["roles"])) == ["reader"]
