"""Typed keys of the objects an application holds, shared by handlers and app setup."""

from __future__ import annotations

from aiohttp import web

from authsvc.clock import Clock
from authsvc.config import Settings
from authsvc.keys import KeyRing
from authsvc.metrics import Metrics
from authsvc.passwords import Hasher
from authsvc.sessions import SessionService
from authsvc.store import Store

SETTINGS = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
KEY_RING = web.AppKey("key_ring", KeyRing)
STORE = web.AppKey("store", Store)
SESSIONS = web.AppKey("sessions", SessionService)
HASHER = web.AppKey("hasher", Hasher)
METRICS = web.AppKey("metrics", Metrics)
