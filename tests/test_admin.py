"""The operator API (API.md, Operator API) through the real HTTP surface on a real Redis:
every route, its 404, HTTP Basic of AUTHSVC_ADMIN_CLIENTS (RFC 6749 §2.3.1 decoding, unset
refuses all, failures throttled), disabled accounts at login, and the log of every change."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from support import TEST_PASSWORD, bearer, login, register
from support import refresh as refresh_request

from authsvc.config import RateLimit
from authsvc.domain.passwords import Hasher
from authsvc.http import admin

OPS = ("ops", "ops-secret")
NEW_PASSWORD = "an operator chose this passphrase"
UNKNOWN = "0" * 32


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


ADMIN = basic(*OPS)


@pytest.fixture
async def ops(make_client: Any) -> Any:
    return await make_client(admin_clients=(OPS,))


def admin_routes(user_id: str, session_id: str = "AAAAAAAAAAAAAAAAAAAAAA") -> list[tuple[str, str]]:
    """(method, path) of every operator route, from its route table."""
    return [
        (route.method, route.path.format(user_id=user_id, session_id=session_id))
        for route in admin.routes
        if hasattr(route, "method")
    ]


def body_for(path: str) -> dict[str, Any] | None:
    if path.endswith("/password"):
        return {"new_password": NEW_PASSWORD}
    if path.endswith("/roles"):
        return {"roles": ["support"]}
    return None


async def call(client: Any, method: str, path: str, headers: dict[str, str] = ADMIN) -> Any:
    if path.endswith("/v1/admin/users"):
        path += "?username=alice"
    return await client.request(method, path, json=body_for(path), headers=headers)


async def _code(response: Any) -> str:
    return str((await response.json())["error"])


async def test_every_operator_route_refuses_all_while_no_client_is_configured(
    client: Any,
) -> None:
    user = await register(client)
    routes = admin_routes(user["user_id"])
    assert len(routes) == 11  # the table of API.md, GET .../events included
    for method, path in routes:
        for headers in ({}, ADMIN):
            response = await call(client, method, path, headers)
            assert response.status == 401, (method, path)
            assert await _code(response) == "invalid_client"
            assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'
    assert (await login(client))["access_token"]  # nothing was changed


async def test_every_operator_route_refuses_wrong_credentials(ops: Any) -> None:
    user = await register(ops)
    for method, path in admin_routes(user["user_id"]):
        for headers in (
            basic("ops", "wrong"),
            basic("other", "ops-secret"),
            bearer({"access_token": "x"}),
        ):
            response = await call(ops, method, path, headers)
            assert response.status == 401, (method, path)
            assert await _code(response) == "invalid_client"
            assert response.headers["WWW-Authenticate"] == 'Basic realm="authsvc"'


async def test_operator_credentials_are_form_urldecoded(make_client: Any) -> None:
    """RFC 6749 §2.3.1: ``ops%2Dsecret`` and ``ops-secret`` are the same secret."""
    client = await make_client(admin_clients=(OPS,))
    user = await register(client)
    response = await client.get(
        f"/v1/admin/users/{user['user_id']}", headers=basic("ops", "ops%2Dsecret")
    )
    assert response.status == 200


async def test_failed_operator_authentication_is_throttled_per_address(make_client: Any) -> None:
    client = await make_client(admin_clients=(OPS,), client_auth_failure_limit=RateLimit(3, 60))
    user = await register(client)
    path = f"/v1/admin/users/{user['user_id']}"
    for _ in range(3):
        assert (await client.get(path, headers=basic("ops", "guess"))).status == 401
    limited = await client.get(path, headers=basic("ops", "guess"))
    assert limited.status == 429
    assert int(limited.headers["Retry-After"]) > 0
    # Only failures count: the configured client is never refused.
    assert (await client.get(path, headers=ADMIN)).status == 200


async def test_every_operator_route_answers_404_for_an_unknown_user(ops: Any) -> None:
    await register(ops)
    for user_id in (UNKNOWN, "not-a-user-id", "x}:user"):
        for method, path in admin_routes(user_id):
            if path.endswith("/v1/admin/users"):
                path += "?username=nobody"
            response = await ops.request(method, path, json=body_for(path), headers=ADMIN)
            assert response.status == 404, (method, path, await response.text())
            assert await _code(response) == "not_found"


async def test_an_account_is_found_by_username_and_by_id(ops: Any, clock: Any) -> None:
    user = await register(ops)
    await login(ops)
    await login(ops)
    expected = {
        "user_id": user["user_id"],
        "username": "alice",
        "created_at": clock.now,
        "disabled": False,
        "roles": [],
        "session_count": 2,
    }
    by_name = await ops.get("/v1/admin/users", params={"username": " ALICE "}, headers=ADMIN)
    assert by_name.status == 200
    assert await by_name.json() == expected
    assert by_name.headers["Cache-Control"] == "no-store"
    by_id = await ops.get(f"/v1/admin/users/{user['user_id']}", headers=ADMIN)
    assert await by_id.json() == expected
    missing = await ops.get("/v1/admin/users", headers=ADMIN)
    assert missing.status == 400
    assert await _code(missing) == "invalid_request"
    unknown = await ops.get("/v1/admin/users", params={"username": "bob"}, headers=ADMIN)
    assert unknown.status == 404


async def test_an_operator_lists_and_ends_the_sessions_of_an_account(ops: Any) -> None:
    user = await register(ops)
    first = await login(ops, device="phone")
    second, third = await login(ops), await login(ops)
    base = f"/v1/admin/users/{user['user_id']}/sessions"
    listed = await (await ops.get(base, headers=ADMIN)).json()
    own = await (await ops.get("/v1/auth/sessions", headers=bearer(first))).json()
    assert listed["sessions"] == [
        {k: v for k, v in s.items() if k != "current"} for s in own["sessions"]
    ]
    assert {s["session_id"] for s in listed["sessions"]} == {
        p["session_id"] for p in (first, second, third)
    }
    # One session: its access token at once, its refresh token too.
    assert (await ops.delete(f"{base}/{first['session_id']}", headers=ADMIN)).status == 204
    assert (await ops.get("/v1/auth/me", headers=bearer(first))).status == 401
    assert (await refresh_request(ops, first["refresh_token"])).status == 401
    assert (await ops.get("/v1/auth/me", headers=bearer(second))).status == 200
    again = await ops.delete(f"{base}/{first['session_id']}", headers=ADMIN)
    assert again.status == 404
    assert await _code(again) == "not_found"
    # Every session, at once.
    assert (await ops.delete(base, headers=ADMIN)).status == 204
    for ended in (second, third):
        assert (await ops.get("/v1/auth/verify", headers=bearer(ended))).status == 401
        assert (await refresh_request(ops, ended["refresh_token"])).status == 401
    assert (await (await ops.get(base, headers=ADMIN)).json()) == {"sessions": []}
    # Another user's session is not found under this one.
    await register(ops, "bob")
    bobs = await login(ops, "bob")
    response = await ops.delete(f"{base}/{bobs['session_id']}", headers=ADMIN)
    assert response.status == 404
    assert (await ops.get("/v1/auth/me", headers=bearer(bobs))).status == 200


async def test_a_disabled_account_cannot_log_in_and_loses_its_sessions(ops: Any) -> None:
    user = await register(ops)
    pair = await login(ops)
    path = f"/v1/admin/users/{user['user_id']}"
    assert (await ops.post(f"{path}/disable", headers=ADMIN)).status == 204
    assert (await ops.get("/v1/auth/me", headers=bearer(pair))).status == 401
    assert (await refresh_request(ops, pair["refresh_token"])).status == 401
    right = await ops.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
    assert right.status == 403
    assert await _code(right) == "account_disabled"
    wrong = await ops.post("/v1/auth/login", json={"username": "alice", "password": "x" * 20})
    assert wrong.status == 401
    assert await _code(wrong) == "invalid_credentials"
    shown = await (await ops.get(path, headers=ADMIN)).json()
    assert shown["disabled"] is True
    assert shown["session_count"] == 0
    assert (await ops.post(f"{path}/enable", headers=ADMIN)).status == 204
    assert (await login(ops))["access_token"]
    assert (await (await ops.get(path, headers=ADMIN)).json())["disabled"] is False


async def test_a_disabled_account_is_told_only_after_its_password_is_verified(
    ops: Any, monkeypatch: Any
) -> None:
    """The same argon2 verification for the right and the wrong password of a disabled
    account, so the time taken tells nothing to who does not know it."""
    user = await register(ops)
    await ops.post(f"/v1/admin/users/{user['user_id']}/disable", headers=ADMIN)
    verified: list[str] = []
    verify = Hasher.verify

    async def counted(self: Hasher, password_hash: str, password: str) -> Any:
        verified.append(password)
        return await verify(self, password_hash, password)

    monkeypatch.setattr(Hasher, "verify", counted)
    for password in (TEST_PASSWORD, "a wrong password here"):
        await ops.post("/v1/auth/login", json={"username": "alice", "password": password})
    assert verified == [TEST_PASSWORD, "a wrong password here"]


async def test_an_operator_sets_a_password_and_every_session_ends(ops: Any) -> None:
    user = await register(ops)
    pair = await login(ops)
    path = f"/v1/admin/users/{user['user_id']}/password"
    weak = await ops.put(path, json={"new_password": "short"}, headers=ADMIN)
    assert weak.status == 400
    assert await _code(weak) == "weak_password"
    assert (await ops.get("/v1/auth/me", headers=bearer(pair))).status == 200
    assert (await ops.put(path, json={"new_password": NEW_PASSWORD}, headers=ADMIN)).status == 204
    assert (await ops.get("/v1/auth/me", headers=bearer(pair))).status == 401
    assert (await refresh_request(ops, pair["refresh_token"])).status == 401
    old = await ops.post("/v1/auth/login", json={"username": "alice", "password": TEST_PASSWORD})
    assert old.status == 401
    new = await ops.post("/v1/auth/login", json={"username": "alice", "password": NEW_PASSWORD})
    assert new.status == 200


@pytest.mark.parametrize(
    "roles",
    [
        [f"r{i}" for i in range(33)],
        [""],
        ["a" * 65],
        ["has space"],
        ["comma,role"],
        ["caf\u00e9"],
        "support",
        [1],
    ],
)
async def test_roles_outside_the_rules_are_invalid_request(ops: Any, roles: Any) -> None:
    user = await register(ops)
    path = f"/v1/admin/users/{user['user_id']}/roles"
    response = await ops.put(path, json={"roles": roles}, headers=ADMIN)
    assert response.status == 400
    assert await _code(response) == "invalid_request"
    assert (await (await ops.get(f"/v1/admin/users/{user['user_id']}", headers=ADMIN)).json())[
        "roles"
    ] == []


async def test_an_operator_sets_roles_within_the_rules(ops: Any) -> None:
    user = await register(ops)
    roles = ["a" * 64, "billing:read", "x.y_z-1", *[f"r{i}" for i in range(29)]]
    path = f"/v1/admin/users/{user['user_id']}"
    assert (await ops.put(f"{path}/roles", json={"roles": roles}, headers=ADMIN)).status == 204
    assert (await (await ops.get(path, headers=ADMIN)).json())["roles"] == roles
    assert (await ops.put(f"{path}/roles", json={"roles": []}, headers=ADMIN)).status == 204
    assert (await (await ops.get(path, headers=ADMIN)).json())["roles"] == []


async def test_an_operator_deletes_an_account(ops: Any) -> None:
    user = await register(ops)
    pair = await login(ops)
    path = f"/v1/admin/users/{user['user_id']}"
    assert (await ops.delete(path, headers=ADMIN)).status == 204
    assert (await ops.get("/v1/auth/me", headers=bearer(pair))).status == 401
    assert (await refresh_request(ops, pair["refresh_token"])).status == 401
    assert (await ops.get(path, headers=ADMIN)).status == 404
    assert (await ops.delete(path, headers=ADMIN)).status == 404
    again = await register(ops)
    assert again["user_id"] != user["user_id"]


async def test_every_change_is_logged_with_client_action_and_user(
    ops: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user = await register(ops)
    uid = user["user_id"]
    pair = await login(ops)
    caplog.set_level(logging.INFO, logger="authsvc.domain.accounts")
    changes = [
        ("DELETE", f"/v1/admin/users/{uid}/sessions/{pair['session_id']}", "session revoked"),
        ("DELETE", f"/v1/admin/users/{uid}/sessions", "sessions_revoked"),
        ("POST", f"/v1/admin/users/{uid}/disable", "account_disabled"),
        ("POST", f"/v1/admin/users/{uid}/enable", "account_enabled"),
        ("PUT", f"/v1/admin/users/{uid}/password", "password_changed"),
        ("PUT", f"/v1/admin/users/{uid}/roles", "roles_changed"),
        ("DELETE", f"/v1/admin/users/{uid}", "account_deleted"),
    ]
    for method, path, action in changes:
        caplog.clear()
        response = await call(ops, method, path)
        assert response.status == 204, (path, await response.text())
        lines = [r.getMessage() for r in caplog.records if r.name == "authsvc.domain.accounts"]
        mine = [line for line in lines if line.startswith("operator ops: ")]
        assert len(mine) == 1, lines
        assert action in mine[0] and uid in mine[0]
        assert NEW_PASSWORD not in " ".join(lines) and "ops-secret" not in " ".join(lines)
