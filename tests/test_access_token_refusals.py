"""Every refusal of an access token, once: a table of refusals by where a token is checked.

The columns are the verifier (an ``AccessTokens`` built as the app builds it, called as a
unit) and every Bearer route (``BEARER_ROUTES``, which a test holds to the app's routes).
A row is one refusal: from a live login it makes the Authorization headers to refuse, and,
where it helps to show that only what the row changed is refused, tokens of the same
making that pass, or a token that passes first and is refused later. The verifier column
has the rows about the token itself; the rows about the header or the session are HTTP's.

Every refusal on a route is a 401 ``invalid_token`` in the contract's error shape, with
``WWW-Authenticate: Bearer`` and the ``error`` attribute (RFC 6750 §3.1) unless no token
came at all; no identity header; and, while the row leaves the session live, the session
still answers: a refused request changes nothing. The refusals that need an app of their
own (a mixed key ring, a key deleted or retired) or bytes no client library sends follow
the table, on every Bearer route too.

RFC 8725 (JWT best current practices) names most of the rows: the algorithm (§2.1, §3.1),
the key (§3.10) and what the token is for (§3.8, §3.9, §3.11).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from support import (
    FakeClock,
    access_tokens,
    assert_invalid_token,
    assert_missing_token,
    bearer,
    every_route,
    login,
    raw_request,
    refresh,
    register,
)

from authsvc.config import Settings
from authsvc.errors import InvalidToken
from authsvc.server.app import create_app
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key, write_key_file
from authsvc.tokens.rotation import ActiveKeys

BEARER_ROUTES = [
    ("GET", "/v1/auth/me"),
    ("GET", "/v1/auth/verify"),
    ("GET", "/v1/auth/sessions"),
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("DELETE", "/v1/auth/sessions/{session_id}"),
    ("POST", "/v1/auth/password"),
    ("DELETE", "/v1/users/me"),
    ("GET", "/v1/auth/events"),
]
VERIFIER = ("verifier", "AccessTokens.verify")
TEN_YEARS = 10 * 365 * 86_400


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _craft(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    """A JWS compact serialisation with any header, as an attacker writes one by hand."""
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), signature]
    )


def _hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    signing_input = _craft(header, claims).rstrip(".")
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _signed(claims: dict[str, Any], key: SigningKey, **header: Any) -> str:
    """Claims signed with ``key``, naming it, typed as an access token unless told."""
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers=headers)


def _path(template: str, pair: dict[str, Any]) -> str:
    """A Bearer route's path; DELETE ends the caller's own session, had it been allowed."""
    return template.replace("{session_id}", pair["session_id"])


async def _assert_refused(response: Any, *, missing: bool) -> None:
    if missing:
        await assert_missing_token(response)
    else:
        await assert_invalid_token(response)
    assert "X-Auth-User-Id" not in response.headers
    assert "X-Auth-Session-Id" not in response.headers


# -- the table --------------------------------------------------------------------------


@dataclass
class Alice:
    """Alice, registered and logged in, on an app on the suite's Redis."""

    client: Any
    settings: Settings
    key_ring: KeyRing
    clock: FakeClock
    monkeypatch: pytest.MonkeyPatch
    user: dict[str, Any]
    pair: dict[str, Any]
    claims: dict[str, Any]  # of the pair's access token

    @property
    def ids(self) -> dict[str, str]:
        """Her user and session, as ``AccessTokens.sign`` takes them."""
        return {"user_id": self.user["user_id"], "session_id": self.pair["session_id"]}

    def signed(self, claims: dict[str, Any], **header: Any) -> str:
        """Claims signed with the app's own key, as a real access token would be."""
        return _signed(claims, self.key_ring.current, **header)

    def minted(self, **overrides: Any) -> AccessTokens:
        """Access tokens minted as the app mints them, with some parameters changed."""
        return access_tokens(self.settings, self.key_ring, **overrides)


