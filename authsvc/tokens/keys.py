"""KeyRing: the signing keys, which one signs now (kid), and the JWKS document.

A keys directory holds one PEM private key per file, named ``<kid>.pem``, and beside a key
added by ``authsvc keys rotate`` its schedule file ``<kid>.json``, ``{"published_at": T}``:
the Unix time the key was added, the same for every instance that reads the directory.
A key's published time is that, or else the time its kid begins with (the kids authsvc
makes read ``20261124T183000.123456Z-<thumbprint>``; 0 for a kid of another form). The
ring orders its keys by it; which key signs and which are published at a moment is for
``authsvc.tokens.rotation`` to say.

Beside them, ``refresh-token.secret`` holds the secret that refresh tokens are MACed with
(see ``tokens``): shared by every instance like the signing keys, and never written to
Redis, so reading the store is not enough to make a token.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authsvc.secretfile import read_or_create

logger = logging.getLogger(__name__)

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


REFRESH_SECRET_NAME = "refresh-token.secret"
REFRESH_SECRET_BYTES = 32
SCHEDULE_SUFFIX = ".json"  # <kid>.json beside <kid>.pem


KeyRecord = tuple[str, bytes, float | None]  # kid, PEM, published_at: a key between processes


SigningAlgorithm = Literal["EdDSA", "ES256", "RS256"]


class KeyRingError(ValueError):
    """A key file cannot be read, or the directory holds no usable key."""


def _new_refresh_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(REFRESH_SECRET_BYTES)).decode()


def load_refresh_secret(directory: Path) -> bytes:
    """Read the refresh-token secret of a directory, creating it on first use.

    Raises:
        KeyRingError: when the file cannot be read or created, or is not a secret of ours.
    """
    path = directory / REFRESH_SECRET_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = read_or_create(path, _new_refresh_secret)
    except OSError as exc:
        raise KeyRingError(f"cannot read or create {path}: {exc.strerror or exc}") from None
    try:
        secret = base64.urlsafe_b64decode(text)
    except ValueError:
        secret = b""
    if len(secret) < REFRESH_SECRET_BYTES:
        # An empty file is a crash between create and write: never a secret to use.
        raise KeyRingError(f"{path} does not hold a {REFRESH_SECRET_BYTES}-byte secret")
    return secret


def generate_private_key(alg: SigningAlgorithm) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65_537, key_size=3072)


def algorithm_of(key: PrivateKey) -> SigningAlgorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyRingError(f"unsupported EC curve {key.curve.name}; ES256 needs P-256")
        return "ES256"
    if key.key_size < 2048:
        raise KeyRingError("RSA keys must have at least 2048 bits")
    return "RS256"


def public_jwk(public_key: PublicKey, alg: SigningAlgorithm) -> dict[str, Any]:
    """Return the public JWK of a key (RFC 7517), without kid/alg/use."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    return dict(jwk)


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, base64url without padding."""
    required = {
        "OKP": ("crv", "kty", "x"),
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: SigningAlgorithm
    private_key: PrivateKey
    # From the key's schedule file; None without one.
    published_at: float | None = field(default=None, compare=False)
    # Derived once: cryptography derives it again on every public_key() call.
    public_key: PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", self.private_key.public_key())

    @classmethod
    def create(cls, private_key: PrivateKey, *, created_at: float | None = None) -> SigningKey:
        alg = algorithm_of(private_key)
        created_at = time.time() if created_at is None else created_at
        micros = int(created_at * 1_000_000) % 1_000_000
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(created_at)) + f".{micros:06d}Z"
        kid = f"{stamp}-{thumbprint(public_jwk(private_key.public_key(), alg))[:16]}"
        return cls(kid=kid, alg=alg, private_key=private_key)

    @property
    def created_at(self) -> float:
        """When the key was made, read from its kid; 0 for a kid of another form."""
        stamp = self.kid.partition("-")[0]
        try:
            parsed = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ")
        except ValueError:
            return 0.0
        return parsed.replace(tzinfo=datetime.UTC).timestamp()

    @property
    def published(self) -> float:
        """When the key was published: its schedule file says, or else its kid."""
        return self.created_at if self.published_at is None else self.published_at

    def jwk(self) -> dict[str, Any]:
        return {
            **public_jwk(self.public_key, self.alg),
            "kid": self.kid,
            "alg": self.alg,
            "use": "sig",
        }

    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_key_file(path: Path) -> SigningKey:
    """Raises: KeyRingError when the file is not a supported unencrypted PEM private key."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyRingError(f"cannot load signing key {path}: {exc}") from None
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise KeyRingError(f"unsupported key type in {path}")
    return SigningKey(
        kid=path.stem,
        alg=algorithm_of(key),
        private_key=key,
        published_at=read_schedule_file(path.with_suffix(SCHEDULE_SUFFIX)),
    )


