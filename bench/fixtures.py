"""Users, sessions and tokens for the scenarios, made with authsvc's own store and tokens.

Sessions are started by ``authsvc.store.Store.login`` (the login script) with refresh
tokens minted and access tokens signed under the server's key ring, exactly as a login
makes them, without paying argon2 for each: the password check is what ``login``
measures, not what the other scenarios need.

``bulk_load`` makes up to millions of live sessions the same way but streams them: a real
``Store`` runs over a recorder that answers at once, and the commands it would have sent
(HSET/SET of ``create_user``, EVALSHA of the login script with ``login``'s own KEYS and
ARGV) go to Redis as one pipelined RESP stream over a raw socket, as ``redis-cli --pipe``
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hiredis

from authsvc.config import Settings
from authsvc.keys import KeyRing
from authsvc.store import Login, SessionLimits, Store, UserRecord, keyspace, open_redis
from authsvc.tokens import AccessTokens, RefreshTokens, new_session_id, new_user_id

T = TypeVar("T")

# What a phone's login records (the store cuts the user agent to fit a listpack value).
DEVICE = "iPhone 15"
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
IP = "203.0.113.17"
# An argon2id hash of the default parameters is this long; nobody logs in with it.
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "s" * 22 + "$" + "h" * 43
SESSIONS_PER_USER = 4  # a phone, a laptop, a tablet, a TV: the bulk load's users


def limits_of(settings: Settings) -> SessionLimits:
    return SessionLimits(
        idle_ttl=settings.refresh_token_ttl,
        max_age=settings.session_max_age,
        max_sessions=settings.max_sessions_per_user,
    )


def phone_login(
    store: Store, user: UserRecord, session_id: str, token_hash: bytes, now: int
) -> Coroutine[Any, Any, Login]:
    """``Store.login`` as the server calls it for a phone whose password checked out."""
    return store.login(
        user,
        session_id,
        token_hash,
        now=now,
        device=DEVICE,
        user_agent=USER_AGENT,
        ip=IP,
        upgraded_password_hash=None,
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

    async def open(self) -> None:
        assert self.settings.redis_url is not None
        redis = await self._stack.enter_async_context(
            open_redis(self.settings.redis_url, socket_timeout=30)
        )
        self.store = await Store.open(redis, limits_of(self.settings))

    async def close(self) -> None:
        await self._stack.aclose()

    async def new_sessions(self, count: int) -> list[Session]:
        """Start ``count`` sessions, each of a new user, so no session cap ever ends one."""
        assert self.store is not None
        now = int(time.time())
        sessions = []
        for _ in range(count):
            user = UserRecord(new_user_id(), f"bench-{new_session_id()}", PASSWORD_HASH, "0")
            await self.store.create_user(user.user_id, user.username, user.password_hash, now=now)
            token = self.refresh.mint(user.user_id, new_session_id())
            await phone_login(self.store, user, token.session_id, token.hash, now)
            access_token, _ = self.access.sign(
                user_id=user.user_id, session_id=token.session_id, now=now
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


# -- the bulk load ---------------------------------------------------------------------------


class _Recorder:
    """Stands in for the Redis client under a real Store: records what it would send."""

    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.commands: list[tuple[Any, ...]] = []

    def register_script(self, text: str) -> _RecordedScript:
        self.scripts.append(text)
        return _RecordedScript(self, text)

    async def hset(self, name: str, mapping: dict[str, Any]) -> int:
        self.commands.append(("HSET", name, *itertools.chain(*mapping.items())))
        return len(mapping)

    async def set(self, name: str, value: str, nx: bool = False) -> bool:
        self.commands.append(("SET", name, value, *(["NX"] if nx else [])))
        return True


class _RecordedScript:
    def __init__(self, recorder: _Recorder, text: str) -> None:
        self.recorder = recorder
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # what EVALSHA names it by

    async def __call__(self, keys: list[str], args: list[Any]) -> list[bytes]:
        self.recorder.commands.append(("EVALSHA", self.sha, len(keys), *keys, *args))
        return [b"ok", b"0"]  # login.lua's answer for a session that started, nothing evicted


def _now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the recorder answers at once)."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the store awaited real I/O under the recorder")


def _bulk_commands(store: Store, recorder: _Recorder, count: int) -> Iterator[bytes]:
    """RESP of ``count`` sessions, SESSIONS_PER_USER per user, in chunks of a few MB."""
    now = int(time.time())
    user = UserRecord("", "", "", "0")
    for index in range(count):
        if index % SESSIONS_PER_USER == 0:
            user = UserRecord(new_user_id(), f"bulk-{new_user_id()}", PASSWORD_HASH, "0")
            _now(store.create_user(user.user_id, user.username, user.password_hash, now=now))
        _now(phone_login(store, user, new_session_id(), os.urandom(16), now))
        if len(recorder.commands) >= 10_000 or index == count - 1:
            yield b"".join(map(hiredis.pack_command, recorder.commands))
            recorder.commands.clear()


def bulk_load(host: str, port: int, settings: Settings, count: int, timeout: float = 300) -> None:
    """Start ``count`` live sessions (new users, SESSIONS_PER_USER each) by the login script.

    Raises:
        RuntimeError: Redis answered an error, or did not answer everything in ``timeout``.
    """
    recorder = _Recorder()
    store = Store(recorder, limits_of(settings))  # type: ignore[arg-type]
    users = -(-count // SESSIONS_PER_USER)
    # SCRIPT LOAD of each script, an HSET and a SET NX per user, an EVALSHA per session.
    expected = len(recorder.scripts) + 2 * users + count
    replies, errors = 0, []

    def read(sock: socket.socket) -> None:
        nonlocal replies
        reader = hiredis.Reader()
        while replies < expected:
            data = sock.recv(1 << 20)
            if not data:
                return
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies += 1
                if isinstance(reply, hiredis.ReplyError):
                    errors.append(str(reply))

    with socket.create_connection((host, port), timeout=timeout) as sock:
        # Redis answers while we send: a reader keeps its replies from filling the socket.
        reader = threading.Thread(target=read, args=(sock,), daemon=True)
        reader.start()
        for text in recorder.scripts:
            sock.sendall(hiredis.pack_command(("SCRIPT", "LOAD", text)))
        for chunk in _bulk_commands(store, recorder, count):
            sock.sendall(chunk)
        reader.join(timeout)
    if errors:
        raise RuntimeError(f"Redis refused {len(errors)} bulk-load commands: {errors[0]}")
    if replies < expected:
        raise RuntimeError(f"Redis answered {replies} of {expected} bulk-load commands")
