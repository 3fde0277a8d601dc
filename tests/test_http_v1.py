"""The /v1 API, the JWKS and the ops endpoints of docs/api.md, through HTTP on a real Redis."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.parse
from typing import Any

import jwt
import pytest
import redis.asyncio
from argon2 import extract_parameters
from support import TEST_PASSWORD, FakeClock, bearer, every_route, login, refresh, register

from authsvc.config import RateLimit, Settings
from authsvc.http.appkeys import HASHER, STORE
from authsvc.store import keyspace
from authsvc.store.scripts import source
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key

TOKEN_PAIR_FIELDS = {
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
    "session_id",
}
# Random characters, so that any prefix of 12 or more is a strong password.
STRONG = (
    "Zq7vLm2pXr9kTb4wNc6hJd8sFg3yHe5uWa1oQi0eRt7nYb2mVc4xKl9jGh6fDs3a"
    "Pz8rUw5qEt1yIo4pAs7dFg2hJk9lZx6cVb3nMq0wEr8tYu5iOp1aSd4fGh7jKl2z"
    "Xc5vBn8mQw2eRt6yUi0oPa3sDf7gHj1kLz4x"
)
# "ALICE" in fullwidth letters, which NFKC folds to plain "ALICE".
FULLWIDTH_ALICE = "\uff21\uff2c\uff29\uff23\uff25"
SESSION_FIELDS = {
    "session_id",
    "created_at",
    "last_used_at",
    "expires_at",
    "device",
    "user_agent",
    "ip",
    "current",
}


async def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the contract's error shape: exactly error and error_description, as JSON."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == code
    assert isinstance(body["error_description"], str)
    assert body["error_description"]
    return body


async def assert_invalid_token(response: Any) -> None:
    """A bad token: 401 invalid_token with the error attribute of RFC 6750 §3.1."""
    await assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def assert_missing_token(response: Any) -> None:
    """No token: 401 invalid_token, and no error attribute (RFC 6750 §3.1)."""
    await assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def post_user(client: Any, username: str, password: str = TEST_PASSWORD) -> Any:
    return await client.post("/v1/users", json={"username": username, "password": password})


async def post_login(client: Any, username: str = "alice", password: str = TEST_PASSWORD) -> Any:
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


async def jwks_keys(client: Any) -> jwt.PyJWKSet:
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    return jwt.PyJWKSet.from_dict(await response.json())


def access_tokens(settings: Settings, key_ring: KeyRing, **overrides: Any) -> AccessTokens:
    """An AccessTokens like the app's, with some parameters changed."""
    params: dict[str, Any] = {
        "issuer": settings.effective_issuer,
        "audience": settings.audience,
        "client_id": settings.client_id,
        "ttl": settings.access_token_ttl,
    }
    params.update(overrides)
    return AccessTokens(key_ring, **params)


# POST /v1/users


async def test_register_returns_user_id_and_username(client: Any) -> None:
    response = await post_user(client, "alice")
    assert response.status == 201
    assert response.content_type == "application/json"
    assert response.charset == "utf-8"
    body = await response.json()
    assert set(body) == {"user_id", "username"}
    assert body["username"] == "alice"
    assert isinstance(body["user_id"], str)
    assert body["user_id"]


async def test_usernames_are_compared_after_nfkc_casefold_and_trim(client: Any) -> None:
    first = await post_user(client, "  Alice ")
    assert first.status == 201
    assert (await first.json())["username"] == "alice"
    for variant in [FULLWIDTH_ALICE, "ALICE", "alice", "\talice\n"]:
        await assert_error(await post_user(client, variant), 409, "username_taken")
    # A login with any spelling reaches the same account.
    me = await client.get("/v1/auth/me", headers=bearer(await login(client, FULLWIDTH_ALICE)))
    assert (await me.json())["username"] == "alice"


async def test_username_is_1_to_64_characters(client: Any) -> None:
    assert (await post_user(client, "a")).status == 201
    assert (await post_user(client, "b" * 64)).status == 201
    for bad in ["", "   ", "c" * 65, "d" * 300]:
        await assert_error(await post_user(client, bad), 400, "invalid_request")


