"""SessionService: the domain rules of accounts, login, rotation, grace, replay and revocation.

Takes plain values and ``now``; returns frozen dataclasses; raises ``errors.*``. Knows
nothing of aiohttp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

from authsvc.domain.clients import NO_CLIENT, ClientInfo
from authsvc.domain.events import NoEvents, RevokeReason, SessionEvents
from authsvc.domain.passwords import Hasher, PasswordPolicy, normalize_username
from authsvc.domain.ratelimit import Throttle
from authsvc.domain.security_events import SecurityEvents
from authsvc.errors import (
    AccountDisabled,
    InvalidCredentials,
    InvalidCsrf,
    InvalidDpopProof,
    InvalidDpopToken,
    InvalidGrant,
    InvalidRequest,
    InvalidToken,
    NotFound,
    RateLimited,
    UsernameTaken,
)
from authsvc.store.records import EventRecord, LoginOutcome, RotationOutcome, SessionRecord
from authsvc.store.redis_store import Store
from authsvc.tokens.access import AccessClaims, AccessTokens, new_jti
from authsvc.tokens.dpop import JTI_TTL, Proof
from authsvc.tokens.refresh import (
    RefreshTokens,
    Successor,
    is_session_id,
    new_session_id,
    new_user_id,
    open_successor,
    seal_successor,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str
    # The DPoP key the session is bound to (token_type "DPoP"), None for a bearer session.
    jkt: str | None = None

    @property
    def token_type(self) -> str:
        return "Bearer" if self.jkt is None else "DPoP"


@dataclass(frozen=True, slots=True)
class Principal:
    """The user and session behind a verified access token whose session is live."""

    user_id: str
    username: str
    session_id: str
    claims: AccessClaims


def require_fresh(principal: Principal, *, now: int, max_age: int) -> None:
    """Refuse a sensitive action to an access token not issued recently.

    Raises:
        InvalidToken: the token was issued (by a login or a refresh) more than ``max_age``
            (SENSITIVE_MAX_AGE) seconds ago.
    """
    # A token a resource server kept, or one lifted from a log, is valid until exp;
    # ending sessions, listing where the user is logged in, changing the password or
    # deleting the account asks for a fresh one.
    if now - principal.claims.issued_at > max_age:
        raise InvalidToken(
            f"this action needs an access token issued in the last "
            f"{max_age} seconds; refresh the session or log in again"
        )


class SessionService:
    """Register, log in, rotate, authenticate and revoke."""

    def __init__(
        self,
        store: Store,
        hasher: Hasher,
        access_tokens: AccessTokens,
        refresh_tokens: RefreshTokens,
        policy: PasswordPolicy,
        throttle: Throttle,
        *,
        reuse_grace: int,
        sensitive_max_age: int,
        events: SessionEvents | None = None,
        security_events: SecurityEvents | None = None,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._access = access_tokens
        self._refresh = refresh_tokens
        self._policy = policy
        self._throttle = throttle
        self._reuse_grace = reuse_grace  # REFRESH_REUSE_GRACE
        self._sensitive_max_age = sensitive_max_age  # SENSITIVE_MAX_AGE
        self._events = events or NoEvents()
        self._security = security_events or SecurityEvents(store, self._events)

    async def register(self, username: str, password: str, *, ip: str = "", now: int) -> User:
        """Create an account; the 64 MiB hash comes last, after every cheap check.

        Raises:
            RateLimited: too many registrations from this client address.
            InvalidRequest: the username is empty, too long or has control characters.
            WeakPassword: the password is too short, too long or too easy to guess.
            UsernameTaken: another account has the same normalised username.
            Overloaded: too many password hashes are waiting.
        """
        await self._throttle.registration(ip, now=now)
        name = normalize_username(username)
        # zxcvbn takes up to tens of milliseconds of CPU: off the event loop.
        await asyncio.to_thread(self._policy.check, password, name)
        if await self._store.username_taken(name):
            raise UsernameTaken()
        password_hash = await self._hasher.hash(password)
        user_id = new_user_id()
        if not await self._store.create_user(user_id, name, password_hash, now=now):
            raise UsernameTaken()
        logger.info("user registered: %s", user_id)
        return User(user_id, name)

    async def login(
        self,
        username: str,
        password: str,
        client: ClientInfo,
        *,
        now: int,
        proof: Proof | None = None,
    ) -> TokenPair:
        """Verify a password and start a session, bound to the DPoP key of ``proof`` if any.

        Raises:
            InvalidDpopProof: the proof's jti was seen before.
            InvalidCredentials: unknown user or wrong password, alike in body and cost.
            RateLimited: too many attempts for this username or client address, or too
                many failures for this account since its last successful login.
            Overloaded: too many password hashes are waiting.
        """
        try:
            name = normalize_username(username)
        except InvalidRequest:
            name = ""  # no account can have it; still costs a verification below
        try:
            await self._throttle.login_attempt(name, client.ip, now=now)
        except RateLimited:
            self._events.login_finished("rate_limited")
            raise
        # Before the password is checked: a replayed request costs no argon2 run.
        await self._claim_proof(proof)
        user = await self._store.find_user(name) if name else None
        if user is None:
            # Same cost as a wrong password, so response times do not tell which
            # usernames exist.
            await self._hasher.verify_dummy(password)
            # Nothing to record the failure under; the same round trip a known user's costs.
            await self._security.record_nothing()
            self._events.login_finished("invalid_credentials")
            raise InvalidCredentials()
        verification = await self._hasher.verify(user.password_hash, password)
        if verification is None:
            await self._security.record(user.user_id, "login_failed", client=client, now=now)
            self._events.login_finished("invalid_credentials")
            raise InvalidCredentials()
        if user.disabled:
            # Only after the password check, which costs the same whatever follows: the
            # answer tells a disabled account apart only to who knows its password.
            self._events.login_finished("invalid_credentials")
            raise AccountDisabled()
        await self._throttle.login_succeeded(name)

        session_id = new_session_id()
        refresh_token = self._refresh.mint(user.user_id, session_id)
        event = self._security.event("login", session_id=session_id, client=client, now=now)
        evicted_event = self._security.event("session_evicted", client=client, now=now)
        started = await self._store.login(
            user,
            session_id,
            refresh_token.hash,
            now=now,
            device=client.device,
            user_agent=client.user_agent,
            ip=client.ip,
            upgraded_password_hash=verification.new_hash,
            event=event,
            evicted_event=evicted_event,
            jkt=None if proof is None else proof.jkt,
        )
        if started.outcome is not LoginOutcome.OK:
            self._events.login_finished("invalid_credentials")
            if started.outcome is LoginOutcome.DISABLED:
                raise AccountDisabled()
            if started.outcome is LoginOutcome.REVOKED:
                raise InvalidCredentials(
                    "every session was revoked while this login ran; log in again"
                )
            raise InvalidCredentials()
        self._events.sessions_revoked("evicted", len(started.evicted))
        for evicted in started.evicted:
            self._security.recorded(
                user.user_id, dataclasses.replace(evicted_event, session_id=evicted)
            )
        jkt = None if proof is None else proof.jkt
        access_token, access_expires_at = self._access.sign(
            user_id=user.user_id, session_id=session_id, now=now, roles=started.roles, jkt=jkt
        )
        self._security.recorded(user.user_id, event)
        self._events.login_finished("ok")
        return TokenPair(
            access_token=access_token,
            expires_in=access_expires_at - now,
            refresh_token=refresh_token.value,
            refresh_expires_in=started.expires_at - now,
            session_id=session_id,
            jkt=jkt,
        )

    async def _claim_proof(self, proof: Proof | None, *, resource: bool = False) -> None:
        """Accept a checked proof's jti once (RFC 9449 §11.1).

        Raises:
            InvalidDpopProof: the jti was seen within the proof window.
        """
        if proof is not None and not await self._store.claim_dpop_proof(
            proof.jkt, proof.jti, ttl=JTI_TTL
        ):
            raise InvalidDpopProof("this DPoP proof was used already", resource=resource)

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a session in cookie mode (derived: nothing is stored)."""
        return self._refresh.csrf_token(session_id)

    async def refresh(
        self,
        refresh_token: str,
        *,
        csrf_token: str | None = None,
        client: ClientInfo = NO_CLIENT,
        now: int,
        proof: Proof | None = None,
    ) -> TokenPair:
        """Rotate a refresh token; a replay after the grace window revokes the session
        (and records a ``refresh_replay`` event of the request's ``client``).

        ``csrf_token``, for a refresh token that came in the cookie, must be its session's;
        it is checked before the store is asked, so a refusal changes nothing. A session
        bound to a DPoP key needs ``proof`` by that key; without it the rotation script
        refuses before deciding anything else, so nothing rotates or is revoked.

        Raises:
            InvalidGrant: the token is malformed, unknown, expired, revoked or replayed, or
                its session is bound to a DPoP key the request did not prove.
            InvalidCsrf: ``csrf_token`` is given and is not the session's.
            InvalidDpopProof: the proof's jti was seen before.
            RateLimited: too many refreshes from this client address.
        """
        # Nothing costly before the store has decided. A token that is not ours (bad MAC)
        # stops here, with no store call. A token of ours gets a successor (random bits, a
        # MAC, a seal: microseconds) for the one store call that takes the address's
        # bucket and rotates; only a rotation or a grace retry is signed for, after it.
        try:
            presented = self._refresh.parse(refresh_token)
            if csrf_token is not None:
                # Before the rotation: a page that can make the browser send the cookie
                # but cannot read the CSRF token must not rotate, and a replay of an old
                # cookie without it must not revoke.
                self._refresh.check_csrf(presented, csrf_token)
        except (InvalidGrant, InvalidCsrf):
            self._events.refresh_finished("invalid")
            raise
        user_id, session_id = presented.user_id, presented.session_id
        # Before the rotation decides: a captured request replayed with its proof stops
        # here, and cannot be taken for a replay of the refresh token (which would end
        # the session).
        await self._claim_proof(proof)
        minted = self._refresh.successor(presented)
        successor = Successor(minted.value, issued_at=now, jti=new_jti())
        # Built for every refresh, recorded by the rotation's own script only on a replay.
        replay = self._security.event(
            "refresh_replay", session_id=session_id, client=client, now=now
        )
        rotation = await self._store.rotate(
            user_id, session_id, presented.position, presented.hash, minted.hash,
            seal_successor(presented, successor),
            now=now, grace=self._reuse_grace, bucket=self._throttle.refresh_bucket(client.ip),
            replay_event=replay, jkt=None if proof is None else proof.jkt,
        )  # fmt: skip
        if rotation.outcome is RotationOutcome.LIMITED:
            raise RateLimited(retry_after=rotation.retry_after)
        if rotation.outcome is RotationOutcome.WRONG_KEY:
            self._events.refresh_finished("invalid")
            raise InvalidGrant(
                "this session is bound to a DPoP key: its refresh needs a proof by that key"
            )
        if rotation.outcome is RotationOutcome.GRACE:
            # A retry or a parallel request with the same token: hand back what the first
            # rotation issued, so the app's chain goes on instead of splitting in two.
            successor = open_successor(presented, rotation.sealed_successor)
            self._events.refresh_finished("grace")
        elif rotation.outcome is RotationOutcome.REPLAY:
            self._security.recorded(user_id, replay)
            self._events.refresh_finished("replay")
            self._events.sessions_revoked("replay")
            raise InvalidGrant("the refresh token was already used; the session is revoked")
        elif rotation.outcome is not RotationOutcome.OK:
            self._events.refresh_finished("invalid")
            raise InvalidGrant()
        else:
            self._events.refresh_finished("rotated")
        # The same claims for the rotation and every retry of it: the same access token,
        # unless an operator changed the user's roles in between (a retry carries the
        # roles current when it is answered, read by the same script).
        access_token, access_expires_at = self._access.sign(
            user_id=user_id, session_id=session_id, now=successor.issued_at,
            jti=successor.jti, roles=rotation.roles, jkt=rotation.jkt,
        )  # fmt: skip
        return TokenPair(
            access_token=access_token,
            expires_in=max(0, access_expires_at - now),
            refresh_token=successor.refresh_token,
            refresh_expires_in=rotation.expires_at - now,
            session_id=session_id,
            jkt=rotation.jkt,
        )

    async def authenticate(
        self,
        access_token: str,
        *,
        now: int,
        dpop: bool = False,
        proof: Proof | None = None,
    ) -> Principal:
        """Verify an access token and that its session is still live; a bound one (cnf.jkt)
        only under the DPoP scheme (``dpop``) with a checked ``proof`` by its key.

        The proof's ``ath`` is the caller's to have checked against ``access_token``. The
        verified-token cache returns the claims, ``cnf`` included: a cached bound token is
        held to its key as a fresh one is.

        Raises:
            InvalidToken: bad signature, wrong issuer/audience/type, expired, or the session
                has ended; a bound token sent as Bearer, or without a proof by its key.
            InvalidDpopToken: the same, for a request under the DPoP scheme.
            InvalidDpopProof: the proof's jti was seen before.
        """
        claims = self._access.verify(access_token, now=now)
        if claims.jkt is not None and not dpop:
            raise InvalidToken(
                "this access token is bound to a DPoP key: send it as Authorization: DPoP "
                "with a proof"
            )
        if dpop:
            if claims.jkt is None:
                raise InvalidDpopToken("this access token is not bound to a DPoP key")
            if proof is None:
                raise InvalidDpopToken("a DPoP-bound access token needs its DPoP proof")
            if proof.jkt != claims.jkt:
                raise InvalidDpopToken("the DPoP proof is not by the key this token is bound to")
        live = self._store.session_live(claims.user_id, claims.session_id, now=now)
        if proof is None:
            username = await live
        else:
            # One round trip for both where the store batches them (two commands of a tick).
            username, _ = await asyncio.gather(live, self._claim_proof(proof, resource=True))
        if username is None:
            raise InvalidToken("the session of this access token has ended")
        return Principal(claims.user_id, username, claims.session_id, claims)

    async def revoke_token(self, token: str, *, client: ClientInfo = NO_CLIENT, now: int) -> None:
        """End the session of a refresh or access token (RFC 7009); quiet about the rest.

        A refresh token counts when its MAC is ours: any token of the chain names the
        session, and presenting a used one after its grace would end it anyway. An access
        token counts when its signature verifies, even if it has expired.
        """
        try:
            session = self._refresh.parse(token)
            user_id, session_id = session.user_id, session.session_id
        except InvalidGrant:
            try:
                claims = self._access.verify(token, allow_expired=True, now=now)
            except InvalidToken:
                return  # RFC 7009 §2.2: an invalid token is no error
            user_id, session_id = claims.user_id, claims.session_id
        await self._end_session(user_id, session_id, "session_revoked", "revoke", client, now)

    async def introspect(self, token: str, *, now: int) -> Principal | None:
        """Return the principal of an active access token, else None (RFC 7662 §2.2).

        Refresh tokens are never reported active: resource servers introspect access
        tokens, and a refresh token's state is for its client alone.
        """
        try:
            claims = self._access.verify(token, now=now)
        except InvalidToken:
            return None
        # A bound token is reported with its cnf (RFC 9449 §6.2): the resource server that
        # asks holds it to the proof, which introspection does not see.
        username = await self._store.session_live(claims.user_id, claims.session_id, now=now)
        if username is None:
            return None
        return Principal(claims.user_id, username, claims.session_id, claims)

    async def logout(
        self, principal: Principal, *, client: ClientInfo = NO_CLIENT, now: int
    ) -> None:
        await self._end_session(
            principal.user_id, principal.session_id, "logout", "logout", client, now
        )

    async def _end_session(
        self,
        user_id: str,
        session_id: str,
        event_type: Literal["logout", "session_revoked"],
        reason: RevokeReason,
        client: ClientInfo,
        now: int,
    ) -> bool:
        """End one session, recording its event in the same script; False when not live."""
        event = self._security.event(event_type, session_id=session_id, client=client, now=now)
        if not await self._store.revoke_session(user_id, session_id, now=now, event=event):
            return False
        self._events.sessions_revoked(reason)
        self._security.recorded(user_id, event)
        return True

    def _require_fresh(self, principal: Principal, *, now: int) -> None:
        require_fresh(principal, now=now, max_age=self._sensitive_max_age)

    async def logout_all(
        self, principal: Principal, *, client: ClientInfo = NO_CLIENT, now: int
    ) -> None:
        """End every session of the user.

        Raises:
            InvalidToken: the access token is not fresh enough.
        """
        self._require_fresh(principal, now=now)
        event = self._security.event(
            "logout_all", session_id=principal.session_id, client=client, now=now
        )
        ended = await self._store.revoke_user(principal.user_id, event=event)
        self._events.sessions_revoked("logout_all", ended)
        self._security.recorded(principal.user_id, event)

    async def revoke_session(
        self,
        principal: Principal,
        session_id: str,
        *,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> None:
        """End one of the principal's sessions; another than its own needs a fresh token.

        Raises:
            InvalidToken: another session, and the access token is not fresh enough.
            NotFound: no such live session of this user (another user's session included).
        """
        if session_id != principal.session_id:
            self._require_fresh(principal, now=now)
        if not is_session_id(session_id) or not await self._end_session(
            principal.user_id, session_id, "session_revoked", "delete", client, now
        ):
            raise NotFound("no such session")

    async def list_sessions(self, principal: Principal, *, now: int) -> list[SessionRecord]:
        """Raises: InvalidToken when the access token is not fresh enough."""
        self._require_fresh(principal, now=now)
        return await self._store.list_sessions(principal.user_id, now=now)

    async def list_events(self, principal: Principal, *, now: int) -> list[EventRecord]:
        """The user's security events, newest first.

        Raises: InvalidToken when the access token is not fresh enough (as listing sessions:
        the events tell where and when the user logged in).
        """
        self._require_fresh(principal, now=now)
        return await self._security.list_events(principal.user_id, now=now)
