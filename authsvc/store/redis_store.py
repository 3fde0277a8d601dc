"""Store: one async method per operation on Redis; replies become records.

Every read-then-write is one Lua script from ``lua/`` (loaded once, called with EVALSHA),
whose KEYS come from ``scriptkeys`` and share one user's hash tag, so the same code runs
on one server, behind Sentinel and on Cluster. What lies outside a user's slot (the
username index, rate-limit counters) is reached by single-key commands and scripts. An
unavailable Redis raises ``StoreUnavailable`` (see ``errors``); the store knows nothing
of HTTP or JWT.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis, RedisCluster

from authsvc.errors import StoreUnavailable
from authsvc.store import eventcodec, keyspace, scriptkeys
from authsvc.store.batching import CommandBatcher
from authsvc.store.connect import RedisClient
from authsvc.store.errors import translate_errors
from authsvc.store.records import (
    Bucket,
    EventLimits,
    EventRecord,
    Login,
    LoginOutcome,
    Rotation,
    RotationOutcome,
    SessionLimits,
    SessionRecord,
    StoreCheck,
    UserRecord,
)
from authsvc.store.scripts import Script
from authsvc.store.settings_check import check_settings

logger = logging.getLogger(__name__)

# A logout-all deletes at most this many session hashes in one script call; the others
# end all the same (their index goes) and their hashes expire on their own.
REVOKE_BATCH = 1000
# Redis keeps a hash a compact listpack while every value fits hash-max-listpack-value
# (64 bytes by default): longer device names and user agents are cut to fit.
LISTPACK_VALUE_BYTES = 64
# The sealed successor outlives the grace a little, so that a retry at its very end still
# finds it; whether the grace holds is decided from `now`, not from this TTL.
SUCCESSOR_TTL_MARGIN = 2

_SCRIPTS = (
    "login", "rotate", "session_live", "revoke_session", "revoke_user", "take_token",
    "count_failure", "record_event", "change_password", "set_disabled", "set_roles",
    "delete_user", "release_username",
)  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _encoded(event: EventRecord | None) -> bytes:
    return b"" if event is None else eventcodec.encode(event)


def roles_field(roles: tuple[str, ...]) -> str:
    """Roles as the user hash keeps them: comma-separated (a role has no comma)."""
    return ",".join(roles)


def _roles(value: Any) -> tuple[str, ...]:
    text = "" if value is None else _text(value)
    return tuple(text.split(",")) if text else ()


def _fit(text: str, limit: int = LISTPACK_VALUE_BYTES) -> str:
    """Cut ``text`` to at most ``limit`` bytes of UTF-8, never inside a character."""
    return text.encode()[:limit].decode(errors="ignore")


class Store:
    """Session, chain, user and security-event state in Redis.

    A security event rides in the script that decides what caused it (``event`` and
    ``*_event`` arguments: a login, the cap's evictions, a replay, a revocation), so
    recording it costs no round trip of its own; ``record_event`` records one that no
    script decides, ``list_events`` reads them.
    """

    def __init__(
        self,
        redis: RedisClient,
        limits: SessionLimits,
        *,
        events: EventLimits | None = None,
        retry_after: int = 1,
        on_unavailable: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.events = events or EventLimits()
        # ARGV of every script that may record an event, before the event itself.
        self._event_args = (self.events.per_user, self.events.ttl)
        self.retry_after = retry_after
        self._on_unavailable = on_unavailable
        self.check: StoreCheck | None = None
        # A Cluster keeps a client address's bucket in a slot of its own: there a throttled
        # refresh takes from it in a call before the rotation, elsewhere in the same one.
        self._bucket_in_rotation = not isinstance(redis, RedisCluster)
        execute = (
            CommandBatcher(redis).execute if isinstance(redis, Redis) else redis.execute_command
        )
        self._execute = execute
        scripts = {name: Script(redis, name, execute) for name in _SCRIPTS}
        self._scripts = tuple(scripts.values())
        self._login = scripts["login"]
        self._rotate = scripts["rotate"]
        self._session_live = scripts["session_live"]
        self._revoke_session = scripts["revoke_session"]
        self._revoke_user = scripts["revoke_user"]
        self._take_token = scripts["take_token"]
        self._count_failure = scripts["count_failure"]
        self._record_event = scripts["record_event"]
        self._change_password = scripts["change_password"]
        self._set_disabled = scripts["set_disabled"]
        self._set_roles = scripts["set_roles"]
        self._delete_user = scripts["delete_user"]
        self._release_username = scripts["release_username"]

    @classmethod
    async def open(
        cls,
        redis: RedisClient,
        limits: SessionLimits,
        *,
        events: EventLimits | None = None,
        retry_after: int = 1,
        on_unavailable: Callable[[], None] | None = None,
    ) -> Store:
        """Build a store on a client, loading the scripts and checking Redis's settings.

        A Redis that is down at start is not fatal: /readyz says so, EVALSHA loads the
        scripts on first use once it is back, and the settings are checked then.
        """
        store = cls(
            redis, limits, events=events, retry_after=retry_after, on_unavailable=on_unavailable
        )
        with contextlib.suppress(StoreUnavailable):
            await store.load_scripts()
            await store.check_settings()
        return store

    def note_unavailable(self) -> None:
        """Called by ``translate_errors`` for every call that found the store unavailable."""
        if self._on_unavailable is not None:
            self._on_unavailable()

    @translate_errors
    async def load_scripts(self) -> None:
        # SCRIPT LOAD reaches every master of a Cluster.
        for script in self._scripts:
            await self.redis.script_load(script.text)

    @translate_errors
    async def ping(self) -> None:
        if isinstance(self.redis, RedisCluster):
            await self.redis.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.redis.ping()

    @translate_errors
    async def check_settings(self) -> StoreCheck:
        """Read what authsvc's promises depend on (see ``settings_check``) and keep it."""
        self.check = await check_settings(self.redis)
        return self.check

    # -- users ---------------------------------------------------------------------------

    @translate_errors
    async def create_user(
        self, user_id: str, username: str, password_hash: str, *, now: int
    ) -> bool:
        """Create a user; False when the username is taken.

        The user hash is written first under a fresh id, then the username is claimed with
        SET NX (another slot on Cluster, so not one script): a crash in between leaves an
        unreachable user hash, never a username that points nowhere it should not.

        Every step may run twice: redis-py retries a command whose reply was lost, and a
        retried SET NX finds the claim its first run made. So a failed claim reads who
        holds the name, and only another user id means the name is taken.
        """
        user_key = keyspace.user(user_id)
        username_key = keyspace.username(username)
        await self.redis.hset(
            user_key,
            mapping={
                "username": username,
                "password_hash": password_hash,
                "created_at": now,
                "epoch": 0,
            },
        )
        if await self.redis.set(username_key, user_id, nx=True):
            return True
        holder = await self.redis.get(username_key)
        if holder is not None and _text(holder) == user_id:
            return True
        if holder is not None and not await self.redis.exists(keyspace.user(_text(holder))):
            # A claim whose user hash is gone is a deleted account's whose deletion stopped
            # before it freed the name (the user hash is written before any claim, and goes
            # first when deleted): free it, and claim again.
            await self._release_username(scriptkeys.release_username(username), [_text(holder)])
            if await self.redis.set(username_key, user_id, nx=True):
                return True
        await self.redis.delete(user_key)
        return False

    @translate_errors
    async def username_taken(self, username: str) -> bool:
        """Whether an account holds the name; a claim left by an interrupted deletion (its
        user hash is gone) does not count (``create_user`` frees it)."""
        holder = await self.redis.get(keyspace.username(username))
        if holder is None:
            return False
        return bool(await self.redis.exists(keyspace.user(_text(holder))))

    @translate_errors
    async def find_user(self, username: str) -> UserRecord | None:
        """The user a username names, in two round trips whether there is one or not.

        The username index and the user hash lie in two slots (Cluster), so this is two
        commands; an unknown name reads the hash of a user id no account has, so that the
        time a login takes does not tell whether a username exists.
        """
        found = await self.redis.get(keyspace.username(username))
        user_id = secrets.token_hex(16) if found is None else _text(found)
        record = await self._user_record(user_id)
        return None if found is None else record

    @translate_errors
    async def user(self, user_id: str) -> UserRecord | None:
        """The user of an id, or None: one round trip."""
        return await self._user_record(user_id)

    async def _user_record(self, user_id: str) -> UserRecord | None:
        fields = await self.redis.hmget(
            keyspace.user(user_id),
            ["username", "password_hash", "epoch", "roles", "disabled", "created_at"],
        )
        if fields[0] is None:
            return None
        return UserRecord(
            user_id,
            _text(fields[0]),
            _text(fields[1]),
            _text(fields[2]),
            roles=_roles(fields[3]),
            disabled=fields[4] is not None,
            created_at=int(fields[5] or 0),
        )

    # -- sessions --------------------------------------------------------------------------

    @translate_errors
    async def login(
        self,
        user: UserRecord,
        session_id: str,
        token_hash: bytes,
        *,
        now: int,
        device: str,
        user_agent: str,
        ip: str,
        upgraded_password_hash: str | None,
        event: EventRecord | None = None,
        evicted_event: EventRecord | None = None,
        jkt: str | None = None,
    ) -> Login:
        """Start a session at chain position 0, ending the least recently used beyond the cap.

        Records ``event`` when the session starts, and ``evicted_event`` for each session
        the cap ends, with that session's id (the script fills it in). ``jkt`` binds the
        session to a DPoP key: its refreshes must then prove that key (``rotate``).
        """
        reply = await self._login(
            scriptkeys.login(user.user_id, session_id),
            [
                session_id,
                token_hash,
                now,
                self.limits.idle_ttl,
                self.limits.max_age,
                user.epoch,
                _fit(device),
                _fit(user_agent),
                ip,
                upgraded_password_hash or "",
                self.limits.max_sessions,
                *self._event_args,
                _encoded(event),
                b"" if evicted_event is None else eventcodec.encode_without_session(evicted_event),
                jkt or "",
            ],
        )
        outcome = LoginOutcome(_text(reply[0]))
        if outcome is not LoginOutcome.OK:
            return Login(outcome)
        evicted = tuple(_text(sid) for sid in reply[3:])
        if evicted:
            # Already ended by the script (their index entries are gone); this only frees
            # their memory, so a failure here costs nothing but a late expiry.
            keys = []
            for sid in evicted:
                keys += [keyspace.session(user.user_id, sid), keyspace.successor(user.user_id, sid)]
            await self.redis.delete(*keys)
        return Login(outcome, expires_at=int(reply[1]), evicted=evicted, roles=_roles(reply[2]))

    @translate_errors
    async def rotate(
        self,
        user_id: str,
        session_id: str,
        position: int,
        presented_hash: bytes,
        successor_hash: bytes,
        sealed_successor: bytes,
        *,
        now: int,
        grace: int,
        bucket: Bucket | None = None,
        replay_event: EventRecord | None = None,
        jkt: str | None = None,
    ) -> Rotation:
        """Rotate a session's chain; with a ``bucket``, take a token from it first.

        A refresh refused by the bucket changes nothing else (``RotationOutcome.LIMITED``).
        A replay records ``replay_event``. ``jkt`` is the DPoP key the refresh proved: a
        session bound to another key, or to one when ``jkt`` is None, is refused before
        anything changes (``RotationOutcome.WRONG_KEY``).
        ``sealed_successor`` is kept through the grace and handed back to a retry
        (``RotationOutcome.GRACE``); the store cannot open it.
        """
        keys = scriptkeys.rotate(user_id, session_id)
        bucket_args: list[int] = []
        if bucket is not None:
            if self._bucket_in_rotation:
                keys.append(keyspace.rate_limit(bucket.scope, bucket.value))
                bucket_args = [bucket.capacity, bucket.refill]
            else:
                retry_after = await self._take(bucket, now=now)
                if retry_after:
                    return Rotation(RotationOutcome.LIMITED, retry_after=retry_after)
        reply = await self._rotate(
            keys,
            [
                session_id,
                position,
                presented_hash,
                successor_hash,
                sealed_successor,
                now,
                grace,
                self.limits.idle_ttl,
                self.limits.max_age,
                grace + SUCCESSOR_TTL_MARGIN,
                *self._event_args,
                _encoded(replay_event),
                jkt or "",
                *bucket_args,
            ],
        )
        outcome = RotationOutcome(_text(reply[0]))
        if outcome is RotationOutcome.OK:
            return Rotation(
                outcome,
                expires_at=int(reply[1]),
                roles=_roles(reply[2]),
                jkt=_text(reply[3]) or None,
            )
        if outcome is RotationOutcome.GRACE:
            return Rotation(
                outcome,
                expires_at=int(reply[2]),
                sealed_successor=bytes(reply[1]),
                roles=_roles(reply[3]),
                jkt=_text(reply[4]) or None,
            )
        if outcome is RotationOutcome.LIMITED:
            return Rotation(outcome, retry_after=int(reply[1]))
        return Rotation(outcome)

    @translate_errors
    async def session_live(self, user_id: str, session_id: str, *, now: int) -> str | None:
        """Return the username when the session is live, else None: one round trip."""
        reply = await self._session_live(
            scriptkeys.session_live(user_id, session_id),
            [session_id, now, self.limits.idle_ttl, self.limits.max_age],
        )
        return _text(reply[1]) if reply[0] == 1 else None

    @translate_errors
    async def revoke_session(
        self, user_id: str, session_id: str, *, now: int, event: EventRecord | None = None
    ) -> bool:
        """End one session; False when it was not live. Records ``event`` when it was."""
        reply = await self._revoke_session(
            scriptkeys.revoke_session(user_id, session_id),
            [session_id, now, self.limits.idle_ttl, self.limits.max_age,
             *self._event_args, _encoded(event)],
        )  # fmt: skip
        return bool(reply)

    @translate_errors
    async def revoke_user(self, user_id: str, *, event: EventRecord | None = None) -> int:
        """End every session of a user at once; return how many the user's index listed.

        Records ``event`` when the user exists.
        """
        listed = await self.redis.zrange(keyspace.sessions(user_id), 0, REVOKE_BATCH - 1)
        await self._revoke_user(
            scriptkeys.revoke_user(user_id, [_text(s) for s in listed]),
            [*self._event_args, _encoded(event)],
        )
        return len(listed)

    @translate_errors
    async def list_sessions(self, user_id: str, *, now: int) -> list[SessionRecord]:
        """Return the live sessions of a user, newest first, pruning ended index entries."""
        index_key = keyspace.sessions(user_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index_key, "-inf", now - self.limits.idle_ttl)
            pipe.zrange(index_key, 0, -1, withscores=True)
            _, entries = await pipe.execute()
        if not entries:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, _ in entries:
                pipe.hmget(keyspace.session(user_id, _text(sid)), ["c", "d", "a", "i"])
            rows = await pipe.execute()
        live: list[SessionRecord] = []
        ended: list[str] = []
        for (raw_sid, score), row in zip(entries, rows, strict=True):
            sid, last_used_at = _text(raw_sid), int(score)
            if row[0] is None:
                ended.append(sid)
                continue
            created_at = int(row[0])
            expires_at = self.limits.expires_at(created_at, last_used_at)
            if expires_at <= now:
                ended.append(sid)  # past SESSION_MAX_AGE
                continue
            live.append(
                SessionRecord(
                    session_id=sid,
                    created_at=created_at,
                    last_used_at=last_used_at,
                    expires_at=expires_at,
                    device=_text(row[1] or b""),
                    user_agent=_text(row[2] or b""),
                    ip=_text(row[3] or b""),
                )
            )
        if ended:
            await self.redis.zrem(index_key, *ended)
        live.sort(key=lambda record: (record.created_at, record.session_id), reverse=True)
        return live

    # -- security events -----------------------------------------------------------------

    @translate_errors
    async def record_event(self, user_id: str, event: EventRecord) -> None:
        """Record an event no other script decides: one round trip."""
        await self._record_event(
            scriptkeys.record_event(user_id), [*self._event_args, eventcodec.encode(event)]
        )

    @translate_errors
    async def record_no_event(self) -> None:
        """The round trip ``record_event`` costs, recording nothing: for a login whose
        username no account has, so that a wrong password's event does not tell from the
        outside which usernames exist."""
        await self._record_event(scriptkeys.record_event(secrets.token_hex(16)), [0, 0, b""])

    @translate_errors
    async def list_events(self, user_id: str, *, now: int) -> list[EventRecord]:
        """The user's security events, newest first: the newest EVENTS_PER_USER, none
        older than EVENTS_TTL (the list lives on while newer events come)."""
        raw = await self.redis.lrange(keyspace.events(user_id), 0, self.events.per_user - 1)
        events = (eventcodec.decode(item) for item in raw if isinstance(item, bytes))
        return [e for e in events if e is not None and self.events.live(e, now=now)]

    # -- account changes ---------------------------------------------------------------

    async def _forget_sessions(self, user_id: str, session_ids: list[Any]) -> tuple[str, ...]:
        """Delete the keys of sessions a script has ended; return their ids.

        Already ended (their index entries are gone): this only frees memory.
        """
        ended = tuple(_text(sid) for sid in session_ids)
        if ended:
            keys: list[str] = []
            for sid in ended:
                keys += keyspace.session_keys(user_id, sid)
            await self.redis.delete(*keys)
        return ended

    @translate_errors
    async def change_password(
        self,
        user_id: str,
        password_hash: str,
        *,
        keep_session_id: str = "",
        event: EventRecord | None = None,
    ) -> tuple[str, ...] | None:
        """Set the password hash and end every session but ``keep_session_id``, at once.

        Returns the ended sessions' ids, or None when there is no such user. Records
        ``event`` when the user exists.
        """
        reply = await self._change_password(
            scriptkeys.change_password(user_id),
            [password_hash, keep_session_id, *self._event_args, _encoded(event)],
        )
        if not reply[0]:
            return None
        return await self._forget_sessions(user_id, reply[1:])

    @translate_errors
    async def set_disabled(
        self, user_id: str, disabled: bool, *, event: EventRecord | None = None
    ) -> tuple[str, ...] | None:
        """Disable (every session ends at once) or enable a user.

        Returns the ended sessions' ids, or None when there is no such user. Records
        ``event`` when the user exists.
        """
        reply = await self._set_disabled(
            scriptkeys.set_disabled(user_id),
            ["1" if disabled else "0", *self._event_args, _encoded(event)],
        )
        if not reply[0]:
            return None
        return await self._forget_sessions(user_id, reply[1:])

    @translate_errors
    async def set_roles(
        self, user_id: str, roles: tuple[str, ...], *, event: EventRecord | None = None
    ) -> bool:
        """Set a user's roles; False when there is no such user. Records ``event`` when the
        user exists."""
        reply = await self._set_roles(
            scriptkeys.set_roles(user_id), [roles_field(roles), *self._event_args, _encoded(event)]
        )
        return bool(reply)

    @translate_errors
    async def delete_user(self, user_id: str) -> int | None:
        """Delete every key of the account; return how many sessions ended, or None.

        Three slots on Cluster, so three steps, in this order: the user's own slot (one
        script: its record, its session index, its events, its sessions), then the username claim
        (only while it names this user), then the account's failure log and login bucket.
        Once the first step has run the account can neither log in nor refresh, and its
        access tokens are refused; if the process stops before the second, the name is
        left claimed by a user who no longer exists, which ``create_user`` frees when the
        name is registered again.
        """
        listed = [
            _text(sid)
            for sid in await self.redis.zrange(keyspace.sessions(user_id), 0, REVOKE_BATCH - 1)
        ]
        reply = await self._delete_user(scriptkeys.delete_user(user_id, listed), [])
        if not reply:
            return None
        username, indexed = _text(reply[0]), [_text(sid) for sid in reply[1:]]
        deleted = set(listed)
        await self._forget_sessions(user_id, [sid for sid in indexed if sid not in deleted])
        await self._release_username(scriptkeys.release_username(username), [user_id])
        # Keyed by the name, not the id: one slot each on Cluster.
        await self.redis.delete(keyspace.login_failures(username))
        await self.redis.delete(keyspace.rate_limit(keyspace.LOGIN_USER_SCOPE, username))
        return len(indexed)

    # -- DPoP proofs -----------------------------------------------------------------------

    @translate_errors
    async def claim_dpop_proof(self, jkt: str, jti: str, *, ttl: int) -> bool:
        """Remember a proof's ``jti`` for ``ttl`` seconds; False when it was seen already.

        One SET NX: atomic, one key per proof of the last ``ttl`` seconds, whatever the
        number of sessions (RFC 9449 §11.1).
        """
        # Through the batcher: a resource call sends it with its session check (one turn).
        key = keyspace.dpop_proof(jkt, jti)
        return await self._execute("SET", key, b"", "NX", "EX", ttl) is not None

    # -- rate limits -------------------------------------------------------------------

    @translate_errors
    async def take_token(self, bucket: Bucket, *, now: int) -> int:
        """Take a token from ``bucket``; 0, or the seconds until one is due."""
        return await self._take(bucket, now=now)

    async def _take(self, bucket: Bucket, *, now: int) -> int:
        keys = scriptkeys.take_token(bucket.scope, bucket.value)
        return int(await self._take_token(keys, [now, bucket.capacity, bucket.refill]))

    @translate_errors
    async def count_failure(
        self, username: str, attempt_id: str, *, now: int, limit: int, window: int
    ) -> int:
        """Log an attempt on an account; 0, or the seconds until the log has room again."""
        reply = await self._count_failure(
            scriptkeys.count_failure(username), [now, limit, window, attempt_id]
        )
        return int(reply)

    @translate_errors
    async def clear_failures(self, username: str) -> None:
        """Forget an account's failed attempts: its password was just verified."""
        await self.redis.delete(keyspace.login_failures(username))