async def test_username_with_control_characters_is_invalid_request(client: Any) -> None:
    for bad in ["ali\x00ce", "bob\x1b[31m", "carol\u200b"]:
        await assert_error(await post_user(client, bad), 400, "invalid_request")


async def test_password_shorter_than_12_characters_is_weak(client: Any) -> None:
    await assert_error(await post_user(client, "alice", STRONG[:11]), 400, "weak_password")
    assert (await post_user(client, "alice", STRONG[:12])).status == 201


async def test_password_longer_than_128_characters_is_weak(client: Any) -> None:
    await assert_error(await post_user(client, "alice", STRONG[:129]), 400, "weak_password")
    assert (await post_user(client, "alice", STRONG[:128])).status == 201


async def test_password_min_length_setting_applies(make_client: Any) -> None:
    client = await make_client(password_min_length=20)
    await assert_error(await post_user(client, "alice", STRONG[:19]), 400, "weak_password")
    assert (await post_user(client, "alice", STRONG[:20])).status == 201


async def test_password_has_no_composition_rules(client: Any) -> None:
    """No character classes are asked for: lower case only, digits only, spaces, emoji."""
    passwords = [
        "purple monkey dishwasher",
        "739104826351",
        "wobbly kettle lantern",
        "\U0001f511\U0001f422\U0001f335\U0001f3bb\U0001f6b2\U0001f9ed"
        "\U0001f34b\U0001fa81\U0001f989\U0001f6f6\U0001f3b2\U0001f9e9",
    ]
    for i, password in enumerate(passwords):
        assert (await post_user(client, f"user{i}", password)).status == 201


@pytest.mark.parametrize(
    "body",
    [
        {"username": "alice"},
        {"password": TEST_PASSWORD},
        {},
        {"username": 42, "password": TEST_PASSWORD},
        {"username": "alice", "password": None},
        {"username": ["alice"], "password": TEST_PASSWORD},
        [],
        "alice",
        None,
    ],
)
async def test_register_with_missing_or_mistyped_field_is_invalid_request(
    client: Any, body: Any
) -> None:
    response = await client.post(
        "/v1/users", data=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"username": "a",}', b"\xff\xfe"])
async def test_register_with_invalid_json_is_invalid_request(client: Any, raw: bytes) -> None:
    response = await client.post(
        "/v1/users", data=raw, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, 400, "invalid_request")


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
    await assert_error(response, 415, "unsupported_media_type")


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
    await assert_error(response, 413, "payload_too_large")


async def test_body_over_default_max_body_size_is_payload_too_large(client: Any) -> None:
    response = await client.post(
        "/v1/auth/login", json={"username": "alice", "password": "x" * 20_000}
    )
    await assert_error(response, 413, "payload_too_large")


async def test_registration_closed_refuses_with_403(make_client: Any) -> None:
    client = await make_client(registration="closed")
    response = await post_user(client, "alice")
    assert response.status == 403
    await assert_error(response, 403, (await response.json())["error"])
    await assert_error(await post_login(client), 401, "invalid_credentials")


# POST /v1/auth/login


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


async def test_access_token_verifies_with_the_jwks(
    client: Any, settings: Settings, clock: FakeClock
) -> None:
    user = await register(client)
    pair = await login(client)
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    jwks = await jwks_keys(client)
    key = jwks[header["kid"]]
    claims = jwt.decode(
        pair["access_token"],
        key.key,
        algorithms=["EdDSA"],
        audience=settings.audience,
        issuer=settings.effective_issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id"]},
    )
    assert claims["iss"] == settings.effective_issuer
    assert claims["sub"] == user["user_id"]
    assert claims["aud"] == settings.audience
    assert claims["sid"] == pair["session_id"]
    assert claims["client_id"] == settings.client_id
    assert claims["iat"] == clock.now
    assert claims["exp"] == clock.now + settings.access_token_ttl
    assert isinstance(claims["jti"], str)
    assert claims["jti"]


