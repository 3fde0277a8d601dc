"""Registration (POST /v1/users): usernames compared as NFKC, case-folded and trimmed;
passwords as NIST SP 800-63B asks (NFKC, length in characters, no composition rules, no
guessable passwords) and kept as argon2id hashes, upgraded at login; account creation that
survives redis-py's retries. Through HTTP on a real Redis."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from typing import Any

import pytest
import redis.asyncio
from argon2 import PasswordHasher, extract_parameters
from support import (
    FULLWIDTH_ALICE,
    TEST_PASSWORD,
    assert_error,
    bearer,
    login,
    post_login,
    post_user,
    register,
)

from authsvc.http.appkeys import STORE
from authsvc.store import keyspace

# One password, typed on two keyboards: precomposed accents, and letters followed by
# combining accents. NFKC makes them one.
COMPOSED = "cr\u00e8me br\u00fbl\u00e9e \u00e0 minuit"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


async def _weak(response: Any) -> str:
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["error"] == "weak_password"
    description: str = body["error_description"]
    return description


# -- POST /v1/users ---------------------------------------------------------------------


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


async def test_registration_closed_refuses_with_403(make_client: Any) -> None:
    client = await make_client(registration="closed")
    response = await post_user(client, "alice")
    assert response.status == 403
    await assert_error(response, 403, (await response.json())["error"])
    await assert_error(await post_login(client), 401, "invalid_credentials")


# -- usernames --------------------------------------------------------------------------


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


# -- password length, and no composition rules ------------------------------------------


# Random characters, so that any prefix of 12 or more is a strong password.
STRONG = (
    "Zq7vLm2pXr9kTb4wNc6hJd8sFg3yHe5uWa1oQi0eRt7nYb2mVc4xKl9jGh6fDs3a"
    "Pz8rUw5qEt1yIo4pAs7dFg2hJk9lZx6cVb3nMq0wEr8tYu5iOp1aSd4fGh7jKl2z"
    "Xc5vBn8mQw2eRt6yUi0oPa3sDf7gHj1kLz4x"
)


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


# -- normalisation ---------------------------------------------------------------------


async def test_a_password_typed_on_another_keyboard_logs_in(client: Any) -> None:
    assert COMPOSED != DECOMPOSED
    assert (await post_user(client, "alice", DECOMPOSED)).status == 201
    assert (await post_login(client, "alice", COMPOSED)).status == 200
    assert (await post_login(client, "alice", DECOMPOSED)).status == 200
    fullwidth = "\uff34\uff52\uff4f\uff55\uff42\uff41\uff44\uff4f\uff52 \uff58\uff59\uff5a 42"
    assert (await post_user(client, "bob", fullwidth)).status == 201
    assert (await post_login(client, "bob", unicodedata.normalize("NFKC", fullwidth))).status == 200


async def test_password_length_counts_characters_after_nfkc(make_client: Any) -> None:
    """The ligature U+FB03 is one code point and, after NFKC, three characters ("ffi")."""
    client = await make_client(password_min_length=12)
    ligature = "\ufb03" + "Zq7vLm2pXr"  # 11 code points, 13 characters after NFKC
    assert (await post_user(client, "alice", ligature)).status == 201
    # And the other way: 13 code points, 12 characters once the accent is combined.
    short = "Zq7vLm2pXr9e\u0301"
    assert len(short) == 13 and len(unicodedata.normalize("NFKC", short)) == 12
    client13 = await make_client(password_min_length=13)
    description = await _weak(await post_user(client13, "bob", short))
    assert "at least 13 characters" in description


class Argon2Runs:
    """argon2 hashes and verifications, counted where argon2-cffi runs them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("hash", "verify"):
            run = getattr(PasswordHasher, name)
            monkeypatch.setattr(PasswordHasher, name, self._counted(run))

    def _counted(self, run: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return run(*args, **kwargs)

        return counted

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


async def test_a_password_not_in_nfkc_form_costs_one_argon2_run(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It once cost two: the NFKC form, then the form as typed, for every such password,
    right or wrong, known user or not (an attacker's choice of input doubled our cost)."""
    assert (await post_user(client, "alice", COMPOSED)).status == 201
    runs = Argon2Runs(monkeypatch)
    wrong = DECOMPOSED + " ou deux"
    assert unicodedata.normalize("NFKC", wrong) != wrong
    assert (await post_login(client, "alice", wrong)).status == 401
    assert runs.take() == 1
    assert (await post_login(client, "mallory", wrong)).status == 401  # the dummy hash
    assert runs.take() == 1
    assert (await post_login(client, "alice", DECOMPOSED)).status == 200
    assert runs.take() == 1


async def test_hash_of_an_unnormalised_password_verifies_with_the_legacy_setting_and_is_upgraded(
    make_client: Any, redis_client: redis.asyncio.Redis
) -> None:
    """Accounts made before normalisation (before 2026-12-01) hold a hash of the raw
    password: with AUTHSVC_LEGACY_PASSWORD_HASHES it still logs in (at a second argon2 run
    for every password not in NFKC form, unknown users' included), and the hash is
    replaced by one of the normalised form, which every keyboard types."""
    client = await make_client()
    user = await (await post_user(client, "alice", COMPOSED)).json()
    user_key = keyspace.user(user["user_id"])
    legacy = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(DECOMPOSED)
    await redis_client.hset(user_key, "password_hash", legacy)
    # Without the setting, only the NFKC form is tried.
    assert (await post_login(client, "alice", DECOMPOSED)).status == 401

    client = await make_client(legacy_password_hashes=True)
    assert (await post_login(client, "alice", DECOMPOSED)).status == 200
    upgraded = (await redis_client.hget(user_key, "password_hash")).decode()
    assert upgraded != legacy
    assert PasswordHasher().verify(upgraded, COMPOSED)
    assert (await post_login(client, "alice", COMPOSED)).status == 200
    assert (
        await post_login(client, "alice", "cr\u00e8me br\u00fbl\u00e9e \u00e0 midi")
    ).status == 401


# -- guessable passwords -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("password1234", "common"),
        ("Password123!", "common"),
        ("qwertyuiopasdf", "common"),
        ("abcabcabcabcabc", "repeat"),
        ("aaaaaaaaaaaaaaaa", "repeat"),
        ("123456789012", "guess"),
    ],
)
async def test_common_or_patterned_password_is_weak_and_says_why(
    client: Any, password: str, reason: str
) -> None:
    description = await _weak(await post_user(client, "alice", password))
    assert description.startswith("password is too easy to guess")
    assert reason in description.lower()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("jordan.mathers", "jordan.mathers1"),
        ("jordan.mathers", "Jordan.Mathers2024"),
        ("margaret", "margaret-margaret"),
        ("alice", "authsvc-authsvc-2024"),
        ("alice", "authsvc password"),
    ],
)
async def test_password_built_from_the_username_or_service_name_is_weak(
    client: Any, username: str, password: str
) -> None:
    description = await _weak(await post_user(client, username, password))
    assert description == "password is built from the username or the service's name"


