"""Typed keys of the objects an application holds, shared by handlers and app setup."""

from __future__ import annotations

from aiohttp import web

from authsvc.clock import Clock
from authsvc.config import Settings
from authsvc.domain.accounts import AccountService
from authsvc.domain.passwords import Hasher
from authsvc.domain.ratelimit import Throttle
from authsvc.domain.security_events import SecurityEvents
from authsvc.domain.sessions import SessionService
from authsvc.store.redis_store import Store
from authsvc.store.supervision import StoreState
from authsvc.telemetry.metrics import Metrics
from authsvc.tokens.dpop import ProofVerifier
from authsvc.tokens.keys import KeyRing
from authsvc.tokens.rotation import ActiveKeys


class Once:
    """Something an application does once in its life, such as a warning."""

    def __init__(self) -> None:
        self.done = False


SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
KEY_RING = web.AppKey("key_ring", KeyRing)
ACTIVE_KEYS = web.AppKey("active_keys", ActiveKeys)
STORE = web.AppKey("store", Store)
SESSIONS = web.AppKey("sessions", SessionService)
# Record (operator API) and list a user's security events: see its module's docstring.
SECURITY_EVENTS = web.AppKey("security_events", SecurityEvents)
ACCOUNTS = web.AppKey("accounts", AccountService)
HASHER = web.AppKey("hasher", Hasher)
THROTTLE = web.AppKey("throttle", Throttle)
UNTRUSTED_FORWARDING_WARNED = web.AppKey("untrusted_forwarding_warned", Once)
METRICS = web.AppKey("metrics", Metrics)
# Checks DPoP proofs, keeping the keys of the proof headers it has seen (RFC 9449).
DPOP_PROOFS = web.AppKey("dpop_proofs", ProofVerifier)
# Only with the embedded store: whether its process is known to be dead (see /healthz).
EMBEDDED_STORE_STATE = web.AppKey("embedded_store_state", StoreState)