async def test_each_access_token_has_its_own_jti(client: Any) -> None:
    await register(client)
    jtis = {
        jwt.decode((await login(client))["access_token"], options={"verify_signature": False})[
            "jti"
        ]
        for _ in range(3)
    }
    assert len(jtis) == 3


async def test_issuer_and_audience_settings_reach_the_token(make_client: Any) -> None:
    client = await make_client(issuer="https://auth.example.com", audience="api.example.com")
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["iss"] == "https://auth.example.com"
    assert claims["aud"] == "api.example.com"
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


async def test_access_token_ttl_setting_sets_expires_in(make_client: Any, clock: FakeClock) -> None:
    client = await make_client(access_token_ttl=60)
    await register(client)
    pair = await login(client)
    assert pair["expires_in"] == 60
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60


BEARER_READS = [path for method, path in every_route() if method == "GET" and "/auth/" in path]


@pytest.mark.parametrize("path", BEARER_READS)
async def test_what_a_bearer_read_answers_is_never_cached(client: Any, path: str) -> None:
    """The user's identity and sessions (where and on what they are logged in) must not
    stay in a browser's cache or an HTTP/1.0 proxy after logout (RFC 9111 §5.2.2.5)."""
    assert {"/v1/auth/me", "/v1/auth/sessions", "/v1/auth/verify"} <= set(BEARER_READS)
    await register(client)
    response = await client.get(path, headers=bearer(await login(client)))
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"


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