async def test_strong_passwords_that_mention_a_name_are_accepted(client: Any) -> None:
    assert (await post_user(client, "alice", f"alice {TEST_PASSWORD}")).status == 201


# -- password hashes --------------------------------------------------------------------


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


# -- account creation under retries -------------------------------------------------------


async def test_registration_whose_username_claim_is_retried_keeps_the_account(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py retries a command whose reply was lost; a retried SET NX finds the claim
    its own first run made. That must not read as "taken" and delete the new account."""
    redis_client = client.app[STORE].redis
    original_set = redis_client.set

    async def set_twice(*args: Any, **kwargs: Any) -> Any:
        await original_set(*args, **kwargs)  # ran, but its reply was lost
        return await original_set(*args, **kwargs)

    monkeypatch.setattr(redis_client, "set", set_twice)
    response = await post_user(client, "alice", TEST_PASSWORD)
    assert response.status == 201, await response.text()
    user_id = (await response.json())["user_id"]
    monkeypatch.undo()

    login = await post_login(client, "alice", TEST_PASSWORD)
    assert login.status == 200, await login.text()
    me = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {(await login.json())['access_token']}"}
    )
    assert (await me.json())["user_id"] == user_id
    # And the name is still taken for everyone else.
    assert (await post_user(client, "ALICE", TEST_PASSWORD)).status == 409


async def test_concurrent_registrations_of_one_name_make_one_account(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    responses = await asyncio.gather(*(post_user(client, "alice", TEST_PASSWORD) for _ in range(5)))
    assert sorted(response.status for response in responses) == [201] + [409] * 4
    users = [key async for key in redis_client.scan_iter(match="authsvc:{*}:user")]
    assert len(users) == 1
