"""The store: users, sessions and rate-limit counters in Redis, behind one ``Store``.

``redis_store`` holds the Store and its scripts (``lua/``), ``records`` what it returns,
``settings_check`` what Redis's own settings put at risk,
``keyspace`` and ``scriptkeys`` every key name and each script's KEYS, ``connect`` the
client for each topology (one server, Sentinel, Cluster, memory://), ``errors`` which
Redis failures are an unavailable store, and ``embedded`` the bundled Valkey.
"""

from authsvc.store.connect import StoreAddress, StoreUrlError, open_redis, parse_store_url
from authsvc.store.records import (
    Bucket,
    Login,
    LoginOutcome,
    Rotation,
    RotationOutcome,
    SessionLimits,
    SessionRecord,
    StoreCheck,
    UserRecord,
)
from authsvc.store.redis_store import Store

__all__ = [
    "Bucket",
    "Login",
    "LoginOutcome",
    "Rotation",
    "RotationOutcome",
    "SessionLimits",
    "SessionRecord",
    "Store",
    "StoreAddress",
    "StoreCheck",
    "StoreUrlError",
    "UserRecord",
    "open_redis",
    "parse_store_url",
]