async def test_login_rate_limit_per_username(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    await register(client)
    for _ in range(3):
        response = await post_login(client, "alice", "wrong password!")
        await assert_error(response, 401, "invalid_credentials")
    limited = await post_login(client, "alice", "wrong password!")
    await assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # The right password does not get through either while the window lasts.
    await assert_error(await post_login(client, "alice"), 429, "rate_limited")


async def test_rate_limit_counts_username_variants_together(make_client: Any) -> None:
    """The limit is per normalised username, so spelling it differently does not help."""
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    await register(client)
    for variant in ["alice", "ALICE", " Alice "]:
        assert (await post_login(client, variant, "wrong password!")).status == 401
    limited = await post_login(client, FULLWIDTH_ALICE, "wrong password!")
    await assert_error(limited, 429, "rate_limited")


async def test_login_rate_limit_per_client_address(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(3, 60))
    for name in ["u1", "u2", "u3"]:
        assert (await post_login(client, name, "wrong password!")).status == 401
    limited = await post_login(client, "u4", "wrong password!")
    await assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


async def test_rate_limited_login_does_no_password_work(make_client: Any) -> None:
    client = await make_client(login_rate_limit=RateLimit(1, 60))
    assert (await post_login(client, "alice", "wrong password!")).status == 401
    hasher = client.app[HASHER]
    before = hasher.calls
    assert (await post_login(client, "alice", "wrong password!")).status == 429
    assert hasher.calls == before


async def test_login_upgrades_hash_when_argon2_parameters_change(
    make_client: Any, redis_client: redis.asyncio.Redis
) -> None:
    old = await make_client(argon2_time_cost=1)
    user = await register(old)
    user_key = keyspace.user(user["user_id"])
    old_hash = (await redis_client.hget(user_key, "password_hash")).decode()
    assert extract_parameters(old_hash).time_cost == 1

    new = await make_client(argon2_time_cost=2)
    await login(new)
    new_hash = (await redis_client.hget(user_key, "password_hash")).decode()
    assert new_hash != old_hash
    assert extract_parameters(new_hash).time_cost == 2
    assert new_hash.startswith("$argon2id$")
    # The upgraded hash verifies the same password, with either app.
    await login(new)
    await login(old)


async def test_login_keeps_hash_when_parameters_are_unchanged(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    user = await register(client)
    user_key = keyspace.user(user["user_id"])
    stored = await redis_client.hget(user_key, "password_hash")
    await login(client)
    assert await redis_client.hget(user_key, "password_hash") == stored


async def test_store_keeps_an_argon2id_hash_not_the_password(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    user = await register(client)
    stored = (await redis_client.hget(keyspace.user(user["user_id"]), "password_hash")).decode()
    assert stored.startswith("$argon2id$")
    assert TEST_PASSWORD not in stored


# POST /v1/auth/refresh (rotation, grace and replay: test_rotation.py)


async def test_refresh_with_missing_field_or_wrong_type_is_invalid_request(client: Any) -> None:
    for body in [{}, {"refresh_token": None}, {"refresh_token": 7}, {"token": "x"}]:
        response = await client.post("/v1/auth/refresh", json=body)
        await assert_error(response, 400, "invalid_request")
    response = await client.post("/v1/auth/refresh", data={"refresh_token": "x"})
    await assert_error(response, 415, "unsupported_media_type")


async def test_refresh_of_unknown_token_is_invalid_grant(client: Any) -> None:
    await register(client)
    pair = await login(client)
    user_id, session_id, position, _, mac = pair["refresh_token"].split(".")
    response = await refresh(client, f"{user_id}.{session_id}.{position}.{'B' * 43}.{mac}")
    await assert_error(response, 401, "invalid_grant")
    # A wrong guess does not end the session: the real token still works.
    assert (await refresh(client, pair["refresh_token"])).status == 200


# POST /v1/auth/logout, /v1/auth/logout-all


async def test_logout_ends_that_session(client: Any) -> None:
    await register(client)
    pair = await login(client)
    other = await login(client)
    response = await client.post("/v1/auth/logout", headers=bearer(pair))
    assert response.status == 204
    assert await response.read() == b""
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
    await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))
    await assert_error(await refresh(client, pair["refresh_token"]), 401, "invalid_grant")
    await assert_invalid_token(await client.post("/v1/auth/logout", headers=bearer(pair)))
    # The user's other session goes on.
    assert (await client.get("/v1/auth/me", headers=bearer(other))).status == 200


async def test_logout_without_token_is_refused(client: Any) -> None:
    await assert_missing_token(await client.post("/v1/auth/logout"))
    await assert_missing_token(await client.post("/v1/auth/logout-all"))


async def test_logout_all_ends_every_session_of_the_user(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    sessions = [await login(client, "alice") for _ in range(50)]
    bobs = [await login(client, "bob") for _ in range(2)]
    response = await client.post("/v1/auth/logout-all", headers=bearer(sessions[-1]))
    assert response.status == 204
    assert await response.read() == b""
    for pair in sessions:
        await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
        await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))
        await assert_error(await refresh(client, pair["refresh_token"]), 401, "invalid_grant")
    # Another user's sessions are untouched.
    for pair in bobs:
        assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
        assert (await refresh(client, pair["refresh_token"])).status == 200
    # And a new login afterwards works, alone in the list.
    fresh = await login(client, "alice")
    listed = await (await client.get("/v1/auth/sessions", headers=bearer(fresh))).json()
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]


# GET /v1/auth/sessions, DELETE /v1/auth/sessions/{session_id}


async def test_sessions_lists_each_login_with_its_fields(
    client: Any, clock: FakeClock, settings: Settings
) -> None:
    await register(client)
    phone = await client.post(
        "/v1/auth/login",
        json={"username": "alice", "password": TEST_PASSWORD, "device": "phone"},
        headers={"User-Agent": "PhoneApp/1.0"},
    )
    phone_pair = await phone.json()
    login_time = clock.now
    clock.advance(30)
    laptop = await login(client, device="laptop")

    # Asked with the first token: PyJWT checks iat against the wall clock, which the
    # FakeClock has now run ahead of.
    response = await client.get("/v1/auth/sessions", headers=bearer(phone_pair))
    assert response.status == 200
    assert response.content_type == "application/json"
    sessions = (await response.json())["sessions"]
    assert len(sessions) == 2
    by_id = {s["session_id"]: s for s in sessions}
    assert set(by_id) == {phone_pair["session_id"], laptop["session_id"]}
    for session in sessions:
        assert set(session) == SESSION_FIELDS
        assert session["ip"] == "127.0.0.1"
        for name in ("created_at", "last_used_at", "expires_at"):
            assert isinstance(session[name], int)
    first = by_id[phone_pair["session_id"]]
    assert first["device"] == "phone"
    assert first["user_agent"] == "PhoneApp/1.0"
    assert first["created_at"] == login_time
    assert first["last_used_at"] == login_time
    assert first["expires_at"] == login_time + settings.refresh_token_ttl
    assert first["current"] is True
    second = by_id[laptop["session_id"]]
    assert second["device"] == "laptop"
    assert second["created_at"] == login_time + 30
    assert second["current"] is False


