"""Attacks on the token surface, one test each, named for what the attacker tries.

RFC 8725 (JWT best current practices) for access tokens, confusion between the two kinds
of token, and bytes in headers that once reached a 500. Every request goes through HTTP
to an app on the suite's Redis.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from support import FakeClock, bearer, login, register
from support import refresh as refresh_request

from authsvc.app import create_app
from authsvc.config import Settings
from authsvc.keys import KeyRing, SigningKey, generate_private_key

BEARER_ROUTES = [
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/auth/verify"),
    ("GET", "/v1/auth/sessions"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("DELETE", "/v1/auth/sessions/AAAAAAAAAAAAAAAAAAAAAA"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _craft(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS compact serialisation with any header, as an attacker writes one by hand."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature]
    )


async def _assert_invalid_token(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert (await response.json())["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def _me(client: Any, token: str) -> Any:
    return await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


async def _session(client: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Register alice and log her in; return her login pair and its verified claims."""
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    return pair, claims


async def _raw_request(client: Any, request: bytes) -> bytes:
    """Send bytes no HTTP client library would send, and return the raw response."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


# -- RFC 8725 §2.1, §3.1: the algorithm ---------------------------------------------------


async def test_alg_none_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    _, claims = await _session(client)
    for alg in ["none", "None", "NONE"]:
        token = _craft({"alg": alg, "kid": key_ring.current.kid, "typ": "at+jwt"}, claims)
        await _assert_invalid_token(await _me(client, token))


async def test_hs256_signed_with_the_public_key_is_refused(client: Any, key_ring: KeyRing) -> None:
    """The classic confusion: the public key (PEM or JWK bytes) used as an HMAC secret."""
    _, claims = await _session(client)
    public_pem = key_ring.current.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_raw = key_ring.current.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {"alg": "HS256", "kid": key_ring.current.kid, "typ": "at+jwt"}
    for secret in [public_pem, public_raw, json.dumps(key_ring.jwks["keys"][0]).encode()]:
        signing_input = _craft(header, claims).rstrip(".")
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _assert_invalid_token(await _me(client, f"{signing_input}.{_b64(mac)}"))


async def test_token_naming_another_alg_of_a_mixed_key_ring_is_refused(
    client_for: Any, settings: Settings, aiohttp_client: Any, clock: FakeClock
) -> None:
    """A token is verified with the algorithm of the key its kid names (RFC 8725 §3.1).

    With an EdDSA and an RS256 key in one ring, a header naming RS256 with the EdDSA key's
    kid once made PyJWT try an RSA verification with an Ed25519 key: a 500.
    """
    eddsa = SigningKey.create(generate_private_key("EdDSA"))
    rsa_key = SigningKey.create(generate_private_key("RS256"), created_at=0)
    ring = KeyRing([rsa_key, eddsa])
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    pair, claims = await _session(client)
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == eddsa.kid
    # Signed by the RSA key, but naming the EdDSA key's kid: each alg meets the other's key.
    for signer, kid in [(rsa_key, eddsa.kid), (eddsa, rsa_key.kid)]:
        token = jwt.encode(
            claims, signer.private_key, algorithm=signer.alg, headers={"kid": kid, "typ": "at+jwt"}
        )
        for method, path in BEARER_ROUTES:
            response = await client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}
            )
            await _assert_invalid_token(response)
    # The rightful tokens of both keys still verify.
    legacy = jwt.encode(
        claims,
        rsa_key.private_key,
        algorithm="RS256",
        headers={"kid": rsa_key.kid, "typ": "at+jwt"},
    )
    assert (await _me(client, legacy)).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# -- RFC 8725 §3.10: the key -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "x' UNION SELECT 'secret",
        "",
        "unknown-kid",
        "*",
    ],
)
async def test_kid_injection_is_refused(client: Any, key_ring: KeyRing, kid: str) -> None:
    """A kid is looked up in the ring, never used as a path, a query or a pattern."""
    _, claims = await _session(client)
    for signer_key in [key_ring.current.private_key, generate_private_key("EdDSA")]:
        token = jwt.encode(
            claims, signer_key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt"}
        )
        await _assert_invalid_token(await _me(client, token))
    # HS256 with an empty secret, the usual companion of a /dev/null kid.
    signing_input = _craft({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, claims).rstrip(".")
    mac = hmac.new(b"", signing_input.encode(), hashlib.sha256).digest()
    await _assert_invalid_token(await _me(client, f"{signing_input}.{_b64(mac)}"))


async def test_jku_and_x5u_headers_are_ignored(client: Any, key_ring: KeyRing) -> None:
    """Keys come from the ring only: a header pointing at the attacker's JWKS changes nothing."""
    _, claims = await _session(client)
    attacker = generate_private_key("EdDSA")
    for extra in [
        {"jku": "https://attacker.example/jwks.json"},
        {"x5u": "https://attacker.example/cert.pem"},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"\0" * 32)}},
    ]:
        headers = {"kid": key_ring.current.kid, "typ": "at+jwt", **extra}
        forged = jwt.encode(claims, attacker, algorithm="EdDSA", headers=headers)
        await _assert_invalid_token(await _me(client, forged))
    # A rightful signature with the same extra header verifies: the header is not used.
    headers = {"kid": key_ring.current.kid, "typ": "at+jwt", "jku": "https://attacker.example/"}
    signed = jwt.encode(claims, key_ring.current.private_key, algorithm="EdDSA", headers=headers)
    assert (await _me(client, signed)).status == 200