def read_schedule_file(path: Path) -> float | None:
    """The ``published_at`` of a key's schedule file; None when there is no such file.

    Raises:
        KeyRingError: when the file cannot be read or does not hold a finite Unix time.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyRingError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)["published_at"]
    except (ValueError, KeyError, TypeError):
        value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise KeyRingError(f'{path} does not hold {{"published_at": <Unix time>}}')
    return float(value)


def write_schedule_file(directory: Path, kid: str, published_at: float) -> Path:
    """Write ``<kid>.json`` saying the key was published at ``published_at``; atomically,
    so no instance ever reads half of it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{kid}{SCHEDULE_SUFFIX}"
    partial = directory / f".{kid}{SCHEDULE_SUFFIX}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps({"published_at": round(published_at, 6)}) + "\n")
    os.replace(partial, path)
    return path


def write_key_file(directory: Path, key: SigningKey) -> Path:
    """Write a key as ``<kid>.pem``, readable by its owner only."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{key.kid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_pem())
    return path


class KeyRing:
    """The signing keys of a directory (or made at start) and the refresh-token secret.

    Keys are ordered by their published time; ``current`` is the last. Which key signs
    *now*, and which are published, also depends on time during a rotation and on when
    this instance saw each key: see ``authsvc.tokens.rotation``.
    """

    def __init__(self, keys: list[SigningKey], refresh_secret: bytes | None = None) -> None:
        if not keys:
            raise KeyRingError("a key ring needs at least one key")
        self.refresh_secret = refresh_secret or secrets.token_bytes(REFRESH_SECRET_BYTES)
        keys = sorted(keys, key=lambda key: (key.published, key.kid))
        self._keys = {key.kid: key for key in keys}
        self.current = keys[-1]
        self.jwks = {"keys": [key.jwk() for key in keys]}

    @classmethod
    def from_directory(cls, directory: Path, *, refresh_secret: bytes | None = None) -> KeyRing:
        """Load every ``*.pem`` of a directory, and its refresh-token secret unless given.

        Raises:
            KeyRingError: when a file cannot be loaded or there is none.
        """
        paths = sorted(directory.glob("*.pem"))
        if not paths:
            raise KeyRingError(
                f"no signing keys in {directory}; create one with "
                f"'authsvc keys generate --dir {directory}'"
            )
        keys = [load_key_file(path) for path in paths]
        return cls(keys, refresh_secret or load_refresh_secret(directory))

    @classmethod
    def generated(cls, alg: SigningAlgorithm, refresh_secret: bytes | None = None) -> KeyRing:
        return cls([SigningKey.create(generate_private_key(alg))], refresh_secret)

    @classmethod
    def from_pems(cls, pems: list[KeyRecord], refresh_secret: bytes) -> KeyRing:
        """Rebuild a ring from (kid, PEM, published_at), as a parent hands it to workers."""
        keys = []
        for kid, pem, published_at in pems:
            key = serialization.load_pem_private_key(pem, password=None)
            assert isinstance(
                key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
            )
            keys.append(SigningKey(kid, algorithm_of(key), key, published_at))
        return cls(keys, refresh_secret)

    def to_pems(self) -> list[KeyRecord]:
        return [(key.kid, key.private_pem(), key.published_at) for key in self._keys.values()]

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def __iter__(self) -> Iterator[SigningKey]:
        return iter(self._keys.values())
