"""Store: one async method per operation on Redis; replies become dataclasses.

Redis connection errors and timeouts become ``StoreUnavailable``; the store knows
nothing of HTTP or JWT. Key names come from ``keyspace``; every read-then-write is one
Lua script from ``lua/``, registered once and called with EVALSHA.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from authsvc.errors import StoreUnavailable
from authsvc.store import keyspace

__all__ = [
    "LoginOutcome",
    "Rotation",
    "RotationOutcome",
    "SessionRecord",
    "Store",
    "UserRecord",
]

logger = logging.getLogger(__name__)

# Replies of a Redis that is out of memory, busy with a script, failing over or resharding:
# "retry later", not a bug.
_TRANSIENT_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="Store")

# A logout-all deletes at most this many session keys in one script call; more are ended
# by the epoch all the same and their keys pruned later, to keep each call short.
REVOKE_BATCH = 1000


class RotationOutcome(enum.Enum):
    OK = "ok"
    GRACE = "grace"
    REPLAY = "replay"
    UNKNOWN = "unknown"


class LoginOutcome(enum.Enum):
    OK = "ok"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: str
    username: str
    password_hash: str
    epoch: str


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotationOutcome
    expires_at: int = 0
    sealed_successor: bytes = b""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    session_id: str
    created_at: int
    last_used_at: int
    expires_at: int
    device: str
    user_agent: str
    ip: str


def _translate_errors(
    method: Callable[Concatenate[S, P], Awaitable[T]],
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError):
            # ReadOnlyError: a replica answered, as during a failover. OSError: a socket
            # failure redis-py did not wrap.
            raise StoreUnavailable(retry_after=self.retry_after) from None
        except ResponseError as exc:
            if str(exc).startswith(_TRANSIENT_REPLIES):
                logger.warning("store refused a command: %s", str(exc).split(" ", 1)[0])
                raise StoreUnavailable(retry_after=self.retry_after) from None
            raise

    return functools.wraps(method)(wrapper)


def _load_script(redis: Redis, name: str) -> AsyncScript:
    source = importlib.resources.files("authsvc.store").joinpath("lua", f"{name}.lua")
    return redis.register_script(source.read_text(encoding="utf-8"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Store:
    """Session, chain and user state in Redis."""

    def __init__(self, redis: Redis, *, retry_after: int = 1) -> None:
        self.redis = redis
        self.retry_after = retry_after
        self._login = _load_script(redis, "login")
        self._rotate = _load_script(redis, "rotate")
        self._session_live = _load_script(redis, "session_live")
        self._revoke_session = _load_script(redis, "revoke_session")
        self._revoke_user = _load_script(redis, "revoke_user")
        self._count_attempt = _load_script(redis, "count_attempt")
        self._scripts = (
            self._login, self._rotate, self._session_live,
            self._revoke_session, self._revoke_user, self._count_attempt,
        )  # fmt: skip

    @classmethod
    async def open(cls, redis: Redis, *, retry_after: int = 1) -> Store:
        """Build a store on a client, loading the scripts when Redis answers.

        A Redis that is down at start is not fatal: /readyz says so, and EVALSHA loads
        the scripts on first use once it is back.
        """
        store = cls(redis, retry_after=retry_after)
        with contextlib.suppress(StoreUnavailable):
            await store.load_scripts()
        return store

    @_translate_errors
    async def load_scripts(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for script in self._scripts:
                pipe.script_load(script.script)
            await pipe.execute()

    @_translate_errors
    async def ping(self) -> None:
        await self.redis.ping()

    # -- users ---------------------------------------------------------------------------

    @_translate_errors
    async def create_user(
        self, user_id: str, username: str, password_hash: str, *, now: int
    ) -> bool:
        """Create a user; False when the username is taken.

        The user hash is written first under a fresh id, then the username is claimed with
        SET NX (another slot on Cluster, so not one script): a crash in between leaves an
        unreachable user hash, never a username that points nowhere it should not.
        """
        user_key = keyspace.user(user_id)
        await self.redis.hset(
            user_key,
            mapping={
                "username": username,
                "password_hash": password_hash,
                "created_at": now,
                "epoch": 0,
            },
        )
        if await self.redis.set(keyspace.username(username), user_id, nx=True):
            return True
        await self.redis.delete(user_key)
        return False

    @_translate_errors
    async def find_user(self, username: str) -> UserRecord | None:
        user_id = await self.redis.get(keyspace.username(username))
        if user_id is None:
            return None
        user_id = _text(user_id)
        fields = await self.redis.hmget(
            keyspace.user(user_id), ["username", "password_hash", "epoch"]
        )
        if fields[0] is None:
            return None
        return UserRecord(user_id, _text(fields[0]), _text(fields[1]), _text(fields[2]))

    # -- sessions --------------------------------------------------------------------------

    @_translate_errors
    async def login(
        self,
        user: UserRecord,
        session_id: str,
        token_hash: str,
        *,
        now: int,
        idle_ttl: int,
        max_age: int,
        device: str,
        user_agent: str,
        ip: str,
        upgraded_password_hash: str | None,
    ) -> tuple[LoginOutcome, int]:
        reply = await self._login(
            keys=[
                keyspace.user(user.user_id),
                keyspace.session(user.user_id, session_id),
                keyspace.sessions(user.user_id),
            ],
            args=[
                session_id,
                token_hash,
                now,
                idle_ttl,
                max_age,
                user.epoch,
                device,
                user_agent,
                ip,
                upgraded_password_hash or "",
            ],
        )
        outcome = LoginOutcome(_text(reply[0]))
        return outcome, int(reply[1]) if outcome is LoginOutcome.OK else 0

    @_translate_errors
    async def rotate(
        self,
        user_id: str,
        session_id: str,
        presented_hash: str,
        successor_hash: str,
        sealed_successor: bytes,
        *,
        now: int,
        grace: int,
        idle_ttl: int,
    ) -> Rotation:
        reply = await self._rotate(
            keys=[
                keyspace.user(user_id),
                keyspace.session(user_id, session_id),
                keyspace.chain(user_id, session_id),
                keyspace.sessions(user_id),
            ],
            args=[
                session_id,
                presented_hash,
                successor_hash,
                sealed_successor,
                now,
                grace,
                idle_ttl,
            ],
        )
        outcome = RotationOutcome(_text(reply[0]))
        if outcome is RotationOutcome.OK:
            return Rotation(outcome, expires_at=int(reply[1]))
        if outcome is RotationOutcome.GRACE:
            return Rotation(outcome, expires_at=int(reply[2]), sealed_successor=bytes(reply[1]))
        return Rotation(outcome)

    @_translate_errors
    async def session_live(self, user_id: str, session_id: str, *, now: int) -> str | None:
        """Return the username when the session is live, else None: one round trip."""
        reply = await self._session_live(
            keys=[keyspace.user(user_id), keyspace.session(user_id, session_id)], args=[now]
        )
        return _text(reply[1]) if reply[0] == 1 else None

    @_translate_errors
    async def revoke_session(self, user_id: str, session_id: str, *, now: int) -> bool:
        """End one session; False when it was not live."""
        reply = await self._revoke_session(
            keys=[
                keyspace.user(user_id),
                keyspace.session(user_id, session_id),
                keyspace.chain(user_id, session_id),
                keyspace.sessions(user_id),
            ],
            args=[session_id, now],
        )
        return bool(reply)

    @_translate_errors
    async def revoke_user(self, user_id: str) -> None:
        """End every session of a user at once."""
        index_key = keyspace.sessions(user_id)
        listed = [_text(sid) for sid in await self.redis.zrange(index_key, 0, REVOKE_BATCH - 1)]
        keys = [keyspace.user(user_id), index_key]
        for sid in listed:
            keys += [keyspace.session(user_id, sid), keyspace.chain(user_id, sid)]
        await self._revoke_user(keys=keys, args=listed)

    @_translate_errors
    async def list_sessions(self, user_id: str, *, now: int) -> list[SessionRecord]:
        """Return the live sessions of a user, newest first, pruning dead index entries."""
        index_key = keyspace.sessions(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index_key, "-inf", now)
            pipe.zrange(index_key, 0, -1)
            pipe.hget(keyspace.user(user_id), "epoch")
            _, sids, epoch = await pipe.execute()
        if not sids:
            return []
        fields = ["epoch", "created_at", "last_used_at", "expires_at", "device", "user_agent", "ip"]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hmget(keyspace.session(user_id, _text(sid)), fields)
            rows = await pipe.execute()
        live: list[SessionRecord] = []
        dead: list[str] = []
        for raw_sid, row in zip(sids, rows, strict=True):
            sid = _text(raw_sid)
            if row[0] is None or row[0] != epoch or int(row[3]) <= now:
                dead.append(sid)
                continue
            live.append(
                SessionRecord(
                    session_id=sid,
                    created_at=int(row[1]),
                    last_used_at=int(row[2]),
                    expires_at=int(row[3]),
                    device=_text(row[4]),
                    user_agent=_text(row[5]),
                    ip=_text(row[6]),
                )
            )
        if dead:
            # Sessions ended by a logout-all that raced with their login; their keys
            # expire on their own, and only the index needs mending.
            await self.redis.zrem(index_key, *dead)
        live.sort(key=lambda record: (record.created_at, record.session_id), reverse=True)
        return live

    # -- rate limits -------------------------------------------------------------------

    @_translate_errors
    async def count_login_attempts(
        self, scopes: list[tuple[str, str]], *, now: int, window: int
    ) -> list[int]:
        """Count one attempt against each (scope, value) in the window holding ``now``."""
        window_start = now - now % window
        counts = []
        for scope, value in scopes:
            reply = await self._count_attempt(
                keys=[keyspace.login_attempts(scope, value, window_start)],
                args=[window_start + window],
            )
            counts.append(int(reply))
        return counts
