"""Passwords as NIST SP 800-63B asks (NFKC, length in characters, no guessable passwords)
and account creation that survives redis-py's retries, through HTTP on a real Redis."""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Any

import pytest
import redis.asyncio
from argon2 import PasswordHasher
from support import TEST_PASSWORD

from authsvc.http.appkeys import STORE
from authsvc.store import keyspace

# One password, typed on two keyboards: precomposed accents, and letters followed by
# combining accents. NFKC makes them one.
COMPOSED = "cr\u00e8me br\u00fbl\u00e9e \u00e0 minuit"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


async def _register(client: Any, username: str, password: str) -> Any:
    return await client.post("/v1/users", json={"username": username, "password": password})


async def _login(client: Any, username: str, password: str) -> Any:
    return await client.post("/v1/auth/login", json={"username": username, "password": password})


async def _weak(response: Any) -> str:
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["error"] == "weak_password"
    description: str = body["error_description"]
    return description


# -- normalisation ---------------------------------------------------------------------


async def test_a_password_typed_on_another_keyboard_logs_in(client: Any) -> None:
    assert COMPOSED != DECOMPOSED
    assert (await _register(client, "alice", DECOMPOSED)).status == 201
    assert (await _login(client, "alice", COMPOSED)).status == 200
    assert (await _login(client, "alice", DECOMPOSED)).status == 200
    fullwidth = "\uff34\uff52\uff4f\uff55\uff42\uff41\uff44\uff4f\uff52 \uff58\uff59\uff5a 42"
    assert (await _register(client, "bob", fullwidth)).status == 201
    assert (await _login(client, "bob", unicodedata.normalize("NFKC", fullwidth))).status == 200


async def test_password_length_counts_characters_after_nfkc(make_client: Any) -> None:
    """The ligature U+FB03 is one code point and, after NFKC, three characters ("ffi")."""
    client = await make_client(password_min_length=12)
    ligature = "\ufb03" + "Zq7vLm2pXr"  # 11 code points, 13 characters after NFKC
    assert (await _register(client, "alice", ligature)).status == 201
    # And the other way: 13 code points, 12 characters once the accent is combined.
    short = "Zq7vLm2pXr9e\u0301"
    assert len(short) == 13 and len(unicodedata.normalize("NFKC", short)) == 12
    client13 = await make_client(password_min_length=13)
    description = await _weak(await _register(client13, "bob", short))
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
    assert (await _register(client, "alice", COMPOSED)).status == 201
    runs = Argon2Runs(monkeypatch)
    wrong = DECOMPOSED + " ou deux"
    assert unicodedata.normalize("NFKC", wrong) != wrong
    assert (await _login(client, "alice", wrong)).status == 401
    assert runs.take() == 1
    assert (await _login(client, "mallory", wrong)).status == 401  # the dummy hash
    assert runs.take() == 1
    assert (await _login(client, "alice", DECOMPOSED)).status == 200
    assert runs.take() == 1


async def test_hash_of_an_unnormalised_password_verifies_with_the_legacy_setting_and_is_upgraded(
    make_client: Any, redis_client: redis.asyncio.Redis
) -> None:
    """Accounts made before normalisation (before 2026-12-01) hold a hash of the raw
    password: with AUTHSVC_LEGACY_PASSWORD_HASHES it still logs in (at a second argon2 run
    for every password not in NFKC form, unknown users' included), and the hash is
    replaced by one of the normalised form, which every keyboard types."""
    client = await make_client()
    user = await (await _register(client, "alice", COMPOSED)).json()
    user_key = keyspace.user(user["user_id"])
    legacy = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1).hash(DECOMPOSED)
    await redis_client.hset(user_key, "password_hash", legacy)
    # Without the setting, only the NFKC form is tried.
    assert (await _login(client, "alice", DECOMPOSED)).status == 401

    client = await make_client(legacy_password_hashes=True)
    assert (await _login(client, "alice", DECOMPOSED)).status == 200
    upgraded = (await redis_client.hget(user_key, "password_hash")).decode()
    assert upgraded != legacy
    assert PasswordHasher().verify(upgraded, COMPOSED)
    assert (await _login(client, "alice", COMPOSED)).status == 200
    assert (await _login(client, "alice", "cr\u00e8me br\u00fbl\u00e9e \u00e0 midi")).status == 401


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
    description = await _weak(await _register(client, "alice", password))
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
    description = await _weak(await _register(client, username, password))
    assert description == "password is built from the username or the service's name"


async def test_strong_passwords_that_mention_a_name_are_accepted(client: Any) -> None:
    assert (await _register(client, "alice", f"alice {TEST_PASSWORD}")).status == 201


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
    response = await _register(client, "alice", TEST_PASSWORD)
    assert response.status == 201, await response.text()
    user_id = (await response.json())["user_id"]
    monkeypatch.undo()

    login = await _login(client, "alice", TEST_PASSWORD)
    assert login.status == 200, await login.text()
    me = await client.get(
        "/v1/auth/me", headers={"Authorization": f"Bearer {(await login.json())['access_token']}"}
    )
    assert (await me.json())["user_id"] == user_id
    # And the name is still taken for everyone else.
    assert (await _register(client, "ALICE", TEST_PASSWORD)).status == 409


async def test_concurrent_registrations_of_one_name_make_one_account(
    client: Any, redis_client: redis.asyncio.Redis
) -> None:
    responses = await asyncio.gather(*(_register(client, "alice", TEST_PASSWORD) for _ in range(5)))
    assert sorted(response.status for response in responses) == [201] + [409] * 4
    users = [key async for key in redis_client.scan_iter(match="authsvc:{*}:user")]
    assert len(users) == 1