async def test_sessions_current_follows_the_caller(client: Any) -> None:
    await register(client)
    pairs = [await login(client) for _ in range(3)]
    for pair in pairs:
        sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
            "sessions"
        ]
        current = [s["session_id"] for s in sessions if s["current"]]
        assert current == [pair["session_id"]]


async def test_sessions_last_used_at_moves_with_refresh(client: Any, clock: FakeClock) -> None:
    await register(client)
    pair = await login(client)
    clock.advance(100)
    assert (await refresh(client, pair["refresh_token"])).status == 200
    # The first access token still belongs to the session (and its iat is not ahead of
    # the wall clock, which PyJWT checks).
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(pair))).json())[
        "sessions"
    ]
    (session,) = sessions
    assert session["last_used_at"] == clock.now
    assert session["created_at"] == clock.now - 100
    assert session["current"] is True


async def test_sessions_shows_only_the_callers_sessions(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    await login(client, "bob")
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(alice))).json())[
        "sessions"
    ]
    assert [s["session_id"] for s in sessions] == [alice["session_id"]]


async def test_sessions_without_token_is_refused(client: Any) -> None:
    await assert_missing_token(await client.get("/v1/auth/sessions"))


async def test_delete_session_revokes_it(client: Any) -> None:
    await register(client)
    current = await login(client)
    other = await login(client)
    path = f"/v1/auth/sessions/{other['session_id']}"
    response = await client.delete(path, headers=bearer(current))
    assert response.status == 204
    assert await response.read() == b""
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(other)))
    await assert_error(await refresh(client, other["refresh_token"]), 401, "invalid_grant")
    sessions = (await (await client.get("/v1/auth/sessions", headers=bearer(current))).json())[
        "sessions"
    ]
    assert [s["session_id"] for s in sessions] == [current["session_id"]]
    # Again: it is gone.
    await assert_error(await client.delete(path, headers=bearer(current)), 404, "not_found")


async def test_delete_own_current_session_ends_it(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await client.delete(f"/v1/auth/sessions/{pair['session_id']}", headers=bearer(pair))
    assert response.status == 204
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))


async def test_delete_another_users_session_is_not_found(client: Any) -> None:
    await register(client, "alice")
    await register(client, "bob")
    alice = await login(client, "alice")
    bob = await login(client, "bob")
    response = await client.delete(f"/v1/auth/sessions/{bob['session_id']}", headers=bearer(alice))
    await assert_error(response, 404, "not_found")
    assert (await client.get("/v1/auth/me", headers=bearer(bob))).status == 200
    assert (await refresh(client, bob["refresh_token"])).status == 200


@pytest.mark.parametrize(
    "session_id", ["garbage", "x" * 22, "A" * 200, "..%2F..%2Fetc", "%7Balice%7D", "*"]
)
async def test_delete_unknown_session_id_is_not_found(client: Any, session_id: str) -> None:
    await register(client)
    pair = await login(client)
    response = await client.delete(f"/v1/auth/sessions/{session_id}", headers=bearer(pair))
    await assert_error(response, 404, "not_found")
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


async def test_delete_session_without_token_is_refused(client: Any) -> None:
    await register(client)
    pair = await login(client)
    await assert_missing_token(await client.delete(f"/v1/auth/sessions/{pair['session_id']}"))
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# GET /v1/auth/me, /v1/auth/verify


