"""Key rotation without downtime: publish first, sign later, retire after the last token.

A gateway in these tests caches the JWKS for its max-age and never refetches on an
unknown kid: it must still verify every token authsvc issues through two rotations.
The app's clock is a FakeClock; instances find new key files by polling keys_dir.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from servers import Servers
from support import FakeClock, bearer, login, register
from support import refresh as refresh_request

from authsvc.config import Settings
from authsvc.server.app import create_app
from authsvc.tokens.keys import (
    KeyRing,
    KeyRingError,
    SigningKey,
    generate_private_key,
    load_refresh_secret,
    write_key_file,
)
from authsvc.tokens.rotation import ActiveKeys, RotationPolicy

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
def keys_path(tmp_path: Path, clock: FakeClock) -> Path:
    """A keys directory written in-process (conftest's ``keys_dir`` is the CLI's)."""
    directory = tmp_path / "keys"
    write_key_file(
        directory, SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now)
    )
    return directory


@pytest.fixture
def rotation_settings(settings: Settings, keys_path: Path) -> Settings:
    return dataclasses.replace(
        settings, keys_dir=keys_path, jwks_max_age=MAX_AGE, access_token_ttl=TTL,
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
    aiohttp_client: Any, rotation_settings: Settings, keys_path: Path, clock: FakeClock
) -> None:
    client = await aiohttp_client(
        create_app(rotation_settings, clock=clock, key_ring=KeyRing.from_directory(keys_path))
    )
    gateway = CachingGateway(client, clock)
    await register(client)
    pair = await login(client)
    (first,) = [path.stem for path in keys_path.glob("*.pem")]
    signers: list[str] = []
    new_kids: list[str] = []
    for step in range(40):
        if step in (5, 22):
            key = SigningKey.create(generate_private_key("ES256"), created_at=clock.now)
            write_key_file(keys_path, key)
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
    policy = RotationPolicy(publish_before_signing=300, keep_after_signing=900, sighting_lag=5)
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
    aiohttp_client: Any, rotation_settings: Settings, keys_path: Path, clock: FakeClock
) -> None:
    client = await aiohttp_client(
        create_app(rotation_settings, clock=clock, key_ring=KeyRing.from_directory(keys_path))
    )
    before = (await client.get("/.well-known/jwks.json")).headers["ETag"]
    key = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now)
    write_key_file(keys_path, key)
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


# The schedule: from when a key was published, never from what its file name says.

DAY = 86_400
POLICY = RotationPolicy(publish_before_signing=300, keep_after_signing=900, sighting_lag=5)


def _key(created_at: float, published_at: float | None = None) -> SigningKey:
    key = SigningKey.create(generate_private_key("EdDSA"), created_at=created_at)
    return key if published_at is None else dataclasses.replace(key, published_at=published_at)


def _rotate_by_hand(directory: Path, key: SigningKey, published_at: float) -> None:
    """What ``authsvc keys rotate`` writes: the schedule file, then the key."""
    (directory / f"{key.kid}.json").write_text(json.dumps({"published_at": published_at}))
    write_key_file(directory, key)


def _published_kids(keys: ActiveKeys) -> set[str]:
    return {key["kid"] for key in json.loads(keys.jwks_json)["keys"]}


async def test_a_key_made_ahead_is_published_when_it_appears_and_signs_after_max_age() -> None:
    """A key made a day ago (in staging, a vault, a backup) and copied in now: its kid's
    time is long past, but it signs only once this instance has published it for the
    whole delay, and the key it replaces stays published for the keep after that."""
    now = 1_800_000_000
    current = _key(now - 30 * DAY)
    keys = ActiveKeys(KeyRing([current]), POLICY, now=now)
    ahead = _key(now - DAY)
    keys.replace(KeyRing([current, ahead]), now + 3)
    assert keys.signer is current
    assert _published_kids(keys) == {current.kid, ahead.kid}
    assert keys.at(now + 3 + 299).signer is current
    assert keys.at(now + 3 + 300).signer is ahead
    assert keys.at(now + 3 + 300 + 899).verifier(current.kid) is current
    assert keys.at(now + 3 + 300 + 900).verifier(current.kid) is None
    assert _published_kids(keys) == {ahead.kid}


async def test_instances_that_see_a_rotation_at_different_moments_switch_together(
    tmp_path: Path,
) -> None:
    """The schedule file gives every instance the same moment, whatever the kid says and
    whenever within a poll each instance looks; one started later agrees too."""
    now = 1_800_000_000
    current = _key(now - 30 * DAY)
    write_key_file(tmp_path, current)
    ring = KeyRing.from_directory(tmp_path)
    first, second = (ActiveKeys(ring, POLICY, now=now - 100) for _ in range(2))
    made_ahead = _key(now - DAY)  # its kid's time is a day before it was published
    _rotate_by_hand(tmp_path, made_ahead, published_at=now)
    rotated = KeyRing.from_directory(tmp_path)
    assert rotated.get(made_ahead.kid).published_at == now  # type: ignore[union-attr]
    first.replace(rotated, now + 1)
    second.replace(KeyRing.from_directory(tmp_path), now + 4)
    restarted = ActiveKeys(KeyRing.from_directory(tmp_path), POLICY, now=now + 50)
    for moment in range(now + 50, now + 300 + 900 + 10, 7):
        signers = {keys.at(moment).signer.kid for keys in (first, second, restarted)}
        assert signers == {current.kid if moment < now + 300 else made_ahead.kid}, moment
        assert _published_kids(first) == _published_kids(second) == _published_kids(restarted)
    assert _published_kids(first) == {made_ahead.kid}


async def test_a_replaced_signer_stays_published_for_the_keep_after_it_last_signed() -> None:
    """Whatever the schedule says later (here a schedule file rewritten with an earlier
    time), the key that signed a moment ago stays published for the whole keep."""
    now = 1_800_000_000
    current = _key(now - 30 * DAY)
    waiting = _key(now, published_at=now)
    keys = ActiveKeys(KeyRing([current, waiting]), POLICY, now=now)
    assert keys.at(now + 10).signer is current
    rewritten = dataclasses.replace(waiting, published_at=now - DAY)
    keys.replace(KeyRing([current, rewritten]), now + 10)
    assert keys.signer is rewritten
    assert keys.at(now + 10 + 899).verifier(current.kid) is current
    assert keys.at(now + 10 + 900).verifier(current.kid) is None


async def test_at_start_the_newest_key_whose_time_has_come_signs_at_once() -> None:
    now = 1_800_000_000
    fresh = _key(now)  # keys generate, a second ago: no cache to respect
    assert ActiveKeys(KeyRing([fresh]), POLICY, now=now + 1).signer is fresh
    old, signing, next_one = _key(now - 10 * DAY), _key(now - DAY), _key(now - 10)
    keys = ActiveKeys(KeyRing([old, signing, next_one]), POLICY, now=now)
    assert keys.signer is signing
    assert _published_kids(keys) == {signing.kid, next_one.kid}
    assert keys.at(now + 290).signer is next_one


async def test_a_key_whose_time_is_far_from_now_is_named_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = 1_800_000_000
    current = _key(now - 30 * DAY)
    keys = ActiveKeys(KeyRing([current]), POLICY, now=now)
    ahead, stale = _key(now + 365 * DAY), _key(now - 40 * DAY)
    with caplog.at_level("WARNING", logger="authsvc.tokens.rotation"):
        keys.replace(KeyRing([stale, current, ahead]), now)
    warnings = {record.getMessage().split(":")[0]: record.getMessage() for record in caplog.records}
    # A kid a year ahead: it signs only from then, and the current key signs meanwhile.
    assert "365 days after" in warnings[f"new signing key {ahead.kid}"]
    assert keys.at(now + 30 * DAY).signer is current
    # A kid older than the signer's: never signs, whatever this instance saw.
    assert "will never sign" in warnings[f"new signing key {stale.kid}"]
    assert keys.verifier(stale.kid) is None
    caplog.clear()
    with caplog.at_level("WARNING", logger="authsvc.tokens.rotation"):
        ActiveKeys(KeyRing([current, ahead]), POLICY, now=now).warn_about_clocks(now)
    (record,) = caplog.records
    assert ahead.kid in record.getMessage()
    assert "365 days ahead of this host's clock" in record.getMessage()


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_a_serve_process_signs_with_a_key_copied_in_only_after_max_age(
    servers: Servers, tmp_path: Path, redis_url: str, redis_client: Any
) -> None:
    """A real instance: a key made a day ago and copied in by hand is published at once,
    the current key keeps signing, and the new one signs JWKS_MAX_AGE after it appeared."""
    keys_dir = tmp_path / "keys"
    current = _key(time.time() - 30 * DAY)
    write_key_file(keys_dir, current)
    load_refresh_secret(keys_dir)
    env = {
        "AUTHSVC_REDIS_URL": redis_url,
        "AUTHSVC_KEYS_DIR": str(keys_dir),
        "AUTHSVC_JWKS_MAX_AGE": "2",
        "AUTHSVC_KEYS_POLL_INTERVAL": "0.2",
    }
    server = servers.start(tmp_path / "serve.log", env)

    def published() -> set[str]:
        return {key["kid"] for key in server.request("GET", "/.well-known/jwks.json").body["keys"]}

    assert server.register("alice").status == 201
    made_ahead = _key(time.time() - DAY)
    write_key_file(keys_dir, made_ahead)
    copied_at = time.monotonic()
    while made_ahead.kid not in published():
        assert time.monotonic() < copied_at + 10, server.log()
        time.sleep(0.05)
    early = server.login("alice")
    assert _kid(early["access_token"]) == current.kid
    assert current.kid in published()
    pair = early
    while _kid(pair["access_token"]) != made_ahead.kid:
        assert time.monotonic() < copied_at + 10, server.log()
        time.sleep(0.1)
        pair = server.refresh(pair["refresh_token"]).body
    assert time.monotonic() - copied_at >= 2
    assert published() == {current.kid, made_ahead.kid}
    assert server.request("GET", "/v1/auth/me", token=early["access_token"]).status == 200
    assert server.request("GET", "/v1/auth/me", token=pair["access_token"]).status == 200
    assert f"new signing key {made_ahead.kid}: it has no schedule file" in server.log()


@pytest.mark.parametrize("text", ["", "{", '{"published_at": "soon"}', '{"published_at": NaN}'])
def test_a_schedule_file_that_says_no_time_stops_the_load(tmp_path: Path, text: str) -> None:
    """At start that is a one-line error; a running instance keeps its keys and looks
    again (``load_if_changed``)."""
    key = _key(time.time())
    write_key_file(tmp_path, key)
    (tmp_path / f"{key.kid}.json").write_text(text)
    with pytest.raises(KeyRingError, match=f"{key.kid}.json"):
        KeyRing.from_directory(tmp_path)
    keys = ActiveKeys(KeyRing([_key(time.time() - DAY)]), POLICY)
    assert keys.load_if_changed(tmp_path) is None
