"""AccountService: an account's life after registration, for its owner and its operators.

The owner changes the password and deletes the account with a fresh access token and the
password (API.md, Accounts); an operator (the operator API, the CLI) looks accounts up,
ends their sessions, disables and enables them, sets passwords and roles, and deletes them.
Every change that ends sessions ends them in one store script, access tokens included.
Takes plain values and ``now``; returns frozen dataclasses; raises ``errors.*``.

Every change but a deletion is a security event of the account (API.md, Security events),
recorded by the store script that makes the change (no round trip of its own):
``password_changed`` (the owner's change, with the owner's session and request; an
operator's), ``account_disabled``, ``account_enabled``, ``roles_changed``,
``session_revoked`` (an operator ending one session, with its id) and ``logout_all`` (an
operator ending every session: the same ending as the owner's logout-all, with no session
id, as no session of the user asked for it). An operator's event carries the ``ip`` and
``user_agent`` of the operator's request, which caused it (``client``); the CLI's carry
none (``NO_CLIENT``). A deletion records nothing: the events go with the account.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from authsvc.domain.clients import NO_CLIENT, ClientInfo
from authsvc.domain.events import AccountAction, NoEvents, SessionEvents
from authsvc.domain.passwords import Hasher, PasswordPolicy, normalize_username
from authsvc.domain.ratelimit import Throttle
from authsvc.domain.security_events import SecurityEvents
from authsvc.domain.sessions import Principal, require_fresh
from authsvc.errors import InvalidCredentials, InvalidRequest, InvalidToken, NotFound
from authsvc.store.records import EventRecord, SessionRecord, UserRecord
from authsvc.store.redis_store import Store
from authsvc.tokens.refresh import is_session_id, is_user_id

logger = logging.getLogger(__name__)

# API.md, Operator API: "at most 32, each 1 to 64 characters of A-Za-z0-9:._-". No comma,
# so the user hash keeps them comma-separated.
MAX_ROLES = 32
_ROLE = re.compile(r"[A-Za-z0-9:._-]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Account:
    """The User of the operator API."""

    user_id: str
    username: str
    created_at: int
    disabled: bool
    roles: tuple[str, ...]
    session_count: int

    def fields(self) -> dict[str, object]:
        """The User object of docs/api.md, as the operator API and the CLI show it."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "created_at": self.created_at,
            "disabled": self.disabled,
            "roles": list(self.roles),
            "session_count": self.session_count,
        }


def check_roles(roles: list[str]) -> tuple[str, ...]:
    """Return roles as the store keeps them: in order, each once.

    Raises:
        InvalidRequest: more than MAX_ROLES, or one that is not 1 to 64 of A-Za-z0-9:._-.
    """
    if len(roles) > MAX_ROLES:
        raise InvalidRequest(f"at most {MAX_ROLES} roles")
    unique = tuple(dict.fromkeys(roles))
    for role in unique:
        if _ROLE.fullmatch(role) is None:
            raise InvalidRequest("each role is 1 to 64 characters of A-Za-z0-9:._-")
    return unique