async def test_me_returns_user_and_session(client: Any) -> None:
    user = await register(client, "  Alice ")
    pair = await login(client, "alice")
    response = await client.get("/v1/auth/me", headers=bearer(pair))
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "user_id": user["user_id"],
        "username": "alice",
        "session_id": pair["session_id"],
    }


async def test_verify_returns_identity_headers_and_empty_body(client: Any) -> None:
    user = await register(client)
    pair = await login(client)
    response = await client.get("/v1/auth/verify", headers=bearer(pair))
    assert response.status == 200
    assert await response.read() == b""
    assert response.headers["X-Auth-User-Id"] == user["user_id"]
    assert response.headers["X-Auth-Session-Id"] == pair["session_id"]


async def test_verify_without_token_is_refused(client: Any) -> None:
    response = await client.get("/v1/auth/verify")
    await assert_missing_token(response)
    assert "X-Auth-User-Id" not in response.headers


# Bearer rules


@pytest.mark.parametrize("path", ["/v1/auth/me", "/v1/auth/verify", "/v1/auth/sessions"])
async def test_request_without_token_gets_bearer_challenge_without_error(
    client: Any, path: str
) -> None:
    await assert_missing_token(await client.get(path))


@pytest.mark.parametrize(
    "authorization", ["Basic YWxpY2U6cGFzc3dvcmQ=", "Digest username=alice", "Token abc"]
)
async def test_other_auth_scheme_is_treated_as_missing_token(
    client: Any, authorization: str
) -> None:
    response = await client.get("/v1/auth/me", headers={"Authorization": authorization})
    await assert_missing_token(response)


async def test_bearer_scheme_is_case_insensitive(client: Any) -> None:
    await register(client)
    pair = await login(client)
    for scheme in ["bearer", "BEARER"]:
        response = await client.get(
            "/v1/auth/me", headers={"Authorization": f"{scheme} {pair['access_token']}"}
        )
        assert response.status == 200


@pytest.mark.parametrize(
    "token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer", "x" * 5000]
)
async def test_garbage_token_is_invalid_token(client: Any, token: str) -> None:
    for path in ["/v1/auth/me", "/v1/auth/verify"]:
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        await assert_invalid_token(response)


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer a b"])
async def test_malformed_bearer_header_is_invalid_token(client: Any, authorization: str) -> None:
    response = await client.get("/v1/auth/me", headers={"Authorization": authorization})
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"


async def test_refresh_token_as_bearer_is_invalid_token(client: Any) -> None:
    await register(client)
    pair = await login(client)
    response = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {pair['refresh_token']}"}
    )
    await assert_invalid_token(response)


async def test_token_signed_by_another_key_is_invalid_token(
    client: Any, settings: Settings, key_ring: KeyRing, clock: FakeClock
) -> None:
    user = await register(client)
    pair = await login(client)
    # Same kid as the real key, so only the signature gives it away.
    impostor_key = SigningKey(
        kid=key_ring.current.kid, alg="EdDSA", private_key=generate_private_key("EdDSA")
    )
    impostor = KeyRing([impostor_key])
    forged, _ = access_tokens(settings, impostor).sign(
        user_id=user["user_id"], session_id=pair["session_id"], now=clock.now
    )
    await assert_invalid_token(
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    )
    # And a key the app does not know at all.
    stranger, _ = access_tokens(settings, KeyRing.generated("EdDSA")).sign(
        user_id=user["user_id"], session_id=pair["session_id"], now=clock.now
    )
    await assert_invalid_token(
        await client.get("/v1/auth/verify", headers={"Authorization": f"Bearer {stranger}"})
    )


async def test_expired_access_token_is_invalid_token(
    client: Any, settings: Settings, key_ring: KeyRing, clock: FakeClock
) -> None:
    user = await register(client)
    pair = await login(client)
    minted = access_tokens(settings, key_ring)
    # Expired five seconds ago: past the one second of leeway. The session is live.
    expired, expires_at = minted.sign(
        user_id=user["user_id"],
        session_id=pair["session_id"],
        now=clock.now - settings.access_token_ttl - 5,
    )
    assert expires_at < clock.now
    for path in ["/v1/auth/me", "/v1/auth/verify"]:
        await assert_invalid_token(
            await client.get(path, headers={"Authorization": f"Bearer {expired}"})
        )
    # The same minting with the current time is accepted, so only exp was wrong.
    fresh, _ = minted.sign(user_id=user["user_id"], session_id=pair["session_id"], now=clock.now)
    response = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"})
    assert response.status == 200