# -- RFC 8725 §3.8, §3.9, §3.11: what the token is for --------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT ", "refresh+jwt", "id_token+jwt"])
async def test_token_of_another_typ_is_refused(client: Any, key_ring: KeyRing, typ: str) -> None:
    _, claims = await _session(client)
    token = jwt.encode(
        claims, key_ring.current.private_key, algorithm="EdDSA",
        headers={"kid": key_ring.current.kid, "typ": typ},
    )  # fmt: skip
    await _assert_invalid_token(await _me(client, token))


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "another-service"},
        {"aud": ["another-service"]},
        {"iss": "https://attacker.example"},
        {"iss": None},
    ],
)
async def test_token_for_another_audience_or_issuer_is_refused(
    client: Any, key_ring: KeyRing, changes: dict[str, Any]
) -> None:
    _, claims = await _session(client)
    claims = {k: v for k, v in {**claims, **changes}.items() if v is not None}
    token = jwt.encode(
        claims, key_ring.current.private_key, algorithm="EdDSA",
        headers={"kid": key_ring.current.kid, "typ": "at+jwt"},
    )  # fmt: skip
    await _assert_invalid_token(await _me(client, token))


async def test_expired_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    _, claims = await _session(client)
    claims = {**claims, "exp": claims["iat"] - 5}
    token = jwt.encode(
        claims, key_ring.current.private_key, algorithm="EdDSA",
        headers={"kid": key_ring.current.kid, "typ": "at+jwt"},
    )  # fmt: skip
    await _assert_invalid_token(await _me(client, token))


async def test_not_yet_valid_token_is_refused(client: Any, key_ring: KeyRing) -> None:
    """An nbf in the future is honoured (PyJWT checks it when present)."""
    _, claims = await _session(client)
    claims = {**claims, "nbf": claims["iat"] + 3600}
    token = jwt.encode(
        claims, key_ring.current.private_key, algorithm="EdDSA",
        headers={"kid": key_ring.current.kid, "typ": "at+jwt"},
    )  # fmt: skip
    await _assert_invalid_token(await _me(client, token))


async def test_tampered_payload_is_refused(client: Any) -> None:
    """Another user's id, another session, a later exp: any edit breaks the signature."""
    pair, claims = await _session(client)
    bob = await register(client, "bob")
    bob_pair = await login(client, "bob")
    header, _, signature = pair["access_token"].split(".")
    for changes in [
        {"sub": bob["user_id"], "sid": bob_pair["session_id"]},
        {"exp": claims["exp"] + 86_400},
        {"client_id": "admin"},
    ]:
        payload = _b64(json.dumps({**claims, **changes}).encode())
        await _assert_invalid_token(await _me(client, f"{header}.{payload}.{signature}"))
    # Signature bytes changed, payload intact.
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    await _assert_invalid_token(
        await _me(client, f"{header}.{pair['access_token'].split('.')[1]}.{flipped}")
    )


# -- one kind of token where the other belongs -------------------------------------------


async def test_refresh_token_used_as_a_bearer_token_is_refused(client: Any) -> None:
    pair, _ = await _session(client)
    for method, path in BEARER_ROUTES:
        response = await client.request(
            method, path, headers={"Authorization": f"Bearer {pair['refresh_token']}"}
        )
        await _assert_invalid_token(response)
    assert (await refresh_request(client, pair["refresh_token"])).status == 200


async def test_access_token_used_as_a_refresh_token_is_refused(client: Any) -> None:
    pair, _ = await _session(client)
    response = await refresh_request(client, pair["access_token"])
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_grant"
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


# -- bytes in headers ------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_non_utf8_bytes_in_a_bearer_header_are_refused(
    client: Any, method: str, path: str
) -> None:
    """aiohttp passes non-UTF-8 header bytes on as lone surrogates; they once gave a 500."""
    pair, _ = await _session(client)
    token = pair["access_token"].encode()
    for bad in [b"\xff\xfe" + token, token[:20] + b"\xc3\x28" + token[20:], b"\xe9t\xe9"]:
        raw = await _raw_request(
            client,
            f"{method} {path} HTTP/1.1\r\nHost: authsvc\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer " + bad + b"\r\nContent-Length: 0\r\n\r\n",
        )  # fmt: skip
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line.split()[1] == b"401", raw
        assert b'WWW-Authenticate: Bearer error="invalid_token"' in rest
        assert b'"error":"invalid_token"' in rest