class AccountService:
    """Password changes, deletion, and every operator action on an account."""

    def __init__(
        self,
        store: Store,
        hasher: Hasher,
        policy: PasswordPolicy,
        throttle: Throttle,
        *,
        sensitive_max_age: int,
        events: SessionEvents | None = None,
        security_events: SecurityEvents | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._policy = policy
        self._throttle = throttle
        self._sensitive_max_age = sensitive_max_age  # SENSITIVE_MAX_AGE
        self._events = events or NoEvents()
        self._security = security_events or SecurityEvents(store, self._events)

    # -- the owner -----------------------------------------------------------------------

    async def _check_password(self, principal: Principal, password: str, *, now: int) -> None:
        """Verify the owner's password, counted toward the account's failure cap.

        Raises:
            InvalidToken: the token is not fresh, or its user is gone.
            RateLimited: too many failed password checks for this account.
            InvalidCredentials: the password is wrong.
        """
        require_fresh(principal, now=now, max_age=self._sensitive_max_age)
        # Counted before the check (as a login is), so that a stolen access token cannot
        # be used to guess the password faster than the login form allows.
        await self._throttle.password_attempt(principal.username, now=now)
        user = await self._store.user(principal.user_id)
        if user is None:
            raise InvalidToken("the session of this access token has ended")
        if await self._hasher.verify(user.password_hash, password) is None:
            raise InvalidCredentials("the password is wrong")
        await self._throttle.login_succeeded(principal.username)

    async def change_password(
        self,
        principal: Principal,
        current_password: str,
        new_password: str,
        *,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """Set a new password; every other session of the user ends, this one stays.

        Raises:
            InvalidToken: the token is not fresh, or its session has ended.
            WeakPassword: the new password fails the policy.
            RateLimited: too many failed password checks for this account.
            InvalidCredentials: the current password is wrong.
            Overloaded: too many password hashes are waiting.
        """
        require_fresh(principal, now=now, max_age=self._sensitive_max_age)
        # The policy first: it costs no argon2 and tells nothing about the account.
        await asyncio.to_thread(self._policy.check, new_password, principal.username)
        await self._check_password(principal, current_password, now=now)
        password_hash = await self._hasher.hash(new_password)
        event = self._security.event(
            "password_changed", session_id=principal.session_id, client=client, now=now
        )
        ended = await self._store.change_password(
            principal.user_id, password_hash, keep_session_id=principal.session_id, event=event
        )
        if ended is None:
            raise InvalidToken("the session of this access token has ended")
        self._security.recorded(principal.user_id, event)
        self._events.sessions_revoked("revoke", len(ended))
        self._events.account_changed(
            "password_changed", principal.user_id, session_id=principal.session_id
        )
        logger.info(
            "password changed: user %s, %d other sessions ended", principal.user_id, len(ended)
        )

    async def delete_own(self, principal: Principal, password: str, *, now: int) -> None:
        """Delete the principal's account and everything the store holds of it.

        Raises:
            InvalidToken: the token is not fresh, or its session has ended.
            RateLimited: too many failed password checks for this account.
            InvalidCredentials: the password is wrong.
        """
        await self._check_password(principal, password, now=now)
        ended = await self._store.delete_user(principal.user_id)
        if ended is None:
            raise InvalidToken("the session of this access token has ended")
        self._deleted(principal.user_id, ended, session_id=principal.session_id)

    def _deleted(self, user_id: str, ended: int, *, session_id: str | None = None) -> None:
        self._events.sessions_revoked("revoke", ended)
        # The last event of the account: what records it must not keep it under the
        # user's hash tag, which is gone.
        self._events.account_changed("account_deleted", user_id, session_id=session_id)
        logger.info("account deleted: user %s, %d sessions ended", user_id, ended)

    # -- operators -----------------------------------------------------------------------

    async def _existing(self, user_id: str) -> UserRecord:
        """Raises: NotFound when no account has this id."""
        user = await self._store.user(user_id) if is_user_id(user_id) else None
        if user is None:
            raise NotFound("no such user")
        return user

    async def _account(self, user: UserRecord, *, now: int) -> Account:
        sessions = await self._store.list_sessions(user.user_id, now=now)
        return Account(
            user.user_id, user.username, user.created_at, user.disabled, user.roles, len(sessions)
        )

    async def find(self, username: str, *, now: int) -> Account:
        """Raises: NotFound when no account has this username."""
        try:
            name = normalize_username(username)
        except InvalidRequest:
            raise NotFound("no such user") from None
        user = await self._store.find_user(name)
        if user is None:
            raise NotFound("no such user")
        return await self._account(user, now=now)

    async def get(self, user_id: str, *, now: int) -> Account:
        """Raises: NotFound when no account has this id."""
        return await self._account(await self._existing(user_id), now=now)

    async def sessions(self, user_id: str, *, now: int) -> list[SessionRecord]:
        """Raises: NotFound when no account has this id."""
        await self._existing(user_id)
        return await self._store.list_sessions(user_id, now=now)

    async def events(self, user_id: str, *, now: int) -> list[EventRecord]:
        """The user's security events, newest first.

        Raises:
            NotFound: no account has this id.
        """
        await self._existing(user_id)
        return await self._security.list_events(user_id, now=now)

    def _changed(self, action: AccountAction, operator: str, user_id: str) -> None:
        self._events.account_changed(action, user_id)
        logger.info("operator %s: %s, user %s", operator, action, user_id)

    async def revoke_sessions(
        self, user_id: str, *, operator: str, client: ClientInfo = NO_CLIENT, now: int
    ) -> None:
        """End every session of the user at once, access tokens included (a logout_all
        event without a session id).

        Raises:
            NotFound: no account has this id.
        """
        await self._existing(user_id)
        event = self._security.event("logout_all", client=client, now=now)
        ended = await self._store.revoke_user(user_id, event=event)
        self._security.recorded(user_id, event)
        self._events.sessions_revoked("revoke", ended)
        self._changed("sessions_revoked", operator, user_id)

    async def revoke_session(
        self,
        user_id: str,
        session_id: str,
        *,
        operator: str,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """End one session of the user (a session_revoked event).

        Raises:
            NotFound: no account has this id, or it has no such live session.
        """
        await self._existing(user_id)
        event = self._security.event(
            "session_revoked", session_id=session_id, client=client, now=now
        )
        if not is_session_id(session_id) or not await self._store.revoke_session(
            user_id, session_id, now=now, event=event
        ):
            raise NotFound("no such session")
        self._security.recorded(user_id, event)
        self._events.sessions_revoked("revoke")
        logger.info(
            "operator %s: session revoked, user %s session %s", operator, user_id, session_id
        )

    async def set_disabled(
        self,
        user_id: str,
        disabled: bool,
        *,
        operator: str,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """Disable (every session ends, logins get account_disabled) or enable an account.

        Raises:
            NotFound: no account has this id.
        """
        event = self._security.event(
            "account_disabled" if disabled else "account_enabled", client=client, now=now
        )
        ended = (
            await self._store.set_disabled(user_id, disabled, event=event)
            if is_user_id(user_id)
            else None
        )
        if ended is None:
            raise NotFound("no such user")
        self._security.recorded(user_id, event)
        self._events.sessions_revoked("revoke", len(ended))
        self._changed("account_disabled" if disabled else "account_enabled", operator, user_id)

    async def set_password(
        self,
        user_id: str,
        new_password: str,
        *,
        operator: str,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """Set a password for the user; every session ends.

        Raises:
            NotFound: no account has this id.
            WeakPassword: the password fails the policy.
            Overloaded: too many password hashes are waiting.
        """
        user = await self._existing(user_id)
        await asyncio.to_thread(self._policy.check, new_password, user.username)
        password_hash = await self._hasher.hash(new_password)
        event = self._security.event("password_changed", client=client, now=now)
        ended = await self._store.change_password(user_id, password_hash, event=event)
        if ended is None:
            raise NotFound("no such user")
        self._security.recorded(user_id, event)
        self._events.sessions_revoked("revoke", len(ended))
        self._changed("password_changed", operator, user_id)

    async def set_roles(
        self,
        user_id: str,
        roles: list[str],
        *,
        operator: str,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """Set the roles that every access token issued from now on carries.

        Raises:
            InvalidRequest: too many roles, or one that is not a role.
            NotFound: no account has this id.
        """
        checked = check_roles(roles)
        event = self._security.event("roles_changed", client=client, now=now)
        if not is_user_id(user_id) or not await self._store.set_roles(
            user_id, checked, event=event
        ):
            raise NotFound("no such user")
        self._security.recorded(user_id, event)
        self._changed("roles_changed", operator, user_id)

    async def delete(self, user_id: str, *, operator: str) -> None:
        """Delete the account and everything the store holds of it.

        Raises:
            NotFound: no account has this id.
        """
        ended = await self._store.delete_user(user_id) if is_user_id(user_id) else None
        if ended is None:
            raise NotFound("no such user")
        logger.info("operator %s: account_deleted, user %s", operator, user_id)
        self._deleted(user_id, ended)