@dataclass
class Made:
    """What a row makes of Alice's login."""

    refused: list[str | None]  # Authorization headers; None: no header at all
    accepted: list[str] = field(default_factory=list)  # tokens of the same making that pass
    first: list[str] = field(default_factory=list)  # tokens that pass before ``meanwhile``
    meanwhile: Callable[[], Awaitable[None]] | None = None  # after ``first``, before refusals
    then: Callable[[], Awaitable[None]] | None = None  # what still holds after the refusals


def _tokens(*tokens: str) -> list[str | None]:
    return [f"Bearer {token}" for token in tokens]


async def _no_token(alice: Alice) -> Made:
    return Made([None])


async def _another_scheme(alice: Alice) -> Made:
    return Made(["Basic YWxpY2U6cGFzc3dvcmQ=", "Digest username=alice", "Token abc"])


async def _malformed_bearer_header(alice: Alice) -> Made:
    return Made(["Bearer", "Bearer ", "Bearer a b"])


async def _garbage(alice: Alice) -> Made:
    return Made(_tokens("garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "Bearer", "x" * 5000))


async def _refresh_token(alice: Alice) -> Made:
    """One kind of token where the other belongs (its other half: test_attacks.py)."""
    refresh_token = alice.pair["refresh_token"]

    async def still_refreshes() -> None:
        assert (await refresh(alice.client, refresh_token)).status == 200

    return Made(_tokens(refresh_token), then=still_refreshes)


async def _another_key(alice: Alice) -> Made:
    """A key with the real key's kid, so only the signature gives it away; and a key the
    app does not know at all."""
    impostor_key = SigningKey(
        kid=alice.key_ring.current.kid, alg="EdDSA", private_key=generate_private_key("EdDSA")
    )
    forged, _ = access_tokens(alice.settings, KeyRing([impostor_key])).sign(
        **alice.ids, now=alice.clock.now
    )
    stranger, _ = access_tokens(alice.settings, KeyRing.generated("EdDSA")).sign(
        **alice.ids, now=alice.clock.now
    )
    return Made(_tokens(forged, stranger))


async def _our_header_on_another_signature(alice: Alice) -> Made:
    """The header segment authsvc issues picks the key; the signature must still be its."""
    forged, _ = access_tokens(alice.settings, KeyRing.generated("EdDSA")).sign(
        **alice.ids, now=alice.clock.now
    )
    spliced = alice.pair["access_token"].partition(".")[0] + "." + forged.partition(".")[2]
    return Made(_tokens(spliced))


async def _tampered(alice: Alice) -> Made:
    """Another user's id, another session, a later exp: any edit breaks the signature, also
    of a copy of a token already verified (and cached)."""
    bob = await register(alice.client, "bob")
    bob_pair = await login(alice.client, "bob")
    token = alice.pair["access_token"]
    header, payload, signature = token.split(".")
    tampered = [
        f"{header}.{_b64(json.dumps({**alice.claims, **changes}).encode())}.{signature}"
        for changes in [
            {"sub": bob["user_id"], "sid": bob_pair["session_id"]},
            {"exp": alice.claims["exp"] + 86_400},
            {"client_id": "admin"},
            {"sub": "someone-else"},
        ]
    ]
    # Signature bytes changed, payload intact.
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    return Made(_tokens(*tampered, f"{header}.{payload}.{flipped}"), first=[token])


async def _alg_none(alice: Alice) -> Made:
    kid = alice.key_ring.current.kid
    crafted = [
        _craft({"alg": alg, "kid": kid, "typ": "at+jwt"}, alice.claims)
        for alg in ["none", "None", "NONE"]
    ]
    unsigned = jwt.encode(
        alice.claims, None, algorithm="none", headers={"kid": kid, "typ": "at+jwt"}
    )
    return Made(_tokens(*crafted, unsigned))


async def _hs256_with_the_public_key(alice: Alice) -> Made:
    """The classic confusion: the public key (PEM or JWK bytes) used as an HMAC secret."""
    key = alice.key_ring.current
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    public_raw = key.public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    header = {"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}
    secrets = [public_pem, public_raw, json.dumps(alice.key_ring.jwks["keys"][0]).encode()]
    return Made(_tokens(*(_hs256(header, alice.claims, secret) for secret in secrets)))


async def _malformed_jose_header(alice: Alice) -> Made:
    """Crafted headers (odd types, no alg, a symmetric alg) are refused, never a 500."""
    _, claims, signature = alice.pair["access_token"].split(".")
    tokens = []
    for header in [
        {"alg": "EdDSA", "kid": ["x"], "typ": "at+jwt"},
        {"alg": "EdDSA", "kid": {"a": 1}, "typ": "at+jwt"},
        {"alg": ["EdDSA"], "typ": "at+jwt"},
        {"alg": "HS256", "typ": "at+jwt"},
        {"typ": "at+jwt"},
    ]:
        header = {"kid": alice.key_ring.current.kid, **header}
        tokens.append(f"{_b64(json.dumps(header).encode())}.{claims}.{signature}")
    return Made(_tokens(*tokens))


KID_INJECTIONS = [
    "../../../../dev/null",
    "/etc/passwd",
    "' OR '1'='1",
    "x' UNION SELECT 'secret",
    "",
    "unknown-kid",
    "*",
]


async def _kid_injection(alice: Alice) -> Made:
    """A kid is looked up in the ring, never used as a path, a query or a pattern."""
    tokens = []
    for kid in KID_INJECTIONS:
        for signer_key in [alice.key_ring.current.private_key, generate_private_key("EdDSA")]:
            tokens.append(
                jwt.encode(
                    alice.claims,
                    signer_key,
                    algorithm="EdDSA",
                    headers={"kid": kid, "typ": "at+jwt"},
                )
            )
        # HS256 with an empty secret, the usual companion of a /dev/null kid.
        tokens.append(_hs256({"alg": "HS256", "kid": kid, "typ": "at+jwt"}, alice.claims, b""))
    return Made(_tokens(*tokens))


async def _key_named_in_the_header(alice: Alice) -> Made:
    """Keys come from the ring only: a header pointing at the attacker's JWKS changes
    nothing, and a rightful signature with the same header still verifies."""
    attacker = generate_private_key("EdDSA")
    forged = [
        jwt.encode(
            alice.claims,
            attacker,
            algorithm="EdDSA",
            headers={"kid": alice.key_ring.current.kid, "typ": "at+jwt", **extra},
        )
        for extra in [
            {"jku": "https://attacker.example/jwks.json"},
            {"x5u": "https://attacker.example/cert.pem"},
            {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": _b64(b"\0" * 32)}},
        ]
    ]
    rightful = alice.signed(alice.claims, jku="https://attacker.example/")
    return Made(_tokens(*forged), accepted=[rightful])


async def _another_typ(alice: Alice) -> Made:
    # typ None: PyJWT leaves the typ out.
    typs = ["JWT", "jwt", "at+JWT ", "refresh+jwt", "id_token+jwt", None]
    return Made(_tokens(*(alice.signed(alice.claims, typ=typ) for typ in typs)))


async def _another_audience_or_issuer(alice: Alice) -> Made:
    minted = [
        alice.minted(**override).sign(**alice.ids, now=alice.clock.now)[0]
        for override in [{"audience": "someone-else"}, {"issuer": "https://evil.example.com"}]
    ]
    changed = []
    for changes in [
        {"aud": "another-service"},
        {"aud": ["another-service"]},
        {"iss": "https://attacker.example"},
        {"iss": None},
    ]:
        claims = {k: v for k, v in {**alice.claims, **changes}.items() if v is not None}
        changed.append(alice.signed(claims))
    return Made(_tokens(*minted, *changed))


async def _expired(alice: Alice) -> Made:
    """Past the one second of leeway, the session live; the same minting with the current
    time passes, so only exp was wrong."""
    minted, now, ttl = alice.minted(), alice.clock.now, alice.settings.access_token_ttl
    expired, expires_at = minted.sign(**alice.ids, now=now - ttl - 5)
    assert expires_at < now
    just_expired, _ = minted.sign(**alice.ids, now=now - ttl - 2)
    by_claims = alice.signed({**alice.claims, "exp": alice.claims["iat"] - 5})
    fresh, _ = minted.sign(**alice.ids, now=now)
    return Made(_tokens(expired, just_expired, by_claims), accepted=[fresh])


async def _expired_once_verified(alice: Alice) -> Made:
    """A token verified (and cached) before it expired is refused once it has."""
    token, expires_at = alice.minted(ttl=60).sign(**alice.ids, now=alice.clock.now)

    async def expires() -> None:
        alice.clock.advance(expires_at + 2 - alice.clock.now)  # the service clock, passed in

    return Made(_tokens(token), first=[token], meanwhile=expires)


async def _not_yet_valid(alice: Alice) -> Made:
    """An nbf in the future is honoured (PyJWT checks it when present)."""
    return Made(_tokens(alice.signed({**alice.claims, "nbf": alice.claims["iat"] + 3600})))


async def _lasting_longer_than_the_ttl(alice: Alice) -> Made:
    """A stolen key signs whatever exp its thief likes: ten years is not one of ours. One
    second of leeway, as on exp."""
    iat, ttl = alice.claims["iat"], alice.settings.access_token_ttl
    refused = [alice.signed({**alice.claims, "exp": iat + life}) for life in [TEN_YEARS, ttl + 2]]
    accepted = [alice.signed({**alice.claims, "exp": iat + life}) for life in [ttl, ttl + 1]]
    return Made(_tokens(*refused), accepted=accepted)


async def _issued_ahead(alice: Alice) -> Made:
    """Else a stolen key's thief would put iat years ahead and keep exp - iat short; another
    instance's clock may run a little ahead of this one's."""
    ttl = alice.settings.access_token_ttl

    def ahead(seconds: int) -> str:
        iat = alice.claims["iat"] + seconds
        return alice.signed({**alice.claims, "iat": iat, "exp": iat + ttl})

    return Made(_tokens(ahead(TEN_YEARS)), accepted=[ahead(30)])


async def _missing_or_mistyped_claim(alice: Alice) -> Made:
    tokens = []
    for name in ["exp", "iat", "sub", "sid", "client_id", "jti"]:
        assert name in alice.claims
        tokens.append(alice.signed({k: v for k, v in alice.claims.items() if k != name}))
        tokens.append(alice.signed({**alice.claims, name: [1]}))
    return Made(_tokens(*tokens))


def _long_before_exp(alice: Alice) -> None:
    """All of it long before the token's exp: revocation reaches access tokens at once."""
    assert alice.claims["exp"] > alice.clock.now


async def _ended_by_logout(alice: Alice) -> Made:
    async def log_out() -> None:
        response = await alice.client.post("/v1/auth/logout", headers=bearer(alice.pair))
        assert response.status == 204
        _long_before_exp(alice)

    token = alice.pair["access_token"]
    return Made(_tokens(token), first=[token], meanwhile=log_out)


async def _ended_by_delete(alice: Alice) -> Made:
    caller = await login(alice.client)

    async def delete() -> None:
        path = f"/v1/auth/sessions/{alice.pair['session_id']}"
        assert (await alice.client.delete(path, headers=bearer(caller))).status == 204
        _long_before_exp(alice)

    token = alice.pair["access_token"]
    return Made(_tokens(token), first=[token], meanwhile=delete)


async def _ended_by_logout_all(alice: Alice) -> Made:
    """The caller's session and the user's others."""
    caller = await login(alice.client)

    async def log_out_all() -> None:
        response = await alice.client.post("/v1/auth/logout-all", headers=bearer(caller))
        assert response.status == 204
        _long_before_exp(alice)

    tokens = [alice.pair["access_token"], caller["access_token"]]
    return Made(_tokens(*tokens), first=tokens, meanwhile=log_out_all)


async def _ended_idle(alice: Alice) -> Made:
    """The refresh token's idle TTL (60 s here) is over: the session has ended, though the
    access token's exp (900 s) has not come."""

    async def idle() -> None:
        alice.clock.advance(61)

    return Made(_tokens(alice.pair["access_token"]), meanwhile=idle)


@dataclass(frozen=True)
class Refusal:
    name: str
    make: Callable[[Alice], Awaitable[Made]]
    missing: bool = False  # no token came: the challenge carries no error attribute
    token: bool = True  # about the token itself: the verifier refuses it too
    ends_session: bool = False
    settings: dict[str, Any] = field(default_factory=dict)


REFUSALS = [
    # The Authorization header
    Refusal("no-token", _no_token, missing=True, token=False),
    Refusal("another-scheme", _another_scheme, missing=True, token=False),
    Refusal("malformed-bearer-header", _malformed_bearer_header, token=False),
    # Not an access token of ours
    Refusal("garbage", _garbage),
    Refusal("refresh-token", _refresh_token),
    Refusal("another-key", _another_key),
    Refusal("our-header-on-another-signature", _our_header_on_another_signature),
    Refusal("tampered", _tampered),
    # The algorithm and the key
    Refusal("alg-none", _alg_none),
    Refusal("hs256-with-the-public-key", _hs256_with_the_public_key),
    Refusal("malformed-jose-header", _malformed_jose_header),
    Refusal("kid-injection", _kid_injection),
    Refusal("key-named-in-the-header", _key_named_in_the_header),
    # What the token is for, and when
    Refusal("another-typ", _another_typ),
    Refusal("another-audience-or-issuer", _another_audience_or_issuer),
    Refusal("expired", _expired),
    Refusal("expired-once-verified", _expired_once_verified),
    Refusal("not-yet-valid", _not_yet_valid),
    Refusal("lasting-longer-than-the-ttl", _lasting_longer_than_the_ttl),
    Refusal("issued-ahead", _issued_ahead),
    Refusal("missing-or-mistyped-claim", _missing_or_mistyped_claim),
    # The session has ended: the verifier does not look at sessions
    Refusal("ended-by-logout", _ended_by_logout, token=False, ends_session=True),
    Refusal("ended-by-delete", _ended_by_delete, token=False, ends_session=True),
    Refusal("ended-by-logout-all", _ended_by_logout_all, token=False, ends_session=True),
    Refusal(
        "ended-idle",
        _ended_idle,
        token=False,
        ends_session=True,
        settings={"refresh_token_ttl": 60, "access_token_ttl": 900},
    ),
]
TABLE = [
    pytest.param(refusal, column, id=f"{refusal.name}-{column[0]} {column[1]}")
    for refusal in REFUSALS
    for column in ([VERIFIER] if refusal.token else []) + BEARER_ROUTES
]


async def _at_the_verifier(alice: Alice, made: Made) -> None:
    verifier = alice.minted()
    for token in made.first:
        for _ in range(2):  # and again, from the cache
            assert (
                verifier.verify(token, now=alice.clock.now).session_id == alice.pair["session_id"]
            )
    if made.meanwhile is not None:
        await made.meanwhile()
    for authorization in made.refused:
        assert authorization is not None
        with pytest.raises(InvalidToken):
            verifier.verify(authorization.removeprefix("Bearer "), now=alice.clock.now)
    for token in made.accepted:
        claims = jwt.decode(token, options={"verify_signature": False})
        verified = verifier.verify(token, now=alice.clock.now)
        assert (verified.issued_at, verified.expires_at) == (claims["iat"], claims["exp"])


async def _on_the_route(alice: Alice, made: Made, refusal: Refusal, method: str, path: str) -> None:
    client = alice.client
    for token in made.first:
        response = await client.get("/v1/auth/verify", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
    if made.meanwhile is not None:
        await made.meanwhile()
    for authorization in made.refused:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await client.request(method, _path(path, alice.pair), headers=headers)
        await _assert_refused(response, missing=refusal.missing)
    for token in made.accepted:
        response = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 200
    if not refusal.ends_session:
        assert (await client.get("/v1/auth/me", headers=bearer(alice.pair))).status == 200


@pytest.mark.parametrize(("refusal", "column"), TABLE)
async def test_an_access_token_is_refused(
    refusal: Refusal,
    column: tuple[str, str],
    make_client: Any,
    settings: Settings,
    key_ring: KeyRing,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await make_client(**refusal.settings)
    user = await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    settings = dataclasses.replace(settings, **refusal.settings)
    alice = Alice(client, settings, key_ring, clock, monkeypatch, user, pair, claims)
    made = await refusal.make(alice)
    if column == VERIFIER:
        await _at_the_verifier(alice, made)
    else:
        await _on_the_route(alice, made, refusal, *column)
    if made.then is not None:
        await made.then()


async def test_the_bearer_routes_are_every_route_that_asks_for_a_bearer_token(
    client: Any,
) -> None:
    """A route added later that takes an access token is a column of the table."""
    asking = set()
    for method, path in every_route():
        response = await client.request(method, path)
        if response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            asking.add((method, path))
    anyone = {"session_id": "AAAAAAAAAAAAAAAAAAAAAA"}  # every_route()'s session id
    assert asking == {(method, _path(path, anyone)) for method, path in BEARER_ROUTES}


# -- refusals that need an app of their own, or bytes no client library sends ----------


@functools.cache
def _private_key(alg: str) -> Any:
    """One private key per algorithm for this module (RSA keys take a while to make)."""
    return generate_private_key(alg)  # type: ignore[arg-type]


@pytest.mark.parametrize("other_alg", ["RS256", "ES256"])
@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_a_token_naming_another_alg_of_a_mixed_key_ring_is_refused(
    settings: Settings,
    aiohttp_client: Any,
    clock: FakeClock,
    other_alg: str,
    method: str,
    path: str,
) -> None:
    """A token is verified with the algorithm of the key its kid names (RFC 8725 §3.1).

    With an EdDSA and an RS256 key in one ring, a header naming RS256 with the EdDSA key's
    kid once made PyJWT try an RSA verification with an Ed25519 key: a 500. An ES256 key
    beside the EdDSA one is no different.
    """
    # The EdDSA key was rotated in long enough ago to sign; the other key is still published.
    eddsa = SigningKey.create(_private_key("EdDSA"), created_at=clock.now - 600)
    other = SigningKey.create(_private_key(other_alg), created_at=0)
    ring = KeyRing([other, eddsa])
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    user = await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user["user_id"]
    assert jwt.get_unverified_header(pair["access_token"])["kid"] == eddsa.kid
    # Signed by one key, naming the other's kid: each alg meets the other's key.
    for signer, named in [(other, eddsa), (eddsa, other)]:
        token = jwt.encode(
            claims,
            signer.private_key,
            algorithm=signer.alg,
            headers={"kid": named.kid, "typ": "at+jwt"},
        )
        response = await client.request(
            method, _path(path, pair), headers={"Authorization": f"Bearer {token}"}
        )
        await _assert_refused(response, missing=False)
    # The rightful tokens of both keys still verify.
    legacy = _signed(claims, other)
    assert (
        await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {legacy}"})
    ).status == 200
    assert (await client.get("/v1/auth/me", headers=bearer(pair))).status == 200


@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_a_token_of_a_deleted_key_is_refused_though_it_verified_before(
    aiohttp_client: Any,
    settings: Settings,
    clock: FakeClock,
    tmp_path: Path,
    method: str,
    path: str,
) -> None:
    """Deleting a stolen key's file ends its tokens, also those the instance already
    verified and holds in its cache of verified tokens."""
    keys_dir = tmp_path / "keys"
    stolen = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 86_400)
    current = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    for key in (stolen, current):
        write_key_file(keys_dir, key)
    settings = dataclasses.replace(settings, keys_dir=keys_dir, keys_poll_interval=0.05)
    ring = KeyRing.from_directory(keys_dir)
    client = await aiohttp_client(create_app(settings, clock=clock, key_ring=ring))
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    forged = _signed(claims, stolen)
    me = await client.get("/v1/auth/me", headers={"Authorization": f"Bearer {forged}"})
    assert me.status == 200  # still published: it signed recently
    (keys_dir / f"{stolen.kid}.pem").unlink()
    for _ in range(200):
        jwks = await (await client.get("/.well-known/jwks.json")).json()
        if stolen.kid not in {key["kid"] for key in jwks["keys"]}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the deleted key stayed published")
    for _ in range(2):  # and not cached again
        response = await client.request(
            method, _path(path, pair), headers={"Authorization": f"Bearer {forged}"}
        )
        await _assert_refused(response, missing=False)


def test_a_cached_token_is_refused_once_its_key_is_removed() -> None:
    """The verifier's half of the row above: its cache answers for a token only while the
    key that verified it is published."""
    old, current = (
        SigningKey.create(generate_private_key("EdDSA"), created_at=time.time() - age)
        for age in (86_400, 600)
    )
    keys = ActiveKeys(KeyRing([old, current]))
    options: dict[str, Any] = {
        "issuer": "http://authsvc.test",
        "audience": "authsvc",
        "client_id": "authsvc",
        "ttl": 900,
    }
    tokens = AccessTokens(keys, **options)
    now = int(time.time())
    token, _ = AccessTokens(KeyRing([old]), **options).sign(user_id="u", session_id="s", now=now)
    assert tokens.verify(token, now=now).session_id == "s"
    assert tokens.verify(token, now=now).session_id == "s"  # from the cache
    keys.replace(KeyRing([current]), now)  # old.pem deleted
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=now)
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=now)  # and not cached again


@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_a_token_of_a_retired_key_is_refused_though_it_verified_before(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, method: str, path: str
) -> None:
    """A key retired by the rotation schedule stops verifying when it retires, cached
    tokens included, whether or not anything was signed or fetched meanwhile."""
    old = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 86_400)
    current = SigningKey.create(generate_private_key("EdDSA"), created_at=clock.now - 600)
    client = await aiohttp_client(
        create_app(settings, clock=clock, key_ring=KeyRing([old, current]))
    )
    await register(client)
    pair = await login(client)
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    token = _signed(claims, old)
    authorization = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/v1/auth/me", headers=authorization)).status == 200
    # current signs since 600 - (JWKS_MAX_AGE + poll) s ago; old stays published for the
    # access-token lifetime plus margins after that.
    clock.advance(settings.access_token_ttl)
    response = await client.request(method, _path(path, pair), headers=authorization)
    await _assert_refused(response, missing=False)


@pytest.mark.parametrize(("method", "path"), BEARER_ROUTES)
async def test_non_utf8_bytes_in_a_bearer_header_are_refused(
    client: Any, method: str, path: str
) -> None:
    """aiohttp passes non-UTF-8 header bytes on as lone surrogates; they once gave a 500."""
    await register(client)
    pair = await login(client)
    token = pair["access_token"].encode()
    for bad in [b"\xff\xfe" + token, token[:20] + b"\xc3\x28" + token[20:], b"\xe9t\xe9"]:
        request_line = f"{method} {_path(path, pair)} HTTP/1.1\r\n".encode()
        raw = await raw_request(
            client,
            request_line + b"Host: authsvc\r\nConnection: close\r\n"
            + b"Authorization: Bearer " + bad + b"\r\nContent-Length: 0\r\n\r\n",
        )  # fmt: skip
        status_line, _, rest = raw.partition(b"\r\n")
        assert status_line.split()[1] == b"401", raw
        assert b'WWW-Authenticate: Bearer error="invalid_token"' in rest
        assert b'"error":"invalid_token"' in rest
