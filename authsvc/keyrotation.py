"""Key rotation without downtime: which key signs now, which are published, and reloads.

A rotation adds a key to the keys directory (``authsvc keys rotate``). Each instance sees
it within ``KEYS_POLL_INTERVAL`` and publishes it in the JWKS at once, but signs with it
only ``publish_before_signing`` seconds after it was made (JWKS_MAX_AGE plus the poll
interval), so a gateway that cached the JWKS before the key appeared has fetched it again
by then and never meets an unknown kid. The key it replaces stops signing at that moment
and stays published for ``keep_after_signing`` seconds (the access-token lifetime plus
margins), until every token it signed has expired; then it drops out of the JWKS and is
no longer accepted. The first key of a ring signs at once: there is no cache to respect.

The schedule is computed from each key's creation time (in its kid), so every instance
reaches the same answer with no coordination beyond the shared directory and clocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from authsvc.keys import KeyRing, SigningKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    publish_before_signing: float = 0.0  # a new key is in the JWKS this long before it signs
    keep_after_signing: float = math.inf  # a replaced key stays published this long

    @classmethod
    def for_service(
        cls, *, jwks_max_age: int, access_token_ttl: int, poll_interval: float
    ) -> RotationPolicy:
        # An instance may see a new key up to one poll late and serve a JWKS without it
        # meanwhile; clocks of instances differ by seconds: a minute covers both.
        margin = poll_interval + 60
        return cls(
            publish_before_signing=jwks_max_age + poll_interval,
            keep_after_signing=access_token_ttl + margin,
        )


class ActiveKeys:
    """The signer, the verifying keys and the JWKS of a key ring at a moment."""

    def __init__(
        self, ring: KeyRing, policy: RotationPolicy | None = None, *, now: float = 0.0
    ) -> None:
        self.ring = ring
        self.policy = policy or RotationPolicy()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self.signer = ring.current
        self._verifiers: dict[str, SigningKey] = {}
        self.published: tuple[SigningKey, ...] = ()  # newest first
        self._next_change = math.inf
        self.jwks_json = b""
        self.etag = ""
        self.update(now)

    def at(self, now: float) -> ActiveKeys:
        """Bring the signer and the JWKS up to ``now`` if a rotation step fell due; cheap."""
        if now >= self._next_change:
            self.update(now)
        return self

    def verifier(self, kid: str) -> SigningKey | None:
        """The published key of this kid: the only one a token naming it is checked with."""
        return self._verifiers.get(kid)

    def update(self, now: float) -> None:
        """Work out which key signs and which are published at ``now``."""
        keys = list(self.ring)  # oldest first
        starts = [-math.inf] + [
            key.created_at + self.policy.publish_before_signing for key in keys[1:]
        ]
        signing = max(index for index, start in enumerate(starts) if start <= now)
        retire = [start + self.policy.keep_after_signing for start in starts[1:]] + [math.inf]
        published = [
            key for index, key in enumerate(keys) if index >= signing or retire[index] > now
        ]
        self._next_change = min(t for t in [*starts, *retire, math.inf] if t > now)
        if keys[signing] is not self.signer:
            logger.info("signing with key %s from now on", keys[signing].kid)
        self.signer = keys[signing]
        self._verifiers = {key.kid: key for key in published}
        self.published = tuple(reversed(published))
        jwks_json = json.dumps(
            {"keys": [key.jwk() for key in published]}, separators=(",", ":")
        ).encode()
        if jwks_json != self.jwks_json:
            self.jwks_json = jwks_json
            self.etag = '"' + hashlib.sha256(jwks_json).hexdigest()[:32] + '"'

    def load_if_changed(self, directory: Path) -> KeyRing | None:
        """Load the directory again if its key files changed since the last look.

        Blocking file I/O, so it runs off the event loop; ``replace`` then applies the new
        ring on the loop. A directory that cannot be read right now (a half-written file, a
        volume remounting) keeps the current keys and is read again next time.
        """
        try:
            fingerprint = tuple(
                sorted(
                    (path.name, stat.st_mtime_ns, stat.st_size)
                    for path in directory.glob("*.pem")
                    if (stat := path.stat())
                )
            )
            if fingerprint == self._fingerprint:
                return None
            ring = KeyRing.from_directory(directory, refresh_secret=self.ring.refresh_secret)
        except (OSError, ValueError) as exc:
            logger.warning("keeping the current signing keys: %s", exc)
            return None
        self._fingerprint = fingerprint
        return ring

    def replace(self, ring: KeyRing, now: float) -> None:
        added = {key.kid for key in ring} - {key.kid for key in self.ring}
        if added:
            logger.info("new signing keys: %s", ", ".join(sorted(added)))
        self.ring = ring
        self.update(now)
