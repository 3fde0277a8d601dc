"""The bytes of one security event in a user's list: a MessagePack array, session id last.

``[type, at, ip, user_agent, device, session_id]`` (``session_id`` nil when none): about
60 to 130 bytes an event (the user agent and device are cut to 64 bytes of UTF-8 each, as
sessions keep them). The session id comes last so that a script can finish an event the
caller began: the login script knows which sessions the cap evicts only as it runs, and
appends each one's id to ``encode_without_session``'s bytes (``lua/lib/events.lua``,
``with_session_id``), a MessagePack str.
"""

from __future__ import annotations

import msgspec

from authsvc.store.records import EventRecord

# Cut to the bytes a session keeps of them (``redis_store.LISTPACK_VALUE_BYTES``), so an
# event shows what the session list shows, and 50 events of a user stay small.
FIELD_BYTES = 64
_ARRAY_OF_6 = b"\x96"  # MessagePack fixarray of 6 elements

_encoder = msgspec.msgpack.Encoder()
_Fields = tuple[str, int, str, str, str, str | None]
_decoder = msgspec.msgpack.Decoder(_Fields)


def _fit(text: str) -> str:
    """``text`` cut to at most FIELD_BYTES of UTF-8, never inside a character."""
    if len(text) <= FIELD_BYTES // 4:
        return text
    return text.encode()[:FIELD_BYTES].decode(errors="ignore")


def encode(event: EventRecord) -> bytes:
    return _encoder.encode(
        (event.type, event.at, event.ip, _fit(event.user_agent), _fit(event.device),
         event.session_id)
    )  # fmt: skip


def encode_without_session(event: EventRecord) -> bytes:
    """The event's bytes up to its session id, which a script appends (a str of at most
    255 bytes); ``event.session_id`` is ignored."""
    head = _encoder.encode(
        (event.type, event.at, event.ip, _fit(event.user_agent), _fit(event.device))
    )
    return _ARRAY_OF_6 + head[1:]  # 5 elements -> 6: the session id follows


def decode(data: bytes) -> EventRecord | None:
    """The event ``data`` holds; None for bytes that are not one (skipped by readers)."""
    try:
        kind, at, ip, user_agent, device, session_id = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return EventRecord(kind, at, session_id, ip, user_agent, device)
