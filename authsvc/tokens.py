"""Access tokens (signed JWTs) and refresh tokens (opaque, stored only as hashes).

A refresh token reads ``<user_id>.<session_id>.<position>.<secret>.<mac>``:

- the two ids let the store find the session's keys (which share the user's hash tag)
  without a global token index;
- ``position`` counts the rotations of the session's chain (0 at login);
- ``secret`` carries the 256 bits of randomness;
- ``mac`` is an HMAC of everything before it under the key ring's refresh-token secret,
  which lives beside the signing keys and never in Redis.

The MAC is what keeps a session's state constant: a token that verifies was issued by us,
so one whose position lies behind the chain's current position was used already and is a
replay, with no set of used hashes to remember. A token that does not verify (a few
characters changed, or any string around a real session id) is refused before the store
is asked, so it can never end a session. Clients treat the whole token as opaque.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import jwt
import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.errors import InvalidGrant, InvalidToken
from authsvc.jws import JwsSigner, JwsVerifier
from authsvc.keyrotation import CLOCK_SKEW, ActiveKeys
from authsvc.keys import KeyRing, SigningKey

ACCESS_TOKEN_TYPE = "at+jwt"
EXP_LEEWAY = 1  # docs/api.md: "at most one second of leeway"

_REFRESH_TOKEN = re.compile(
    r"^(?P<body>(?P<user_id>[0-9a-f]{32})\.(?P<session_id>[A-Za-z0-9_-]{22})"
    r"\.(?P<position>0|[1-9][0-9]{0,11})\.[A-Za-z0-9_-]{43})\.(?P<mac>[A-Za-z0-9_-]{22})$"
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_MAC_CONTEXT = b"authsvc/refresh-token/v1\n"
MAC_BYTES = 16  # 128-bit tag: forging one is out of reach, and the token stays short
STORED_HASH_BYTES = 16  # what the store keeps of the current token: a SHA-256 prefix
# v2 seals (refresh token, iat, jti); v1 sealed a whole signed pair. A v1 value left by an
# older version during an upgrade does not open under a v2 key: that retry is refused.
_SUCCESSOR_KEY_INFO = b"authsvc/successor/v2"


def new_user_id() -> str:
    return uuid.uuid4().hex


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def is_session_id(text: str) -> bool:
    return _SESSION_ID.fullmatch(text) is not None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class RefreshToken:
    user_id: str
    session_id: str
    position: int
    value: str

    @property
    def hash(self) -> bytes:
        """The only form of the token the store keeps."""
        return hashlib.sha256(self.value.encode()).digest()[:STORED_HASH_BYTES]


class RefreshTokens:
    """Mint and check refresh tokens under the key ring's refresh-token secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the refresh-token secret needs at least 256 bits")
        self._secret = secret

    def _mac(self, body: str) -> str:
        digest = hmac.digest(self._secret, _MAC_CONTEXT + body.encode(), "sha256")
        return _b64(digest[:MAC_BYTES])

    def mint(self, user_id: str, session_id: str, position: int = 0) -> RefreshToken:
        body = f"{user_id}.{session_id}.{position}.{secrets.token_urlsafe(32)}"
        return RefreshToken(user_id, session_id, position, f"{body}.{self._mac(body)}")

    def successor(self, token: RefreshToken) -> RefreshToken:
        """Mint the token that follows ``token`` in its chain."""
        return self.mint(token.user_id, token.session_id, token.position + 1)

    def parse(self, value: str) -> RefreshToken:
        """Return the token when it is well formed and its MAC is ours.

        Raises:
            InvalidGrant: when the text is not a refresh token this service issued.
        """
        match = _REFRESH_TOKEN.fullmatch(value)
        if match is None:
            raise InvalidGrant("the refresh token is malformed")
        if not hmac.compare_digest(self._mac(match["body"]), match["mac"]):
            raise InvalidGrant()
        return RefreshToken(match["user_id"], match["session_id"], int(match["position"]), value)


