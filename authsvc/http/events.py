"""The JSON of security events: ``GET /v1/auth/events`` and the operator's
``GET /v1/admin/users/{user_id}/events`` answer with ``events_response``."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from authsvc.http.io import NO_STORE, json_response
from authsvc.store.records import EventRecord


def event_body(event: EventRecord) -> dict[str, object]:
    """API.md's event: ``session_id`` null when none; ``ip``, ``user_agent`` and ``device``
    of the request that caused it, "" when it had none."""
    return {
        "type": event.type,
        "at": event.at,
        "session_id": event.session_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "device": event.device,
    }


def events_response(events: Iterable[EventRecord]) -> web.Response:
    """``{"events": [...]}`` in the order given (the store's: newest first), never cached."""
    return json_response({"events": [event_body(e) for e in events]}, headers=NO_STORE)