@pytest.mark.parametrize(
    "override", [{"audience": "someone-else"}, {"issuer": "https://evil.example.com"}]
)
async def test_token_for_another_audience_or_issuer_is_invalid_token(
    client: Any, settings: Settings, key_ring: KeyRing, clock: FakeClock, override: dict[str, str]
) -> None:
    user = await register(client)
    pair = await login(client)
    token, _ = access_tokens(settings, key_ring, **override).sign(
        user_id=user["user_id"], session_id=pair["session_id"], now=clock.now
    )
    await assert_invalid_token(
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    )


@pytest.mark.parametrize("typ", ["JWT", "id_token+jwt", None])
async def test_token_whose_type_is_not_at_jwt_is_invalid_token(
    client: Any, key_ring: KeyRing, typ: str | None
) -> None:
    user = await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    headers: dict[str, Any] = {"kid": key_ring.current.kid, "typ": typ}
    token = jwt.encode(claims, key_ring.current.private_key, algorithm="EdDSA", headers=headers)
    await assert_invalid_token(
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    )


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "EdDSA", "kid": ["x"], "typ": "at+jwt"},
        {"alg": "EdDSA", "kid": {"a": 1}, "typ": "at+jwt"},
        {"alg": ["EdDSA"], "typ": "at+jwt"},
        {"alg": "HS256", "typ": "at+jwt"},
        {"typ": "at+jwt"},
    ],
)
async def test_token_with_a_malformed_header_is_invalid_token(
    client: Any, key_ring: KeyRing, header: dict[str, Any]
) -> None:
    """Crafted headers (odd types, no alg, a symmetric alg) are refused, never a 500."""
    await register(client)
    pair = await login(client)
    header = {"kid": key_ring.current.kid, **header}
    _, claims, signature = pair["access_token"].split(".")
    crafted_header = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
    token = f"{crafted_header.decode()}.{claims}.{signature}"
    await assert_invalid_token(
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    )


async def test_unsigned_token_is_invalid_token(client: Any, key_ring: KeyRing) -> None:
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    token = jwt.encode(
        claims, None, algorithm="none", headers={"kid": key_ring.current.kid, "typ": "at+jwt"}
    )
    await assert_invalid_token(
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    )


async def test_token_missing_a_required_claim_is_invalid_token(
    client: Any, key_ring: KeyRing
) -> None:
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    for name in ["sid", "client_id", "jti", "sub"]:
        partial = {k: v for k, v in claims.items() if k != name}
        token = jwt.encode(
            partial,
            key_ring.current.private_key,
            algorithm="EdDSA",
            headers={"kid": key_ring.current.kid, "typ": "at+jwt"},
        )
        response = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        await assert_invalid_token(response)


async def test_revoked_sessions_access_tokens_are_rejected_at_once(
    client: Any, clock: FakeClock
) -> None:
    """Before exp: logout, DELETE and logout-all all reach the access tokens."""
    await register(client)
    by_logout, by_delete, by_logout_all, caller = [await login(client) for _ in range(4)]
    for pair in (by_logout, by_delete, by_logout_all, caller):
        assert (await client.get("/v1/auth/verify", headers=bearer(pair))).status == 200

    assert (await client.post("/v1/auth/logout", headers=bearer(by_logout))).status == 204
    response = await client.delete(
        f"/v1/auth/sessions/{by_delete['session_id']}", headers=bearer(caller)
    )
    assert response.status == 204
    for pair in (by_logout, by_delete):
        await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
        await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))

    assert (await client.post("/v1/auth/logout-all", headers=bearer(caller))).status == 204
    for pair in (by_logout_all, caller):
        await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))
        await assert_invalid_token(await client.get("/v1/auth/verify", headers=bearer(pair)))
    # All of it long before the tokens' exp.
    claims = jwt.decode(caller["access_token"], options={"verify_signature": False})
    assert claims["exp"] > clock.now