def new_jti() -> str:
    """The ``jti`` of an access token: 96 random bits."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class Successor:
    """What a rotation issues, fixed before the store decides and sealed for the grace.

    The successor refresh token, and the ``iat`` and ``jti`` its access token carries: the
    access token itself is signed only once the store has chosen this successor, and a
    retry within the grace signs the same claims again (the same token, with a
    deterministic algorithm such as EdDSA or RS256).
    """

    refresh_token: str
    issued_at: int
    jti: str


def _successor_key(presented: RefreshToken) -> bytes:
    # Derived from the presented token, which the store never sees in clear (it keeps a
    # SHA-256 of it), so the sealed successor is useless to anyone who reads Redis.
    return hmac.digest(presented.value.encode(), _SUCCESSOR_KEY_INFO, "sha256")


def seal_successor(presented: RefreshToken, successor: Successor) -> bytes:
    nonce = secrets.token_bytes(12)
    plaintext = msgspec.msgpack.encode(
        (successor.refresh_token, successor.issued_at, successor.jti)
    )
    aad = presented.session_id.encode()
    return nonce + AESGCM(_successor_key(presented)).encrypt(nonce, plaintext, aad)


_decode_successor = msgspec.msgpack.Decoder(tuple[str, int, str]).decode


def open_successor(presented: RefreshToken, sealed: bytes) -> Successor:
    """Raises: InvalidGrant when the sealed successor does not open with this token."""
    try:
        plaintext = AESGCM(_successor_key(presented)).decrypt(
            sealed[:12], sealed[12:], presented.session_id.encode()
        )
        refresh_token, issued_at, jti = _decode_successor(plaintext)
    except (InvalidTag, ValueError, msgspec.DecodeError):
        raise InvalidGrant() from None
    return Successor(refresh_token, issued_at, jti)


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
    nbf: int | None = None


_decode_claims = msgspec.json.Decoder(_SignedClaims).decode


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    session_id: str
    client_id: str
    issued_at: int
    expires_at: int
    jti: str


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
        self, *, user_id: str, session_id: str, now: int, jti: str | None = None
    ) -> tuple[str, int]:
        """Return an access token issued at ``now`` and its expiry.

        ``jti`` is a new one unless given: a grace retry signs the claims of the access
        token its rotation issued (``Successor``) again.
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
        }
        signer = self._signer
        if signer is None or signer.key is not key:
            signer = self._signer = JwsSigner(key, ACCESS_TOKEN_TYPE)
        return signer.sign(claims), expires_at

    def verify(
        self, token: str, *, allow_expired: bool = False, now: float | None = None
    ) -> AccessClaims:
        """Check signature, type, issuer, audience, lifetime (``exp - iat`` at most the
        TTL, plus the leeway; iat not more than CLOCK_SKEW ahead) and expiry; not whether
        the session lives.

        ``allow_expired`` skips the expiry check only, for revoking the session of a
        token that has just expired. ``now``, the service clock's time (the wall clock
        without one), brings the key schedule up to date first, so that a key that has
        just been retired verifies nothing, and is what iat is compared with.

        Raises:
            InvalidToken: for any token that is not a valid access token of this issuer.
        """
        keys = self._keys
        if now is not None:
            keys.at(now)
        if allow_expired:
            return self._verify_signed(token, verify_exp=False, now=now)[0]
        entry = self._verified.get(token)
        if entry is not None:
            claims, key = entry
            # A fresh check compares exp with the wall clock; so does a cache hit. And
            # it finds the key among those published: so must a hit (one dict lookup), or
            # a key deleted from the directory, or retired, would live on in every token
            # it verified.
            if (
                claims.expires_at <= time.time() - EXP_LEEWAY
                or keys.verifiers.get(key.kid) is not key
            ):
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
        self, token: str, *, verify_exp: bool = True, now: float | None = None
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
        issued_by = time.time() if now is None else now  # iat is the service clock's
        if claims.exp - claims.iat > self.ttl + EXP_LEEWAY or claims.iat > issued_by + CLOCK_SKEW:
            raise InvalidToken()
        now = time.time()
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
        )
        return access_claims, key
