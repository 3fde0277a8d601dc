"""Compact JWS, fast: the header segment encoded once per key, one signer, one parse.

Issuing: PyJWT's ``encode`` serialises the header and claims with ``json`` and looks up
the algorithm on every call, which costs more than an Ed25519 signature. Here the header
segment of each key is encoded once, the claims go through msgspec, and the signature
comes from PyJWT's own algorithm object for the key (the same code PyJWT signs with, so
EC signatures are the raw R || S of RFC 7518 §3.4).

Checking: every presented token is parsed and its signature checked by PyJWT's ``PyJWS``,
once. A token that starts with the exact header segment authsvc issues with a published
key is checked with that key; any other goes through PyJWT's header parse first and is
checked with the key its ``kid`` names. Either way the key decides the algorithm.
"""

from __future__ import annotations

import base64
from typing import Any

import jwt
import msgspec
from jwt.algorithms import get_default_algorithms

from authsvc.tokens.keys import SigningKey
from authsvc.tokens.rotation import ActiveKeys

_ALGORITHMS = get_default_algorithms()
_encode_json = msgspec.json.Encoder().encode


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def header_segment(key: SigningKey, typ: str) -> bytes:
    """The first segment and its dot, as every token ``key`` signs begins."""
    return _b64(_encode_json({"alg": key.alg, "kid": key.kid, "typ": typ})) + b"."


class JwsSigner:
    """Signs claims with one key, as a compact JWS with a fixed protected header."""

    def __init__(self, key: SigningKey, typ: str) -> None:
        self.key = key
        self._algorithm = _ALGORITHMS[key.alg]
        self._header_segment = header_segment(key, typ)

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = self._header_segment + _b64(_encode_json(claims))
        signature = self._algorithm.sign(signing_input, self.key.private_key)
        return (signing_input + b"." + _b64(signature)).decode("ascii")


class JwsVerifier:
    """Checks compact JWS of one ``typ`` against the published keys of a ring."""

    def __init__(self, typ: str) -> None:
        self._typ = typ
        self._jws = jwt.PyJWS()
        self._segments: dict[str, str] = {}  # kid -> its header segment

    def verified(self, token: str, keys: ActiveKeys) -> tuple[SigningKey, bytes]:
        """Return the key that signed ``token`` and its payload, once the signature verifies.

        Raises:
            jwt.InvalidTokenError: malformed, an unknown or unpublished kid, another typ,
                an algorithm other than its key's, or a bad signature.
        """
        key = self._key_of(token, keys)
        decoded = self._jws.decode_complete(token, key.public_key, algorithms=[key.alg])
        return key, decoded["payload"]

    def _key_of(self, token: str, keys: ActiveKeys) -> SigningKey:
        for key in keys.published:
            if token.startswith(self._segment(key)):
                return key
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        key_of_kid = keys.verifier(kid) if isinstance(kid, str) else None
        if key_of_kid is None or header.get("typ") != self._typ:
            raise jwt.InvalidTokenError("no published key of this kid and typ")
        return key_of_kid

    def _segment(self, key: SigningKey) -> str:
        segment = self._segments.get(key.kid)
        if segment is None:
            segment = self._segments[key.kid] = header_segment(key, self._typ).decode()
        return segment
