"""Users, sessions and tokens for the scenarios, made with authsvc's own store and tokens.

Sessions are started by ``authsvc.store.Store.login`` (the login script) with refresh
tokens minted and access tokens signed under the server's key ring, exactly as a login
makes them, without paying argon2 for each: the password check is what ``login``
measures, not what the other scenarios need.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authsvc.client import DpopKey
from authsvc.config import Settings
from authsvc.store import keyspace
from authsvc.store.connect import open_redis
from authsvc.store.records import Login, SessionLimits, UserRecord
from authsvc.store.redis_store import Store
from authsvc.tokens.access import AccessTokens
from authsvc.tokens.keys import KeyRing
from authsvc.tokens.refresh import RefreshTokens, new_session_id, new_user_id

# What a phone's login records (the store cuts the user agent to fit a listpack value).
DEVICE = "iPhone 15"
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
IP = "203.0.113.17"
# An argon2id hash of the default parameters is this long; nobody logs in with it.
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "s" * 22 + "$" + "h" * 43


def limits_of(settings: Settings) -> SessionLimits:
    return SessionLimits(
        idle_ttl=settings.refresh_token_ttl,
        max_age=settings.session_max_age,
        max_sessions=settings.max_sessions_per_user,
    )


def phone_login(
    store: Store,
    user: UserRecord,
    session_id: str,
    token_hash: bytes,
    now: int,
    jkt: str | None = None,
) -> Coroutine[Any, Any, Login]:
    """``Store.login`` as the server calls it for a phone whose password checked out (and,
    with ``jkt``, whose login carried a DPoP proof by that key)."""
    return store.login(
        user,
        session_id,
        token_hash,
        now=now,
        device=DEVICE,
        user_agent=USER_AGENT,
        ip=IP,
        upgraded_password_hash=None,
        jkt=jkt,
    )


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    session_id: str
    refresh_token: str
    access_token: str


class Fixtures:
    """Start sessions and sign tokens as the server under test would (its keys, its settings)."""

    def __init__(self, settings: Settings, keys_dir: Path) -> None:
        self.settings = settings
        ring = KeyRing.from_directory(keys_dir)
        self.refresh = RefreshTokens(ring.refresh_secret)
        self.access = AccessTokens(
            ring,
            issuer=settings.effective_issuer,
            audience=settings.audience,
            client_id=settings.client_id,
            ttl=settings.access_token_ttl,
        )
        self._stack = contextlib.AsyncExitStack()
        self.store: Store | None = None
        # The one DPoP key of the bound sessions (a phone's), and its thumbprint.
        self._dpop_key = Ed25519PrivateKey.generate()
        self.jkt = DpopKey(self._dpop_key).thumbprint

    async def open(self) -> None:
        assert self.settings.redis_url is not None
        redis = await self._stack.enter_async_context(
            open_redis(self.settings.redis_url, socket_timeout=30)
        )
        self.store = await Store.open(redis, limits_of(self.settings))

    async def close(self) -> None:
        await self._stack.aclose()

    async def new_sessions(self, count: int, *, bound: bool = False) -> list[Session]:
        """Start ``count`` sessions, each of a new user, so no session cap ever ends one;
        ``bound`` to the fixtures' DPoP key (``dpop_proofs`` signs for it)."""
        jkt = self.jkt if bound else None
        assert self.store is not None
        now = int(time.time())
        sessions = []
        for _ in range(count):
            user = UserRecord(new_user_id(), f"bench-{new_session_id()}", PASSWORD_HASH, "0")
            await self.store.create_user(user.user_id, user.username, user.password_hash, now=now)
            token = self.refresh.mint(user.user_id, new_session_id())
            await phone_login(self.store, user, token.session_id, token.hash, now, jkt)
            access_token, _ = self.access.sign(
                user_id=user.user_id, session_id=token.session_id, now=now, jkt=jkt
            )
            sessions.append(Session(user.user_id, token.session_id, token.value, access_token))
        return sessions

    def sign_fresh(self, sessions: list[Session], count: int) -> list[str]:
        """``count`` access tokens never presented before (each has its own jti)."""
        now = int(time.time())
        cycle = itertools.cycle(sessions)
        return [
            self.access.sign(user_id=s.user_id, session_id=s.session_id, now=now)[0]
            for s in itertools.islice(cycle, count)
        ]

    def dpop_proofs(
        self,
        method: str,
        path: str,
        count: int,
        *,
        seconds: int,
        access_tokens: list[str] | None = None,
    ) -> list[str]:
        """``count`` proofs by the fixtures' key for ``method`` ``path``, each with its own
        jti, all acceptable through a run of ``seconds`` (at most 120): their iat is half
        the run ahead, within the server's 60 s either way from start to end. With
        ``access_tokens``, lines ``<token> <proof>``, the proof's ath naming its token."""
        ahead = min(60, seconds // 2)
        key = DpopKey(self._dpop_key, clock=lambda: int(time.time()) + ahead)
        url = self.settings.effective_issuer.rstrip("/") + path
        if not access_tokens:
            return [key.proof(method, url) for _ in range(count)]
        cycle = itertools.cycle(access_tokens)
        return [
            f"{token} {key.proof(method, url, token)}" for token in itertools.islice(cycle, count)
        ]


async def session_memory(redis_url: str, settings: Settings, count: int) -> dict[str, float]:
    """Bytes of Redis memory per live session, over ``count`` users of one session each.

    ``session`` is MEMORY USAGE of the session hash plus the user's session index (as
    tests/test_session_memory.py counts it), ``user`` that of the user hash, and
    ``used_memory`` the growth of Redis's INFO used_memory divided by ``count`` (the
    keyspace's own overhead included). The database is flushed before and after.
    """
    async with open_redis(redis_url, socket_timeout=30) as redis:
        store = await Store.open(redis, limits_of(settings))
        await redis.flushdb()
        before = (await redis.info("memory"))["used_memory"]
        now = int(time.time())
        started = [
            (UserRecord(new_user_id(), f"m-{i}", PASSWORD_HASH, "0"), new_session_id())
            for i in range(count)
        ]

        async def start(user: UserRecord, session_id: str) -> None:
            await store.create_user(user.user_id, user.username, user.password_hash, now=now)
            await phone_login(store, user, session_id, os.urandom(16), now)

        for first in range(0, count, 64):
            await asyncio.gather(*(start(*pair) for pair in started[first : first + 64]))
        after = (await redis.info("memory"))["used_memory"]
        async with redis.pipeline(transaction=False) as pipe:
            for user, session_id in started:
                pipe.memory_usage(keyspace.session(user.user_id, session_id), samples=0)
                pipe.memory_usage(keyspace.sessions(user.user_id), samples=0)
                pipe.memory_usage(keyspace.user(user.user_id), samples=0)
            usages = await pipe.execute()
        await redis.flushdb()
    return {
        "sessions": count,
        "session": (sum(usages[0::3]) + sum(usages[1::3])) / count,
        "user": sum(usages[2::3]) / count,
        "used_memory": (after - before) / count,
    }
