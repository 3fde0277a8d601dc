"""Every refusal of an access token: no token, a token that is not ours or not valid, and
the token of a session that has ended.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from support import (
    FakeClock,
    access_tokens,
    assert_invalid_token,
    assert_missing_token,
    bearer,
    login,
    register,
)

from authsvc.config import Settings
from authsvc.keys import KeyRing, SigningKey, generate_private_key

# No token


@pytest.mark.parametrize("path", ["/v1/auth/me", "/v1/auth/verify", "/v1/auth/sessions"])
async def test_request_without_token_gets_bearer_challenge_without_error(
    client: Any, path: str
) -> None:
    await assert_missing_token(await client.get(path))


async def test_verify_without_token_is_refused(client: Any) -> None:
    response = await client.get("/v1/auth/verify")
    await assert_missing_token(response)
    assert "X-Auth-User-Id" not in response.headers


async def test_logout_without_token_is_refused(client: Any) -> None:
    await assert_missing_token(await client.post("/v1/auth/logout"))
    await assert_missing_token(await client.post("/v1/auth/logout-all"))


async def test_sessions_without_token_is_refused(client: Any) -> None:
    await assert_missing_token(await client.get("/v1/auth/sessions"))


async def test_delete_session_without_token_is_refused(client: Any) -> None:
    await register(client)
    pair = await login(client)
    await assert_missing_token(await client.delete(f"/v1/auth/sessions/{pair['session_id']}"))
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


@pytest.mark.parametrize(
    "authorization", ["Basic YWxpY2U6cGFzc3dvcmQ=", "Digest username=alice", "Token abc"]
)
async def test_other_auth_scheme_is_treated_as_missing_token(
    client: Any, authorization: str
) -> None:
    response = await client.get("/v1/auth/me", headers={"Authorization": authorization})
    await assert_missing_token(response)


# A bad token


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


# The token of a session that has ended


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
