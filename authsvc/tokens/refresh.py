"""Refresh tokens (opaque, stored only as hashes), the ids they carry, and the successor a
rotation seals for its grace.

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

A session in cookie mode also has a CSRF token (docs/browsers.md): an HMAC of its session
id under a key derived from the same secret, so nothing is stored for it, every instance
and worker that shares the keys directory agrees on it, and it lasts as long as the
session. It is checked against the session id the cookie's token names, before the store
is asked: a refusal rotates and revokes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.errors import InvalidCsrf, InvalidGrant

_REFRESH_TOKEN = re.compile(
    r"^(?P<body>(?P<user_id>[0-9a-f]{32})\.(?P<session_id>[A-Za-z0-9_-]{22})"
    r"\.(?P<position>0|[1-9][0-9]{0,11})\.[A-Za-z0-9_-]{43})\.(?P<mac>[A-Za-z0-9_-]{22})$"
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")
_USER_ID = re.compile(r"^[0-9a-f]{32}$")
_MAC_CONTEXT = b"authsvc/refresh-token/v1\n"
# The CSRF tokens' key: HMAC(secret, label), a key of its own that no refresh-token MAC
# (whose input starts with _MAC_CONTEXT) can equal.
_CSRF_KEY_LABEL = b"authsvc/csrf-token/v1"
MAC_BYTES = 16  # 128-bit tag: forging one is out of reach, and the token stays short
STORED_HASH_BYTES = 16  # what the store keeps of the current token: a SHA-256 prefix
# v2 seals (refresh token, iat, jti); v1 sealed a whole signed pair. A v1 value left by an
# older version during an upgrade does not open under a v2 key: that retry is refused.
_SUCCESSOR_KEY_INFO = b"authsvc/successor/v2"


def new_user_id() -> str:
    return uuid.uuid4().hex


def is_user_id(text: str) -> bool:
    """Whether ``text`` has the form of a user id (so it cannot reach another's keys)."""
    return _USER_ID.fullmatch(text) is not None


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
        self._csrf_key = hmac.digest(secret, _CSRF_KEY_LABEL, "sha256")

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

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a session in cookie mode: the same value for its whole life."""
        return _b64(hmac.digest(self._csrf_key, session_id.encode(), "sha256"))

    def check_csrf(self, token: RefreshToken, presented: str) -> None:
        """Accept ``presented`` only as the CSRF token of ``token``'s session.

        Raises:
            InvalidCsrf: none sent, or another (another session's included).
        """
        expected = self.csrf_token(token.session_id).encode()
        # "replace": header bytes that are not ASCII fail the comparison, not the request.
        if not hmac.compare_digest(expected, presented.encode("utf-8", "replace")):
            raise InvalidCsrf()


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
