"""Access tokens: JWTs signed with the key that signs now, verified with the key their kid
names (never the algorithm their header asks for), with a per-worker cache of the tokens
verified before."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

import jwt
import msgspec

from authsvc.errors import InvalidToken
from authsvc.tokens.jws import JwsSigner, JwsVerifier
from authsvc.tokens.keys import KeyRing, SigningKey
from authsvc.tokens.rotation import CLOCK_SKEW, ActiveKeys

ACCESS_TOKEN_TYPE = "at+jwt"
EXP_LEEWAY = 1  # docs/api.md: "at most one second of leeway"


def new_jti() -> str:
    """The ``jti`` of an access token: 96 random bits."""
    return secrets.token_urlsafe(12)


class _Confirmation(msgspec.Struct):
    """RFC 7800 ``cnf`` of a DPoP-bound token: the key's RFC 7638 thumbprint (RFC 9449 §6.1)."""

    jkt: str


class _SignedClaims(msgspec.Struct):
    """An access token's payload: every claim authsvc issues is required, typed strictly.

    iat bounds the token's lifetime (exp - iat, at most the TTL) and is compared with the
    service clock only to refuse one issued more than CLOCK_SKEW ahead of it: docs/api.md
    allows leeway on exp only, and an instance whose clock runs a second behind another's
    must not refuse the tokens that one just issued.
    """

    iss: str
    sub: str
    aud: str | list[str]
    exp: int
    iat: int
    jti: str
    sid: str
    client_id: str
    # RFC 9068 §2.2.3.1; a token issued before authsvc knew roles has none.
    roles: list[str] = msgspec.field(default_factory=list)
    nbf: int | None = None
    cnf: _Confirmation | None = None


_decode_claims = msgspec.json.Decoder(_SignedClaims).decode


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    client_id: str
    issued_at: int
    expires_at: int
    jti: str
    roles: tuple[str, ...] = ()
    # The DPoP key the token is bound to (cnf.jkt); None for a bearer token.
    jkt: str | None = None


class AccessTokens:
    """Sign and verify access tokens with a key ring; everything prepared once."""

    def __init__(
        self,
        keys: ActiveKeys | KeyRing,
        *,
        issuer: str,
        audience: str,
        client_id: str,
        ttl: int,
        verified_cache_size: int = 10_000,
    ) -> None:
        self._keys = keys if isinstance(keys, ActiveKeys) else ActiveKeys(keys)
        self._signer: JwsSigner | None = None  # for the current signing key, made once
        self._issuer = issuer
        self._audience = audience
        self._client_id = client_id
        self.ttl = ttl
        self._verifier = JwsVerifier(ACCESS_TOKEN_TYPE)
        # A gateway presents one access token many times during its life; a signature
        # check costs ~100 µs of CPU, a dict lookup of the exact token string nothing.
        # Only signature-verified tokens enter, with the key that verified them; expiry,
        # and that the key is still one the ring accepts, are checked again on every hit.
        self._verified: OrderedDict[str, tuple[AccessClaims, SigningKey]] = OrderedDict()
        self._cache_size = verified_cache_size

    def sign(
        self,
        *,
        user_id: str,
        session_id: str,
        now: int,
        jti: str | None = None,
        roles: tuple[str, ...] = (),
        jkt: str | None = None,
    ) -> tuple[str, int]:
        """Return an access token issued at ``now`` and its expiry.

        ``jti`` is a new one unless given: a grace retry signs the claims of the access
        token its rotation issued (``Successor``) again. ``roles`` are the user's as the
        store read them for this login or rotation (RFC 9068 §2.2.3.1: ``[]`` when none).
        ``jkt`` binds the token to a DPoP key (``cnf``, RFC 9449 §6.1).
        """
        key = self._keys.at(now).signer
        expires_at = now + self.ttl
        claims = {
            "iss": self._issuer,
            "sub": user_id,
            "aud": self._audience,
            "exp": expires_at,
            "iat": now,
            "jti": jti or new_jti(),
            "sid": session_id,
            "client_id": self._client_id,
            "roles": list(roles),
        }
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        signer = self._signer
        if signer is None or signer.key is not key:
            signer = self._signer = JwsSigner(key, ACCESS_TOKEN_TYPE)
        return signer.sign(claims), expires_at

    def verify(self, token: str, *, now: float, allow_expired: bool = False) -> AccessClaims:
        """Check signature, type, issuer, audience, lifetime (``exp - iat`` at most the
        TTL, plus the leeway; iat not more than CLOCK_SKEW ahead) and expiry; not whether
        the session lives.

        ``now`` is the service clock's time: what exp, nbf and iat are compared with, on a
        cache hit too, and what brings the key schedule up to date first, so that a key
        that has just been retired verifies nothing. ``allow_expired`` skips the expiry
        check only, for revoking the session of a token that has just expired.

        Raises:
            InvalidToken: for any token that is not a valid access token of this issuer.
        """
        keys = self._keys
        keys.at(now)
        if allow_expired:
            return self._verify_signed(token, verify_exp=False, now=now)[0]
        entry = self._verified.get(token)
        if entry is not None:
            claims, key = entry
            # A hit compares exp with ``now`` as a fresh check does, and finds the key
            # among those published (one dict lookup): else a key deleted from the
            # directory, or retired, would live on in every token it verified.
            if claims.expires_at <= now - EXP_LEEWAY or keys.verifiers.get(key.kid) is not key:
                del self._verified[token]
                raise InvalidToken()
            self._verified.move_to_end(token)
            return claims
        claims, key = self._verify_signed(token, now=now)
        self._verified[token] = claims, key
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return claims

    def _verify_signed(
        self, token: str, *, now: float, verify_exp: bool = True
    ) -> tuple[AccessClaims, SigningKey]:
        # RFC 8725 §2.1: the key named by the kid decides the algorithm, never the token's
        # header (alg "none", HS256 keyed with a public key, or another algorithm of a
        # mixed ring all fail in the verifier).
        try:
            key, payload = self._verifier.verified(token, self._keys)
            claims = _decode_claims(payload)
        except (jwt.InvalidTokenError, msgspec.DecodeError):
            raise InvalidToken() from None
        # The payload is signed by a key of ours from here on; what it must still show is
        # that it is for this issuer and audience, lives no longer than the tokens we
        # issue (a stolen key's ten-year token does not, nor one issued years ahead), and
        # has not yet expired.
        audience = claims.aud if isinstance(claims.aud, list) else [claims.aud]
        if claims.iss != self._issuer or self._audience not in audience:
            raise InvalidToken()
        if claims.exp - claims.iat > self.ttl + EXP_LEEWAY or claims.iat > now + CLOCK_SKEW:
            raise InvalidToken()
        if verify_exp and claims.exp <= now - EXP_LEEWAY:
            raise InvalidToken()
        if claims.nbf is not None and claims.nbf > now + EXP_LEEWAY:
            raise InvalidToken()
        access_claims = AccessClaims(
            user_id=claims.sub,
            session_id=claims.sid,
            client_id=claims.client_id,
            issued_at=claims.iat,
            expires_at=claims.exp,
            jti=claims.jti,
            roles=tuple(claims.roles),
            jkt=None if claims.cnf is None else claims.cnf.jkt,
        )
        return access_claims, key
