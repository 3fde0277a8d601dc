"""DpopKey: the client's proof-of-possession key (RFC 9449), made once per client.

An Ed25519 key pair that never leaves the process: a login with its proof binds the
session to it, and every refresh and API call of that session is signed with it, so its
tokens are worthless to whoever copies them without the key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from yarl import URL

from authsvc.clock import Clock, system_clock

DPOP_TYPE = "dpop+jwt"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DpopKey:
    """Signs DPoP proofs with one Ed25519 key; ``DpopKey()`` makes a new one."""

    def __init__(
        self, private_key: Ed25519PrivateKey | None = None, *, clock: Clock = system_clock
    ) -> None:
        self._private_key = private_key or Ed25519PrivateKey.generate()
        self._clock = clock
        public: dict[str, Any] = OKPAlgorithm.to_jwk(self._private_key.public_key(), as_dict=True)
        # The public members only: the header carries nothing of the private key.
        self.jwk = {name: public[name] for name in ("kty", "crv", "x")}
        self._header = {"typ": DPOP_TYPE, "jwk": self.jwk}

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 thumbprint the server binds the session to (``cnf.jkt``)."""
        canonical = '{{"crv":"{crv}","kty":"{kty}","x":"{x}"}}'.format(**self.jwk)
        return _b64(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method: str, url: str | URL, access_token: str | None = None) -> str:
        """A fresh proof (its own jti) for one request: ``htu`` is ``url`` without query
        and fragment, and ``ath`` binds it to ``access_token`` at a resource."""
        target = URL(url).with_query(None).with_fragment(None)
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": str(target),
            "iat": int(self._clock()),
        }
        if access_token is not None:
            claims["ath"] = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
        return jwt.encode(claims, self._private_key, algorithm="EdDSA", headers=self._header)
