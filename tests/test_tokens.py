"""Access-token signing and what the verifier accepts (every refusal of an access token,
the verifier's included, is in test_access_token_refusals.py), refresh-token minting and
sealed successors."""

from __future__ import annotations

import base64
import hashlib
import time

import jwt
import pytest

from authsvc.errors import InvalidGrant
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.keys import KeyRing, SigningKey, generate_private_key
from authsvc.tokens.refresh import RefreshTokens, Successor, open_successor, seal_successor
from authsvc.tokens.rotation import ActiveKeys


def _tokens(ring: KeyRing | ActiveKeys, **overrides: object) -> AccessTokens:
    options: dict[str, object] = {
        "issuer": "http://authsvc.test",
        "audience": "authsvc",
        "client_id": "authsvc",
        "ttl": 900,
    }
    options.update(overrides)
    return AccessTokens(ring, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_access_token_has_the_contract_header_and_claims(alg: str) -> None:
    ring = KeyRing.generated(alg)  # type: ignore[arg-type]
    now = int(time.time())
    token, expires_at = _tokens(ring).sign(user_id="u1", session_id="s1", now=now)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": ring.current.kid, "typ": "at+jwt"}
    (jwk,) = ring.jwks["keys"]
    claims = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=[alg],
        audience="authsvc",
        issuer="http://authsvc.test",
    )
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "sid", "client_id", "roles"}
    assert claims["roles"] == []  # RFC 9068 §2.2.3.1: an array, empty when none
    assert (claims["sub"], claims["sid"], claims["exp"]) == ("u1", "s1", expires_at)
    assert expires_at == now + 900


def test_a_cached_token_stays_cached_when_another_key_is_added() -> None:
    """A reload rebuilds the ring; the keys that did not change keep verifying what they
    verified, without a signature check."""
    keys = ActiveKeys(KeyRing([SigningKey.create(generate_private_key("EdDSA"))]))
    tokens = _tokens(keys)
    now = int(time.time())
    token, _ = tokens.sign(user_id="u", session_id="s", now=now)
    tokens.verify(token, now=now)
    reloaded = KeyRing([*keys.ring, SigningKey.create(generate_private_key("EdDSA"))])
    keys.replace(KeyRing.from_pems(reloaded.to_pems(), reloaded.refresh_secret), now)
    tokens._verifier = None  # type: ignore[assignment]  # a signature check would fail
    assert tokens.verify(token, now=now).session_id == "s"


REFRESH = RefreshTokens(b"k" * 32)


def test_refresh_token_is_url_safe_with_256_random_bits() -> None:
    token = REFRESH.mint("0" * 32, "A" * 22)
    secret = token.value.split(".")[3]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert REFRESH.parse(token.value) == token
    assert token.hash == hashlib.sha256(token.value.encode()).digest()[:16]
    assert REFRESH.mint("0" * 32, "A" * 22).value != token.value


def test_successor_takes_the_next_position_in_the_chain() -> None:
    token = REFRESH.mint("0" * 32, "A" * 22)
    assert token.position == 0
    successor = REFRESH.successor(REFRESH.successor(token))
    assert (successor.user_id, successor.session_id, successor.position) == ("0" * 32, "A" * 22, 2)
    assert REFRESH.parse(successor.value) == successor


def test_a_token_minted_under_another_secret_does_not_parse() -> None:
    """The MAC, not the format, makes a token ours: a stolen layout is not enough."""
    foreign = RefreshTokens(b"x" * 32).mint("0" * 32, "A" * 22)
    with pytest.raises(InvalidGrant):
        REFRESH.parse(foreign.value)
    body, _, mac = REFRESH.mint("0" * 32, "A" * 22).value.rpartition(".")
    with pytest.raises(InvalidGrant):
        REFRESH.parse(body.replace(".0.", ".7.") + "." + mac)


def test_sealed_successor_opens_only_with_the_presented_token() -> None:
    presented = REFRESH.mint("0" * 32, "A" * 22)
    successor = Successor(REFRESH.successor(presented).value, 1_767_229_200, "jti-of-the-access")
    sealed = seal_successor(presented, successor)
    assert successor.refresh_token.encode() not in sealed
    assert open_successor(presented, sealed) == successor
    with pytest.raises(InvalidGrant):
        open_successor(REFRESH.mint("0" * 32, "A" * 22), sealed)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_pyjwt_verifies_what_the_fast_signer_issues(alg: str) -> None:
    """Issuing skips PyJWT's encode; PyJWT must still accept every token, header included."""
    ring = KeyRing.generated(alg)  # type: ignore[arg-type]
    tokens = _tokens(ring, ttl=60)
    token, expires_at = tokens.sign(user_id="u", session_id="s", now=int(time.time()))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": ring.current.kid, "typ": "at+jwt"}
    claims = jwt.decode(
        token, ring.current.public_key, algorithms=[alg], audience="authsvc",
        options={"require": ["exp", "iat", "jti", "sid", "client_id"]},
    )  # fmt: skip
    assert (claims["sub"], claims["sid"], claims["exp"]) == ("u", "s", expires_at)


def _claims(now: int) -> dict[str, object]:
    return {
        "iss": "http://authsvc.test", "sub": "u", "aud": "authsvc", "exp": now + 60,
        "iat": now, "jti": "j", "sid": "s", "client_id": "authsvc",
    }  # fmt: skip


def test_a_token_of_ours_with_a_header_written_otherwise_still_verifies() -> None:
    """Not the header segment authsvc issues (another order, as other versions or tools
    write it): the kid still finds the key, by PyJWT's parse of the header."""
    ring = KeyRing.generated("EdDSA")
    now = int(time.time())
    token = jwt.encode(
        _claims(now), ring.current.private_key, algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": ring.current.kid}, sort_headers=False,
    )  # fmt: skip
    issued, _ = _tokens(ring).sign(user_id="u", session_id="s", now=now)
    assert token.partition(".")[0] != issued.partition(".")[0]
    assert _tokens(ring).verify(token, now=time.time()).session_id == "s"


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_the_claims_of_a_grace_retry_sign_to_the_same_token(alg: str) -> None:
    """A retry signs its rotation's iat and jti again: the same access token comes back."""
    tokens = _tokens(KeyRing.generated(alg))  # type: ignore[arg-type]
    now = int(time.time())
    first = tokens.sign(user_id="u", session_id="s", now=now, jti="j" * 16)
    assert tokens.sign(user_id="u", session_id="s", now=now, jti="j" * 16) == first
    assert tokens.sign(user_id="u", session_id="s", now=now)[0] != first[0]
