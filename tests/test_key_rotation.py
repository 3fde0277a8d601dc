"""Key rotation without downtime: publish first, sign later, retire after the last token.

A gateway in these tests caches the JWKS for its max-age and never refetches on an
unknown kid: it must still verify every token authsvc issues through two rotations.
The app's clock is a FakeClock; instances find new key files by polling keys_dir.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import jwt
import pytest
from support import FakeClock, bearer, login, register
from support import refresh as refresh_request

from authsvc.app import create_app
from authsvc.config import Settings
from authsvc.keyrotation import ActiveKeys, RotationPolicy
from authsvc.keys import KeyRing, SigningKey, generate_private_key, write_key_file

MAX_AGE = 60
TTL = 120
POLL = 0.05  # real seconds


class CachingGateway:
    """Verifies access tokens locally with a JWKS it refetches only when its cache expires."""

    def __init__(self, client: Any, clock: FakeClock) -> None:
        self.client, self.clock = client, clock
        self.keys: jwt.PyJWKSet | None = None
        self.fetched_at = 0
        self.failures: list[str] = []

    async def verify(self, access_token: str) -> str:
        if self.keys is None or self.clock.now >= self.fetched_at + MAX_AGE:
            response = await self.client.get("/.well-known/jwks.json")
            assert f"max-age={MAX_AGE}" in response.headers["Cache-Control"]
            self.keys = jwt.PyJWKSet.from_dict(await response.json())
            self.fetched_at = self.clock.now
        kid = jwt.get_unverified_header(access_token)["kid"]
        try:
            key = self.keys[kid]
            jwt.decode(
                access_token, key, algorithms=[key.algorithm_name], audience="authsvc",
                options={"verify_exp": False, "verify_iat": False},
            )  # fmt: skip
        except (KeyError, jwt.InvalidTokenError) as exc:
            self.failures.append(f"{kid}: {exc!r}")
        return str(kid)


@pytest.fixture
def keys_dir(tmp_path: Path, clock: FakeClock) -> Path:
    directory = tmp_path / "keys"
    write_key_file(
        directory, SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now)
    )
    return directory


@pytest.fixture
def rotation_settings(settings: Settings, keys_dir: Path) -> Settings:
    return dataclasses.replace(
        settings, keys_dir=keys_dir, jwks_max_age=MAX_AGE, access_token_ttl=TTL,
        keys_poll_interval=POLL,
    )  # fmt: skip


async def _picked_up(client: Any, kid: str) -> None:
    """Wait for the instance's poll to publish ``kid`` (it looks every POLL seconds)."""
    for _ in range(200):
        keys = (await (await client.get("/.well-known/jwks.json")).json())["keys"]
        if kid in {key["kid"] for key in keys}:
            return
        await asyncio.sleep(POLL)
    raise AssertionError(f"{kid} was never published")


async def test_two_rotations_during_verification_cause_no_failure(
    aiohttp_client: Any, rotation_settings: Settings, keys_dir: Path, clock: FakeClock
) -> None:
    client = await aiohttp_client(
        create_app(rotation_settings, clock=clock, key_ring=KeyRing.from_directory(keys_dir))
    )
    gateway = CachingGateway(client, clock)
    await register(client)
    pair = await login(client)
    (first,) = [path.stem for path in keys_dir.glob("*.pem")]
    signers: list[str] = []
    new_kids: list[str] = []
    for step in range(40):
        if step in (5, 22):
            key = SigningKey.create(generate_private_key("ES256"), created_at=clock.now)
            write_key_file(keys_dir, key)
            await _picked_up(client, key.kid)
            new_kids.append(key.kid)
        pair = await (await refresh_request(client, pair["refresh_token"])).json()
        signers.append(await gateway.verify(pair["access_token"]))
        assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200
        clock.advance(MAX_AGE // 6)
    assert gateway.failures == []
    # Each key signed in turn, and only after the gateway could have fetched it.
    assert list(dict.fromkeys(signers)) == [first, *new_kids]
    published = {
        key["kid"] for key in (await (await client.get("/.well-known/jwks.json")).json())["keys"]
    }
    # The first key's tokens have all expired: it dropped out; the second's have not.
    assert published == set(new_kids)


async def test_a_rotated_in_key_is_published_at_once_and_signs_after_max_age() -> None:
    old = SigningKey.create(generate_private_key("EdDSA"), created_at=1_000)
    new = SigningKey.create(generate_private_key("EdDSA"), created_at=2_000)
    policy = RotationPolicy(publish_before_signing=300, keep_after_signing=900)
    keys = ActiveKeys(KeyRing([old, new]), policy, now=2_000)
    assert keys.signer is old
    assert keys.verifier(new.kid) is new
    keys.update(2_299)
    assert keys.signer is old
    keys.update(2_300)
    assert keys.signer is new
    keys.update(3_199)
    assert keys.verifier(old.kid) is old  # a token old signed at 2,299 may still be live
    keys.update(3_200)
    assert keys.verifier(old.kid) is None
    assert old.kid.encode() not in keys.jwks_json


async def test_the_jwks_carries_an_etag_and_answers_if_none_match_with_304(
    client: Any,
) -> None:
    response = await client.get("/.well-known/jwks.json")
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    again = await client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert await again.read() == b""
    other = await client.get("/.well-known/jwks.json", headers={"If-None-Match": '"stale"'})
    assert other.status == 200


async def test_a_rotation_changes_the_etag(
    aiohttp_client: Any, rotation_settings: Settings, keys_dir: Path, clock: FakeClock
) -> None:
    client = await aiohttp_client(
        create_app(rotation_settings, clock=clock, key_ring=KeyRing.from_directory(keys_dir))
    )
    before = (await client.get("/.well-known/jwks.json")).headers["ETag"]
    key = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now)
    write_key_file(keys_dir, key)
    await _picked_up(client, key.kid)
    response = await client.get("/.well-known/jwks.json", headers={"If-None-Match": before})
    assert response.status == 200
    assert response.headers["ETag"] != before


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_es256_and_rs256_keys_sign_tokens_the_jwks_verifies(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, alg: str
) -> None:
    ring = KeyRing([SigningKey.create(generate_private_key(alg))])  # type: ignore[arg-type]
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    await register(client)
    pair = await login(client)
    header = jwt.get_unverified_header(pair["access_token"])
    assert header["alg"] == alg
    jwk = jwt.PyJWKSet.from_dict(await (await client.get("/.well-known/jwks.json")).json())
    key = jwk[header["kid"]]
    claims = jwt.decode(pair["access_token"], key, algorithms=[alg], audience="authsvc")
    assert claims["sid"] == pair["session_id"]
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


async def test_a_token_naming_one_key_but_signed_with_another_algorithm_is_refused(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> None:
    """With a mixed ring, the kid's key decides the algorithm: no 500, no confusion."""
    ed, ec = (
        SigningKey.create(generate_private_key(alg), created_at=0) for alg in ("EdDSA", "ES256")
    )
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=KeyRing([ed, ec])))
    user = await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    forged = jwt.encode(
        claims, ec.private_key, algorithm="ES256", headers={"kid": ed.kid, "typ": "at+jwt"}
    )
    response = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"
