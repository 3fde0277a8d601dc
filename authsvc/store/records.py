"""What the store returns: outcomes of its scripts and records of users, sessions and events."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RotationOutcome(enum.Enum):
    OK = "ok"
    GRACE = "grace"
    REPLAY = "replay"
    UNKNOWN = "unknown"
    LIMITED = "limited"
    # The session is bound to a DPoP key and the refresh proved another key, or none.
    WRONG_KEY = "wrong_key"


class LoginOutcome(enum.Enum):
    OK = "ok"
    DISABLED = "disabled"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    username: str
    password_hash: str
    epoch: str
    roles: tuple[str, ...] = ()
    disabled: bool = False
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class Login:
    outcome: LoginOutcome
    expires_at: int = 0
    # Sessions the cap (MAX_SESSIONS_PER_USER) ended to make room for this one.
    evicted: tuple[str, ...] = ()
    # The user's roles as the login script found them.
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotationOutcome
    expires_at: int = 0
    sealed_successor: bytes = b""
    # LIMITED: seconds until the client address's refresh bucket has a token again.
    retry_after: int = 0
    # OK, GRACE: the user's roles now, for the access token signed after the rotation.
    roles: tuple[str, ...] = ()
    # OK, GRACE: the DPoP key the session is bound to (its thumbprint), None when unbound.
    jkt: str | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket of one scope and value: ``capacity`` tokens, all back in ``refill`` s."""

    scope: str
    value: str
    capacity: int
    refill: int


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    created_at: int
    last_used_at: int
    expires_at: int
    device: str
    user_agent: str
    ip: str


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """How long sessions live and how many a user holds; the scripts decide expiry by them."""

    idle_ttl: int  # REFRESH_TOKEN_TTL, from the last use
    max_age: int  # SESSION_MAX_AGE, from the login
    max_sessions: int  # MAX_SESSIONS_PER_USER

    def expires_at(self, created_at: int, last_used_at: int) -> int:
        return min(last_used_at + self.idle_ttl, created_at + self.max_age)


@dataclass(frozen=True, slots=True)
class StoreCheck:
    """What the store's own settings mean for authsvc's promises, for logs and /readyz."""

    maxmemory_policy: str | None  # None when CONFIG GET is not allowed
    persistence: bool | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One security event of a user, as the store keeps it (``eventcodec``).

    ``type`` is the contract's name of the event (``login``, ``refresh_replay``...: see
    ``authsvc.domain.events.SecurityEventType``); ``ip``, ``user_agent`` and ``device`` are
    those of the request that caused it, empty when it had none.
    """

    type: str
    at: int
    session_id: str | None = None
    ip: str = ""
    user_agent: str = ""
    device: str = ""


@dataclass(frozen=True, slots=True)
class EventLimits:
    """How many security events a user keeps, and for how long."""

    per_user: int = 50  # EVENTS_PER_USER: the newest are kept
    ttl: int = 7_776_000  # EVENTS_TTL, seconds: 90 days

    def live(self, event: EventRecord, *, now: int) -> bool:
        return event.at + self.ttl > now
