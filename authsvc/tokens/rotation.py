"""Key rotation without downtime: which key signs now, which are published, and reloads.

A rotation adds a key to the keys directory (``authsvc keys rotate``) with its schedule
file, which says when the key was published (see ``authsvc.tokens.keys``). Each instance sees it
within ``KEYS_POLL_INTERVAL`` and publishes it in the JWKS at once, but signs with it only
``publish_before_signing`` (JWKS_MAX_AGE plus the poll interval) after that time, so a
gateway that cached the JWKS before the key appeared anywhere has fetched it again by then
and never meets an unknown kid. Every instance reads the same time from the directory, so
all switch at the same moment with no coordination beyond the directory and their clocks.

The time a directory gives is only believed as far as this instance can check it. A key
that appears while it runs never signs before this instance has published it for
JWKS_MAX_AGE. When its published time is not within a poll interval and the clock margin
of the moment the instance saw it (a key prepared ahead and copied in, a backup restored
with its schedule file, a kid written by a clock that was wrong, a kid that names no
time), the key is scheduled from the moment this instance first saw it instead, with a
warning; instances then switch within a poll interval of each other, which the margins
below cover. Keys found at start are scheduled by their published time alone: the newest
whose time has come signs at once, and when none has (a first key, made a second ago),
the one whose time comes first: there is no cache to respect yet.

The key a new one replaces stops signing when the new one starts, and stays published for
``keep_after_signing`` (the access-token lifetime plus margins) after that, and after the
last moment this instance signed with it, until every token it signed has expired; then
it drops out of the JWKS and is no longer accepted. A key whose published time is older
than the signer's never signs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from authsvc.tokens.keys import SCHEDULE_SUFFIX, KeyRing, SigningKey

logger = logging.getLogger(__name__)

CLOCK_SKEW = 60.0  # seconds the clocks of the hosts sharing a keys directory may differ


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    publish_before_signing: float = 0.0  # a new key is in the JWKS this long before it signs
    keep_after_signing: float = math.inf  # a replaced key stays published this long
    sighting_lag: float = 0.0  # an instance sees a new key at most this late (its poll)
    clock_skew: float = CLOCK_SKEW

    @classmethod
    def for_service(
        cls, *, jwks_max_age: int, access_token_ttl: int, poll_interval: float
    ) -> RotationPolicy:
        # An instance may see a new key up to one poll late and serve a JWKS without it
        # meanwhile; clocks of instances differ by seconds: a minute covers both.
        margin = poll_interval + CLOCK_SKEW
        return cls(
            publish_before_signing=jwks_max_age + poll_interval,
            keep_after_signing=access_token_ttl + margin,
            sighting_lag=poll_interval,
        )

    def believable(self, published: float, seen: float) -> bool:
        """Whether a key published at ``published`` can have been first seen at ``seen``."""
        return seen - self.sighting_lag - self.clock_skew <= published <= seen + self.clock_skew

    def earliest_start(self, published: float, seen: float) -> float:
        """The earliest a key this instance first saw at ``seen`` may sign."""
        if self.believable(published, seen):
            # Never later than published + publish_before_signing (the start every
            # instance computes), and still JWKS_MAX_AGE after this one published it.
            return seen + self.publish_before_signing - self.sighting_lag
        # Any other instance saw it within a poll of this one: after a full
        # publish_before_signing from now, each has published it for JWKS_MAX_AGE.
        return seen + self.publish_before_signing


def _when(timestamp: float) -> str:
    if not math.isfinite(timestamp):
        return "never"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _source(key: SigningKey) -> str:
    if key.published_at is not None:
        return f"its schedule file says it was published {_when(key.published_at)}"
    if key.created_at == 0:
        return "it has no schedule file and its kid names no time"
    return f"it has no schedule file and its kid says {_when(key.created_at)}"


class ActiveKeys:
    """The signer, the verifying keys and the JWKS of a key ring at a moment."""

    def __init__(
        self, ring: KeyRing, policy: RotationPolicy | None = None, *, now: float | None = None
    ) -> None:
        self.ring = ring
        self.policy = policy or RotationPolicy()
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self.signer = ring.current
        # kid -> the published key of it; replaced whole, never changed in place.
        self.verifiers: Mapping[str, SigningKey] = {}
        self.published: tuple[SigningKey, ...] = ()  # newest first
        self._next_change = math.inf
        self.jwks_json = b""
        self.etag = ""
        # kid -> the earliest it may sign, for the keys this instance saw appear.
        self._earliest: dict[str, float] = {}
        # kid -> the last moment this instance signed with it, for each key it replaced.
        self._signed_until: dict[str, float] = {}
        self._schedule(time.time() if now is None else now, observed=False)

    def at(self, now: float) -> ActiveKeys:
        """Bring the signer and the JWKS up to ``now`` if a rotation step fell due; cheap."""
        if now >= self._next_change:
            self.update(now)
        return self

    def verifier(self, kid: str) -> SigningKey | None:
        """The published key of this kid: the only one a token naming it is checked with."""
        return self.verifiers.get(kid)

    def update(self, now: float) -> None:
        """Work out which key signs and which are published at ``now``."""
        self._schedule(now, observed=True)

    def _schedule(self, now: float, *, observed: bool) -> None:
        keys = list(self.ring)  # by published time, oldest first
        policy = self.policy
        starts = [self.start_of(key) for key in keys]
        # The newest key whose time has come signs; when none's has (a first key made
        # just now), the one whose time comes first: there is no cache to respect yet.
        usable = [index for index, start in enumerate(starts) if start <= now]
        signing = usable[-1] if usable else min(range(len(keys)), key=starts.__getitem__)
        signer = keys[signing]
        # Each key signs until a later one may: a new signer replaces it.
        stops: list[float] = []
        later = math.inf
        for start in reversed(starts):
            stops.append(later)
            later = min(later, start)
        stops.reverse()
        previous = self.signer
        if observed and signer.kid != previous.kid:
            # It signed until the step that replaced it fell due, or until now when the
            # directory changed under it: never retired before that plus the keep.
            signed_until = min(now, self._next_change)
            kept = self._signed_until.get(previous.kid, -math.inf)
            self._signed_until[previous.kid] = max(kept, signed_until)
            logger.info("signing with key %s from now on", signer.kid)
        retire = [
            max(stop, self._signed_until.get(key.kid, -math.inf)) + policy.keep_after_signing
            for key, stop in zip(keys, stops, strict=True)
        ]
        published = [
            key for index, key in enumerate(keys) if index >= signing or retire[index] > now
        ]
        self._next_change = min(
            (moment for moment in [*starts, *retire[:signing]] if moment > now),
            default=math.inf,
        )
        self.signer = signer
        self.verifiers = {key.kid: key for key in published}
        self.published = tuple(reversed(published))
        jwks_json = json.dumps(
            {"keys": [key.jwk() for key in published]}, separators=(",", ":")
        ).encode()
        if jwks_json != self.jwks_json:
            self.jwks_json = jwks_json
            self.etag = '"' + hashlib.sha256(jwks_json).hexdigest()[:32] + '"'

    def start_of(self, key: SigningKey) -> float:
        """When ``key`` may sign at the earliest, on this instance."""
        return max(
            key.published + self.policy.publish_before_signing,
            self._earliest.get(key.kid, -math.inf),
        )

    def warn_about_clocks(self, now: float) -> None:
        """Warn about keys found at start whose published time lies ahead of this clock."""
        for key in self.ring:
            if key.published > now + self.policy.clock_skew:
                logger.warning(
                    "signing key %s: %s, %s ahead of this host's clock; it signs from %s",
                    key.kid,
                    _source(key),
                    _span(key.published - now),
                    _when(self.start_of(key)) if key is not self.signer else "now",
                )

    def load_if_changed(self, directory: Path) -> KeyRing | None:
        """Load the directory again if its key or schedule files changed since the last look.

        Blocking file I/O, so it runs off the event loop; ``replace`` then applies the new
        ring on the loop. A directory that cannot be read right now (a half-written file, a
        volume remounting) keeps the current keys and is read again next time.
        """
        try:
            fingerprint = tuple(
                sorted(
                    (path.name, stat.st_mtime_ns, stat.st_size)
                    for path in directory.iterdir()
                    if path.suffix in (".pem", SCHEDULE_SUFFIX) and (stat := path.stat())
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
        """Apply the keys of a reloaded directory; the keys in it that are new appeared
        at ``now``."""
        ring = self._keeping_unchanged_keys(ring)
        kids = {key.kid for key in ring}
        added = [key for key in ring if self.ring.get(key.kid) is None]
        for moments in (self._earliest, self._signed_until):
            for kid in set(moments) - kids:
                del moments[kid]
        believable = {key.kid: self.policy.believable(key.published, now) for key in added}
        for key in added:
            self._earliest[key.kid] = self.policy.earliest_start(key.published, now)
        self.ring = ring
        self.update(now)
        order = [key.kid for key in ring]
        for key in added:
            level, outcome = logging.INFO, "it signs now"
            if order.index(key.kid) < order.index(self.signer.kid):
                level = logging.WARNING
                outcome = (
                    f"it is older than the signing key {self.signer.kid} and will never sign; "
                    "add the next key with 'authsvc keys rotate'"
                )
            elif key is not self.signer:
                outcome = f"published now, signing from {_when(self.start_of(key))}"
            if believable[key.kid]:
                logger.log(level, "new signing key %s: %s", key.kid, outcome)
            else:
                logger.warning(
                    "new signing key %s: %s, %s %s this instance first saw it; %s",
                    key.kid,
                    _source(key),
                    _span(key.published - now),
                    "before" if key.published < now else "after",
                    outcome,
                )

    def _keeping_unchanged_keys(self, ring: KeyRing) -> KeyRing:
        """The same ring, with this ring's own objects for the keys that did not change:
        what they verified stays verified (see ``AccessTokens``)."""
        keys = []
        for key in ring:
            mine = self.ring.get(key.kid)
            same = mine is not None and mine.published_at == key.published_at
            keys.append(mine if same and mine is not None and mine.jwk() == key.jwk() else key)
        return KeyRing(keys, ring.refresh_secret)