async def test_access_token_of_an_idle_expired_session_is_rejected(
    make_client: Any, clock: FakeClock
) -> None:
    client = await make_client(refresh_token_ttl=60, access_token_ttl=900)
    await register(client)
    pair = await login(client)
    clock.advance(61)
    await assert_invalid_token(await client.get("/v1/auth/me", headers=bearer(pair)))


# GET /.well-known/jwks.json


async def test_jwks_is_public_and_cacheable(client: Any, settings: Settings) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    cache_control = [part.strip() for part in response.headers["Cache-Control"].split(",")]
    assert "public" in cache_control
    assert f"max-age={settings.jwks_max_age}" in cache_control
    keys = (await response.json())["keys"]
    assert keys
    for key in keys:
        assert {"kid", "alg", "use", "kty"} <= set(key)
        assert key["use"] == "sig"
        assert key["alg"] in {"EdDSA", "ES256", "RS256"}
        # Public halves only.
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_jwks_max_age_follows_the_setting(make_client: Any) -> None:
    client = await make_client(jwks_max_age=42)
    response = await client.get("/.well-known/jwks.json")
    assert "max-age=42" in response.headers["Cache-Control"]


async def test_jwks_holds_the_kid_that_signs_access_tokens(client: Any) -> None:
    await register(client)
    pair = await login(client)
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    assert kid in {key.key_id for key in await jwks_keys(client)}


async def test_jwks_publishes_every_key_of_the_ring(
    make_client: Any, settings: Settings, aiohttp_client: Any, clock: FakeClock
) -> None:
    """An older key stays published, so the tokens it signed keep verifying."""
    from authsvc.server.app import create_app

    # The new key has been published for longer than JWKS_MAX_AGE, so it signs; the old
    # one stopped signing more recently than an access-token lifetime ago.
    old = SigningKey.create(generate_private_key("EdDSA"), created_at=0)
    new = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    app = create_app(settings, clock=clock, key_ring=KeyRing([old, new]))
    client = await aiohttp_client(app)
    kids = {key.key_id for key in await jwks_keys(client)}
    assert kids == {old.kid, new.kid}
    await register(client)
    pair = await login(client)
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == new.kid
    # A token the older key signed, for a live session, is still accepted.
    legacy, _ = access_tokens(settings, KeyRing([old])).sign(
        user_id=(await (await client.get("/v1/auth/me", headers=bearer(pair))).json())["user_id"],
        session_id=pair["session_id"],
        now=clock.now,
    )
    assert (
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {legacy}"})
    ).status == 200


# Operations and the error shape


async def test_healthz_and_readyz_answer_200(client: Any) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


@pytest.mark.parametrize("path", ["/nope", "/v1/auth/nope", "/v1", "/v1/users/123"])
async def test_unknown_path_is_not_found_json(client: Any, path: str) -> None:
    await assert_error(await client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/users"),
        ("GET", "/v1/auth/login"),
        ("PUT", "/v1/auth/refresh"),
        ("POST", "/v1/auth/me"),
        ("DELETE", "/v1/auth/sessions"),
        ("POST", "/.well-known/jwks.json"),
    ],
)
async def test_wrong_method_is_405_with_json_body(client: Any, method: str, path: str) -> None:
    response = await client.request(method, path)
    assert response.status == 405
    body = await assert_error(response, 405, (await response.json())["error"])
    assert body["error"] == "method_not_allowed"
    assert response.headers["Allow"]


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


async def test_settings_fixture_is_the_default_contract(settings: Settings) -> None:
    """The HTTP tests above compare against the defaults that docs/api.md gives."""
    defaults = Settings()
    names = [
        "access_token_ttl",
        "refresh_token_ttl",
        "session_max_age",
        "refresh_reuse_grace",
        "audience",
        "password_min_length",
    ]
    for name in names:
        assert getattr(settings, name) == getattr(defaults, name)
