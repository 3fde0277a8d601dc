"""The key ring and its rotation policy, read from the settings: where a process is built.

``authsvc.tokens`` takes keys and a policy; which directory they come from, and what the
embedded default keeps, is a matter of the settings.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from authsvc.config import Settings
from authsvc.tokens.keys import (
    KeyRing,
    KeyRingError,
    SigningAlgorithm,
    SigningKey,
    generate_private_key,
    write_key_file,
)
from authsvc.tokens.rotation import RotationPolicy

logger = logging.getLogger(__name__)

SIGNING_KEY_LOCK_NAME = "signing-key.lock"


def rotation_policy(settings: Settings) -> RotationPolicy:
    return RotationPolicy.for_service(
        jwks_max_age=settings.jwks_max_age,
        access_token_ttl=settings.access_token_ttl,
        poll_interval=settings.keys_poll_interval,
    )


def ensure_signing_key(directory: Path, alg: SigningAlgorithm) -> None:
    """Write a first signing key into ``directory`` (0700) unless it holds one already.

    Made once: processes starting together take a lock, and the loser finds the winner's key.

    Raises:
        KeyRingError: the directory or the key cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (directory / SIGNING_KEY_LOCK_NAME).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not any(directory.glob("*.pem")):
                path = write_key_file(directory, SigningKey.create(generate_private_key(alg)))
                logger.info("made signing key %s", path)
    except OSError as exc:
        raise KeyRingError(
            f"cannot keep a signing key in {directory}: {exc.strerror or exc}"
        ) from None


def load_key_ring(settings: Settings) -> KeyRing:
    """Load the shared keys, or generate a signing key for this process with a warning.

    Without a keys directory, the embedded store's data directory keeps a signing key and
    the refresh-token secret, so that tokens survive a restart as the sessions do.
    """
    if settings.keys_dir is None and settings.redis_url is None:
        ensure_signing_key(settings.data_dir, settings.signing_alg)
    directory = settings.signing_keys_dir
    if directory is not None:
        return KeyRing.from_directory(directory)
    alg = settings.signing_alg
    logger.warning(
        "AUTHSVC_KEYS_DIR is not set: signing with a key generated at start; access tokens "
        "will not verify after a restart or on another instance"
    )
    logger.warning(
        "AUTHSVC_KEYS_DIR is not set: refresh tokens will not work after a restart or on "
        "another instance either"
    )
    return KeyRing.generated(alg)
