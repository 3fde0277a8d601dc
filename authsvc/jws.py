"""Issue compact JWS tokens fast: the header segment encoded once per key, one signer.

PyJWT's ``encode`` serialises the header and claims with ``json`` and looks up the
algorithm on every call, which costs more than an Ed25519 signature. Here the header
segment of each key is encoded once, the claims go through msgspec, and the signature
comes from PyJWT's own algorithm object for the key (the same code PyJWT signs with, so
EC signatures are the raw R || S of RFC 7518 §3.4). Only issuing lives here: every
presented token is still verified by PyJWT, and tests verify what this issues with it.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from jwt.algorithms import get_default_algorithms

from authsvc.keys import SigningKey

_ALGORITHMS = get_default_algorithms()
_encode_json = msgspec.json.Encoder().encode


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class JwsSigner:
    """Signs claims with one key, as a compact JWS with a fixed protected header."""

    def __init__(self, key: SigningKey, header: dict[str, Any]) -> None:
        self.key = key
        self._algorithm = _ALGORITHMS[key.alg]
        self._header_segment = _b64(_encode_json({"alg": key.alg, **header})) + b"."

    def sign(self, claims: dict[str, Any]) -> str:
        signing_input = self._header_segment + _b64(_encode_json(claims))
        signature = self._algorithm.sign(signing_input, self.key.private_key)
        return (signing_input + b"." + _b64(signature)).decode("ascii")
