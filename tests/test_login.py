"""POST /v1/auth/login: the token pair it issues, and failures that look alike whatever
failed (status, body, argon2 runs and store calls). Its limits: test_login_limits.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from typing import Any

import pytest
from support import TEST_PASSWORD, assert_error, bearer, login, post_login, register

from authsvc.config import Settings
from authsvc.http.appkeys import HASHER, STORE
from authsvc.store.scripts import source

TOKEN_PAIR_FIELDS = {
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
    "session_id",
}


async def test_login_returns_token_pair_with_no_store(client: Any, settings: Settings) -> None:
    user = await register(client)
    response = await post_login(client)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert response.content_type == "application/json"
    pair = await response.json()
    assert set(pair) == TOKEN_PAIR_FIELDS
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == settings.access_token_ttl
    assert pair["refresh_expires_in"] == min(settings.refresh_token_ttl, settings.session_max_age)
    for name in ("access_token", "refresh_token", "session_id"):
        assert isinstance(pair[name], str)
        assert pair[name]
    me = await client.get("/v1/auth/me", headers=bearer(pair))
    assert (await me.json())["user_id"] == user["user_id"]


async def test_refresh_token_is_url_safe_with_256_bits_of_randomness(client: Any) -> None:
    await register(client)
    tokens = [(await login(client))["refresh_token"] for _ in range(5)]
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert urllib.parse.quote(token, safe="") == token
        assert re.fullmatch(r"[A-Za-z0-9._~-]+", token)
        # The random part is the fourth dot-separated segment (tokens.py): 32 bytes.
        secret = token.split(".")[3]
        random_bytes = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        assert len(random_bytes) * 8 >= 256


async def test_login_with_missing_field_or_wrong_type_is_invalid_request(client: Any) -> None:
    bodies: list[dict[str, Any]] = [
        {"username": "alice"},
        {"password": TEST_PASSWORD},
        {"username": 1, "password": TEST_PASSWORD},
        {"username": "alice", "password": TEST_PASSWORD, "device": 7},
    ]
    for body in bodies:
        await assert_error(await client.post("/v1/auth/login", json=body), 400, "invalid_request")
    response = await client.post(
        "/v1/auth/login", data=b"{", headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "invalid_request")
    response = await client.post("/v1/auth/login", data={"username": "alice", "password": "x"})
    await assert_error(response, 415, "unsupported_media_type")


# Failures that look alike


async def test_unknown_user_and_wrong_password_look_the_same(client: Any) -> None:
    """Same status, same body, and both pay for one password verification."""
    await register(client)
    hasher = client.app[HASHER]

    before = hasher.calls
    wrong_password = await post_login(client, "alice", "not the right password")
    wrong_password_calls = hasher.calls - before

    before = hasher.calls
    unknown_user = await post_login(client, "mallory", "not the right password")
    unknown_user_calls = hasher.calls - before

    assert wrong_password.status == unknown_user.status == 401
    body = await assert_error(wrong_password, 401, "invalid_credentials")
    assert await unknown_user.json() == body
    assert await wrong_password.read() == await unknown_user.read()
    assert wrong_password.headers.get("WWW-Authenticate") == unknown_user.headers.get(
        "WWW-Authenticate"
    )
    assert wrong_password_calls == unknown_user_calls == 1


class StoreCalls:
    """The commands the app's store sends to Redis, in order, scripts by name."""

    def __init__(self, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        redis_client = client.app[STORE].redis
        scripts = {
            hashlib.sha1(source(name).encode(), usedforsecurity=False).hexdigest(): name
            for name in (
                "login",
                "take_token",
                "count_failure",
                "session_live",
                "rotate",
                "record_event",
            )
        }
        self._calls: list[str] = []
        send = redis_client.execute_command

        async def recorded(*args: Any, **options: Any) -> Any:
            name = str(args[0]).upper()
            self._calls.append(f"script {scripts[args[1]]}" if name == "EVALSHA" else name)
            return await send(*args, **options)

        monkeypatch.setattr(redis_client, "execute_command", recorded)

    def take(self) -> list[str]:
        calls, self._calls = self._calls, []
        return calls


async def test_known_and_unknown_usernames_cost_the_same_store_calls(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call is a round trip: a known username once cost one more (the user hash) than
    an unknown one, which a stopwatch on the login tells apart from the outside."""
    await register(client)
    calls = StoreCalls(client, monkeypatch)
    assert (await post_login(client, "alice", "not the right password")).status == 401
    wrong_password = calls.take()
    assert (await post_login(client, "mallory", "not the right password")).status == 401
    unknown_user = calls.take()
    assert (await post_login(client, "alice", TEST_PASSWORD)).status == 200
    right_password = calls.take()

    # A wrong password records a login_failed event; an unknown user's login makes the same
    # call, recording nothing.
    assert wrong_password == unknown_user
    assert unknown_user[-1] == "script record_event"
    # Up to the password check, the right password costs what an unknown user does; what
    # follows it (clearing the failures, the session) only its holder sees.
    checked = unknown_user[:-1]
    assert right_password[: len(checked)] == checked
    assert right_password[len(checked) :] == ["DEL", "script login"]


async def test_login_with_unusable_username_still_costs_a_verification(client: Any) -> None:
    """A username no account can have answers like an unknown user, hasher included."""
    hasher = client.app[HASHER]
    before = hasher.calls
    await assert_error(await post_login(client, "x" * 100), 401, "invalid_credentials")
    assert hasher.calls - before == 1
