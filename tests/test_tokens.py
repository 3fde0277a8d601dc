"""Access-token signing and verification, refresh-token minting and sealed successors."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest

from authsvc.errors import InvalidGrant, InvalidToken
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


def test_verify_accepts_a_cached_token_until_it_expires() -> None:
    tokens = _tokens(KeyRing.generated("EdDSA"), ttl=60)
    now = int(time.time())
    token, expires_at = tokens.sign(user_id="u1", session_id="s1", now=now)
    assert tokens.verify(token, now=now).session_id == "s1"
    assert tokens.verify(token, now=now + 59).session_id == "s1"  # from the cache
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=expires_at + 2)  # the cache hit takes the time it is given


def test_a_cached_token_is_refused_once_its_key_is_removed() -> None:
    """The cache answers for a token only while the key that verified it is published."""
    old, current = (
        SigningKey.create(generate_private_key("EdDSA"), created_at=time.time() - age)
        for age in (86_400, 600)
    )
    keys = ActiveKeys(KeyRing([old, current]))
    tokens = _tokens(keys)
    now = int(time.time())
    token, _ = _tokens(KeyRing([old])).sign(user_id="u", session_id="s", now=now)
    assert tokens.verify(token, now=time.time()).session_id == "s"
    assert tokens.verify(token, now=time.time()).session_id == "s"  # from the cache
    keys.replace(KeyRing([current]), now)  # old.pem deleted
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=time.time())
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=time.time())  # and not cached again


def test_a_cached_token_stays_cached_when_another_key_is_added() -> None:
    """A reload rebuilds the ring; the keys that did not change keep verifying what they
    verified, without a signature check."""
    keys = ActiveKeys(KeyRing([SigningKey.create(generate_private_key("EdDSA"))]))
    tokens = _tokens(keys)
    now = int(time.time())
    token, _ = tokens.sign(user_id="u", session_id="s", now=now)
    tokens.verify(token, now=time.time())
    reloaded = KeyRing([*keys.ring, SigningKey.create(generate_private_key("EdDSA"))])
    keys.replace(KeyRing.from_pems(reloaded.to_pems(), reloaded.refresh_secret), now)
    tokens._verifier = None  # type: ignore[assignment]  # a signature check would fail
    assert tokens.verify(token, now=time.time()).session_id == "s"


def test_a_token_lasting_longer_than_the_ttl_is_refused_with_a_second_of_leeway() -> None:
    ring = KeyRing.generated("EdDSA")
    now = int(time.time())
    for lifetime, accepted in [(60, True), (61, True), (62, False), (10 * 365 * 86_400, False)]:
        token = jwt.encode(
            {**_claims(now), "exp": now + lifetime}, ring.current.private_key,
            algorithm="EdDSA", headers={"kid": ring.current.kid, "typ": "at+jwt"},
        )  # fmt: skip
        if accepted:
            assert _tokens(ring, ttl=60).verify(token, now=time.time()).expires_at == now + lifetime
        else:
            with pytest.raises(InvalidToken):
                _tokens(ring, ttl=60).verify(token, now=time.time())


def test_a_token_issued_more_than_a_minute_ahead_is_refused() -> None:
    """Else a stolen key's thief would put iat years ahead and keep exp - iat short."""
    ring = KeyRing.generated("EdDSA")
    now = int(time.time())
    for ahead, accepted in [(30, True), (10 * 365 * 86_400, False)]:
        token = jwt.encode(
            {**_claims(now + ahead), "exp": now + ahead + 60}, ring.current.private_key,
            algorithm="EdDSA", headers={"kid": ring.current.kid, "typ": "at+jwt"},
        )  # fmt: skip
        if accepted:  # another instance's clock may run ahead of this one's
            assert _tokens(ring, ttl=60).verify(token, now=time.time()).issued_at == now + ahead
        else:
            with pytest.raises(InvalidToken):
                _tokens(ring, ttl=60).verify(token, now=time.time())


def test_verify_rejects_a_tampered_copy_of_a_cached_token() -> None:
    tokens = _tokens(KeyRing.generated("EdDSA"))
    token, _ = tokens.sign(user_id="u1", session_id="s1", now=int(time.time()))
    tokens.verify(token, now=time.time())
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "someone-else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidToken):
        tokens.verify(f"{header}.{forged_payload}.{signature}", now=time.time())


@pytest.mark.parametrize(
    "overrides",
    [{"issuer": "http://elsewhere"}, {"audience": "another-api"}],
)
def test_verify_rejects_another_issuer_or_audience(overrides: dict[str, str]) -> None:
    ring = KeyRing.generated("EdDSA")
    token, _ = _tokens(ring, **overrides).sign(user_id="u", session_id="s", now=int(time.time()))
    with pytest.raises(InvalidToken):
        _tokens(ring).verify(token, now=time.time())


def test_verify_rejects_a_token_of_another_key_ring() -> None:
    token, _ = _tokens(KeyRing.generated("EdDSA")).sign(
        user_id="u", session_id="s", now=int(time.time())
    )
    with pytest.raises(InvalidToken):
        _tokens(KeyRing.generated("EdDSA")).verify(token, now=time.time())


def test_verify_rejects_an_expired_token_beyond_one_second_of_leeway() -> None:
    tokens = _tokens(KeyRing.generated("EdDSA"), ttl=10)
    token, _ = tokens.sign(user_id="u", session_id="s", now=int(time.time()) - 12)
    with pytest.raises(InvalidToken):
        tokens.verify(token, now=time.time())


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


def test_our_header_segment_on_another_keys_signature_is_refused() -> None:
    """The header segment authsvc issues picks the key; the signature must still be its."""
    ring, attacker = KeyRing.generated("EdDSA"), KeyRing.generated("EdDSA")
    now = int(time.time())
    ours, _ = _tokens(ring).sign(user_id="u", session_id="s", now=now)
    forged, _ = _tokens(attacker).sign(user_id="u", session_id="s", now=now)
    spliced = ours.partition(".")[0] + "." + forged.partition(".")[2]
    with pytest.raises(InvalidToken):
        _tokens(ring).verify(spliced, now=time.time())


@pytest.mark.parametrize("claim", ["exp", "sid", "client_id", "jti", "iat"])
def test_a_signed_token_missing_a_claim_or_with_a_mistyped_one_is_refused(claim: str) -> None:
    ring = KeyRing.generated("EdDSA")
    claims = _claims(int(time.time()))
    for payload in ({k: v for k, v in claims.items() if k != claim}, {**claims, claim: [1]}):
        token = jwt.encode(
            payload, ring.current.private_key, algorithm="EdDSA",
            headers={"kid": ring.current.kid, "typ": "at+jwt"},
        )  # fmt: skip
        with pytest.raises(InvalidToken):
            _tokens(ring).verify(token, now=time.time())


@pytest.mark.parametrize("alg", ["EdDSA", "RS256"])
def test_the_claims_of_a_grace_retry_sign_to_the_same_token(alg: str) -> None:
    """A retry signs its rotation's iat and jti again: the same access token comes back."""
    tokens = _tokens(KeyRing.generated(alg))  # type: ignore[arg-type]
    now = int(time.time())
    first = tokens.sign(user_id="u", session_id="s", now=now, jti="j" * 16)
    assert tokens.sign(user_id="u", session_id="s", now=now, jti="j" * 16) == first
    assert tokens.sign(user_id="u", session_id="s", now=now)[0] != first[0]
