"""DPoP proofs (RFC 9449): checked as §4.3 says, and the key's RFC 7638 thumbprint.

A proof is a JWT in the ``DPoP`` header whose own header carries the public key that signs
it. Everything in it is the client's to write, so every part is parsed by an audited library
(PyJWT parses the header and the JWK, verifies the signature with ``cryptography``) and the
claims by a strict msgspec Struct; nothing here decodes base64 by hand. Whether its ``jti``
was seen before is the store's to say (``Store.claim_dpop_proof``): this module is pure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import jwt
import msgspec

from authsvc.errors import InvalidDpopProof

DPOP_TYPE = "dpop+jwt"
# The algorithms of API.md: ES256 and EdDSA (Ed25519), nothing else (no "none", no HMAC
# keyed with the public key, no RSA).
ALGORITHMS = ("ES256", "EdDSA")
# RFC 9449 §11.1: a proof is accepted only this close to the server's clock, either way.
PROOF_WINDOW = 60
# How long a jti is remembered: a proof whose iat is within the window of any `now` at which
# it could still be accepted (iat - window .. iat + window) cannot outlive this.
JTI_TTL = 2 * PROOF_WINDOW + 1

# The key type and curve each algorithm takes, and the members RFC 7638 §3.2 hashes.
_KEY_OF_ALG = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
# RFC 7517 §9.2, RFC 7518 §6.2.2, §6.3.2, §6.4.1, RFC 8037 §2: the private parts of a JWK.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Jti = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=2048)]


class _ProofClaims(msgspec.Struct):
    """RFC 9449 §4.2: the claims a proof must have, strictly typed; others are ignored."""

    jti: Jti
    htm: Text
    htu: Text
    iat: int
    ath: Text | None = None


class _PublicJwk(msgspec.Struct):
    """The members of a proof's ``jwk`` that the thumbprint and the key take."""

    kty: str
    crv: str
    x: str
    y: str | None = None


_decode_claims = msgspec.json.Decoder(_ProofClaims).decode


@dataclass(frozen=True, slots=True)
class Proof:
    """A proof that passed every check but the ``jti``'s: its key's thumbprint, its jti."""

    jkt: str
    jti: str
    iat: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 thumbprint (SHA-256, base64url: 43 characters) of an EC or OKP key.

    Raises:
        InvalidDpopProof: a key of another type, or a required member missing or not text.
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(name), str) for name in members):
        raise InvalidDpopProof("the proof's jwk is not an EC P-256 or OKP Ed25519 public key")
    # §3.3: the required members only, in lexicographic order, no whitespace.
    canonical = json.dumps(
        {name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the access token's ASCII."""
    return _b64(hashlib.sha256(access_token.encode("ascii")).digest())


def normalized_url(url: str) -> str:
    """``url`` as §4.3 compares ``htu``: scheme and host in lower case, no default port,
    no query or fragment, an empty path as ``/`` (RFC 3986 §6.2.2, §6.2.3).

    Raises:
        InvalidDpopProof: not an absolute http(s) URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidDpopProof("htu is not a URL") from None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host:
        raise InvalidDpopProof("htu is not an absolute http or https URL")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


@dataclass(frozen=True, slots=True)
class _ProofKey:
    """What a proof's header says, once checked: its algorithm, key and thumbprint."""

    alg: str
    key: Any
    jkt: str


class ProofVerifier:
    """Checks proofs; one per application (it keeps what it learnt of headers).

    A client signs all its proofs under one header (``typ``, ``alg``, ``jwk``), so the
    header segment of a proof seen before is byte for byte one PyJWT has parsed and this
    class has checked: a bounded cache maps it to the key, and a later proof with that
    exact segment is verified by PyJWT in one parse, without building the key again. The
    segment is only a cache key here; PyJWT parses and verifies every proof whole.
    """

    def __init__(self, cache_size: int = 4096) -> None:
        self._jws = jwt.PyJWS()
        self._keys: OrderedDict[str, _ProofKey] = OrderedDict()
        self._cache_size = cache_size

    def verify(
        self, proof: str, *, method: str, url: str, now: int, access_token: str | None = None
    ) -> Proof:
        """Check a proof for the request ``method`` ``url`` at ``now`` (RFC 9449 §4.3,
        steps 1 to 11 but the jti's), and its ``ath`` against ``access_token`` when given.

        Raises:
            InvalidDpopProof: naming the first check that failed.
        """
        segment = proof.partition(".")[0]
        known = self._keys.get(segment)
        if known is None:
            known = _header_key(proof)
            self._keys[segment] = known
            if len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(segment)
        # (6) the signature, by the key in the header, with the algorithm its key takes.
        try:
            signed = self._jws.decode_complete(proof, known.key, algorithms=[known.alg])
            claims = _decode_claims(signed["payload"])
        except (jwt.PyJWTError, msgspec.DecodeError):
            raise InvalidDpopProof("the proof's signature or claims are invalid") from None
        # (8) htm; (9) htu, both normalised; (11) iat within the window.
        if claims.htm != method:
            raise InvalidDpopProof("the proof's htm is not this request's method")
        if normalized_url(claims.htu) != normalized_url(url):
            raise InvalidDpopProof("the proof's htu is not this request's URL")
        if abs(now - claims.iat) > PROOF_WINDOW:
            raise InvalidDpopProof("the proof's iat is not within 60 seconds of the server's clock")
        # (12) at a resource: ath is the hash of the access token that came with it.
        if access_token is not None and (
            claims.ath is None
            or not hmac.compare_digest(claims.ath, access_token_hash(access_token))
        ):
            raise InvalidDpopProof("the proof's ath does not match the access token")
        return Proof(jkt=known.jkt, jti=claims.jti, iat=claims.iat)


def _header_key(proof: str) -> _ProofKey:
    """The checks of a proof's header (§4.3 steps 2 to 5 and 7), and the key it names.

    Raises:
        InvalidDpopProof: not a JWT, another typ or alg, no jwk, a private or malformed
            jwk, or one that is not a key of the alg.
    """
    # §4.3 (2), (3): one well-formed JWT, whose header PyJWT parses.
    try:
        header = jwt.get_unverified_header(proof)
    except jwt.InvalidTokenError:
        raise InvalidDpopProof("the DPoP header is not a JWT") from None
    # (4) typ; (5) an asymmetric algorithm this server supports, never "none".
    if header.get("typ") != DPOP_TYPE:
        raise InvalidDpopProof('the proof\'s typ must be "dpop+jwt"')
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidDpopProof("the proof's alg must be ES256 or EdDSA")
    # (7) the jwk is a public key: a proof that carries its private part shows the key
    # has been handled carelessly, and a server must not accept it.
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof("the proof's header has no jwk")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDpopProof("the proof's jwk holds a private key")
    try:
        public = msgspec.convert(jwk, _PublicJwk)
    except msgspec.ValidationError:
        raise InvalidDpopProof("the proof's jwk is malformed") from None
    if (public.kty, public.crv) != _KEY_OF_ALG[alg]:
        raise InvalidDpopProof("the proof's jwk is not a key of its alg")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg).key
    except jwt.PyJWTError:
        raise InvalidDpopProof("the proof's jwk is not a valid key") from None
    return _ProofKey(alg=alg, key=key, jkt=thumbprint(jwk))


def verify_proof(
    proof: str, *, method: str, url: str, now: int, access_token: str | None = None
) -> Proof:
    """``ProofVerifier().verify``, for a single proof.

    Raises:
        InvalidDpopProof: naming the first check that failed.
    """
    return ProofVerifier().verify(proof, method=method, url=url, now=now, access_token=access_token)
