"""SecurityEvents: what happened to an account, recorded for its owner and for operators.

Every event is stored in the user's list (``Store``, key ``keyspace.events``: the newest
EVENTS_PER_USER, none older than EVENTS_TTL, gone with the account's keys), written as
one log line (the field ``event`` is its type, with ``user_id`` and ``session_id``; never
a secret) and counted in ``authsvc_security_events_total{type}``.

An event whose cause a store script decides rides in that script, so it costs no round
trip of its own: ``SessionService`` builds it with ``event()``, hands it to the script
(``Store.login``'s ``event`` and ``evicted_event``, ``Store.rotate``'s ``replay_event``,
``Store.revoke_session``'s and ``Store.revoke_user``'s ``event``), and reports it with
``recorded()`` once the script says it happened. ``AccountService`` does the same for
the account changes: ``Store.change_password``'s, ``set_disabled``'s and ``set_roles``'s
``event`` (``password_changed``, ``account_disabled``, ``account_enabled``,
``roles_changed``), and for an operator's ``session_revoked`` (one session) and
``logout_all`` (every session, ``session_id`` null). Only ``login_failed`` costs a call of
its own (``record``, in ``record_event.lua``).

Who caused an event gives its client: the user's request (``http.io.request_client``),
the operator's request for the operator API (the operator's ip and user agent: that
request caused it), ``NO_CLIENT`` (empty strings) for the CLI, where no request did.
Deleting an account records nothing: its events go with it. Listing::

    listed = await events.list_events(user_id, now=now)
    # -> list[EventRecord], newest first; authsvc.http.events.events_response(listed)
    #    answers {"events": [...]} with Cache-Control: no-store
    # (GET /v1/auth/events through SessionService.list_events,
    #  GET /v1/admin/users/{user_id}/events through AccountService.events)

A script of your own records one with ``-- include: events`` and ``push_event(KEYS[i],
ARGV[j], per_user, ttl)`` (``lua/lib/events.lua``), passing ``Store.events``'s limits and
``eventcodec.encode(event)``.
"""

from __future__ import annotations

import logging
from typing import cast

from authsvc.domain.clients import NO_CLIENT, ClientInfo
from authsvc.domain.events import SecurityEventType, SessionEvents
from authsvc.store.records import EventRecord
from authsvc.store.redis_store import Store

logger = logging.getLogger(__name__)

# Each type's log line: its level and its message, of the fields user_id and session_id.
_LINES: dict[SecurityEventType, tuple[int, str]] = {
    "login": (logging.INFO, "session started: user %(user_id)s session %(session_id)s"),
    "login_failed": (logging.INFO, "login failed: wrong password for user %(user_id)s"),
    "refresh_replay": (
        logging.WARNING,
        "refresh token replayed after its grace: session %(session_id)s of user %(user_id)s"
        " revoked",
    ),
    "session_evicted": (
        logging.INFO,
        "session evicted: user %(user_id)s session %(session_id)s (over MAX_SESSIONS_PER_USER)",
    ),
    "logout": (logging.INFO, "session ended: user %(user_id)s session %(session_id)s"),
    "logout_all": (logging.INFO, "every session ended: user %(user_id)s"),
    "session_revoked": (logging.INFO, "session revoked: user %(user_id)s session %(session_id)s"),
    "password_changed": (logging.INFO, "password changed: user %(user_id)s"),
    "account_disabled": (logging.INFO, "account disabled: user %(user_id)s"),
    "account_enabled": (logging.INFO, "account enabled: user %(user_id)s"),
    "roles_changed": (logging.INFO, "roles changed: user %(user_id)s"),
}


class SecurityEvents:
    """Build, record, report and list users' security events."""

    def __init__(self, store: Store, report: SessionEvents) -> None:
        self._store = store
        self._report = report

    @staticmethod
    def event(
        event_type: SecurityEventType,
        *,
        session_id: str | None = None,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> EventRecord:
        """An event to hand to a store script, which records it when its cause happens."""
        return EventRecord(event_type, now, session_id, client.ip, client.user_agent, client.device)

    def recorded(self, user_id: str, event: EventRecord) -> None:
        """Report an event the store has recorded: its log line and its count."""
        event_type = cast(SecurityEventType, event.type)  # built by event(): one of them
        level, message = _LINES[event_type]
        fields = {"user_id": user_id, "session_id": event.session_id}
        logger.log(level, message, fields, extra={"event": event_type, **fields})
        self._report.security_event(event_type)

    async def record(
        self,
        user_id: str,
        event_type: SecurityEventType,
        *,
        session_id: str | None = None,
        client: ClientInfo = NO_CLIENT,
        now: int,
    ) -> EventRecord:
        """Record, log and count an event that no store script decides: one round trip."""
        event = self.event(event_type, session_id=session_id, client=client, now=now)
        await self._store.record_event(user_id, event)
        self.recorded(user_id, event)
        return event

    async def record_nothing(self) -> None:
        """Cost the round trip ``record`` costs and record nothing (an unknown username)."""
        await self._store.record_no_event()

    async def list_events(self, user_id: str, *, now: int) -> list[EventRecord]:
        """The user's events, newest first, those past EVENTS_TTL left out."""
        return await self._store.list_events(user_id, now=now)
