"""What an access token is and what takes it: its header and claims, the settings that
reach them, the JWKS that verifies it, and the Bearer routes that answer with it.

Every refusal of an access token is in test_access_token_refusals.py.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from support import FakeClock, access_tokens, bearer, every_route, login, register

from authsvc.config import Settings
from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key


async def jwks_keys(client: Any) -> jwt.PyJWKSet:
    response = await client.get("/.well-known/jwks.json")
    assert response.status == 200
    return jwt.PyJWKSet.from_dict(await response.json())


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


# GET /v1/auth/me, /v1/auth/verify and the other Bearer routes


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


async def test_bearer_scheme_is_case_insensitive(client: Any) -> None:
    await register(client)
    pair = await login(client)
    for scheme in ["bearer", "BEARER"]:
        response = await client.get(
            "/v1/auth/me", headers={"Authorization": f"{scheme} {pair['access_token']}"}
        )
        assert response.status == 200


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
