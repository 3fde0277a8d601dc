"""Request bodies: one validation layer for JSON (/v1) and forms (/oauth/).

Both go through the same steps, in the same order: the content type (and a charset, if
given, of UTF-8), the size (AUTHSVC_MAX_BODY_SIZE, enforced by aiohttp), the content
coding (aiohttp decodes gzip, deflate, and br or zstd when their libraries are there),
strict UTF-8, then msgspec, which checks types and lengths against a Struct, and unknown
fields: refused in JSON, ignored in forms (RFC 6749 §3.2), where a parameter sent without
a value counts as omitted (§3.1). Every failure is a contract 4xx: 415 for the wrong type
or charset, 413 for the size, 400 invalid_request for the rest, naming what is wrong.

A body sent with a Content-Encoding is decoded before any handler runs, on every route
(``observe.request_middleware`` calls ``read_body``): bytes that do not decode as their
coding says fail in aiohttp's parser, which then reads nothing more on that connection.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from authsvc.errors import InvalidRequest, UnsupportedMediaType

T = TypeVar("T", bound=msgspec.Struct)

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
_UTF8 = ("utf-8", "utf8")

# A refresh token, on /v1/auth/refresh and /oauth/token alike: those authsvc issues are
# about 130 characters.
RefreshTokenText = Annotated[str, msgspec.Meta(max_length=512)]


async def read_body(request: web.Request) -> bytes:
    """The body, decoded as its Content-Encoding says (aiohttp keeps it for later reads).

    Raises:
        PayloadTooLarge: via aiohttp, past AUTHSVC_MAX_BODY_SIZE once decoded.
        InvalidRequest: bytes that are not what their Content-Encoding says, or a body
            aiohttp's parser could not read to its end.
    """
    try:
        return await request.read()
    except RequestPayloadError:
        # aiohttp's parser has stopped: nothing more can be read on this connection, which
        # ``observe.request_middleware`` closes once the answer has gone.
        if request.headers.get("Content-Encoding"):
            raise InvalidRequest("the body does not decode as its Content-Encoding says") from None
        raise InvalidRequest("the body could not be read") from None


@functools.cache
def _json_decoder(body_type: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(body_type)


async def _read_text(request: web.Request, content_type: str) -> bytes:
    """Return the raw body once its type, charset and encoding are right.

    Raises:
        UnsupportedMediaType: another content type, or a charset other than UTF-8.
        PayloadTooLarge: via aiohttp, past AUTHSVC_MAX_BODY_SIZE.
        InvalidRequest: bytes that are not UTF-8, or that do not decode as their
            Content-Encoding says.
    """
    if request.content_type != content_type:
        raise UnsupportedMediaType(f"the body must be {content_type}")
    charset = request.charset
    if charset is not None and charset.lower() not in _UTF8:
        raise UnsupportedMediaType("the body must be encoded in UTF-8")
    raw = await read_body(request)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    return raw


async def read_json(request: web.Request, body_type: type[T]) -> T:
    """Decode and validate a JSON body into ``body_type`` (a msgspec Struct).

    Raises:
        UnsupportedMediaType, PayloadTooLarge: see ``_read_text``.
        InvalidRequest: not JSON or not UTF-8, or a field is missing, unknown, of the wrong
            type or out of its bounds.
    """
    raw = await _read_text(request, JSON_TYPE)
    try:
        body: T = _json_decoder(body_type).decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None
    except msgspec.DecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    return body


async def read_form_values(request: web.Request) -> dict[str, str]:
    """Return a form body's parameters, those sent without a value left out.

    RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were
    omitted from the request", and none may appear twice.

    Raises:
        UnsupportedMediaType, PayloadTooLarge: see ``_read_text``.
        InvalidRequest: not UTF-8, a repeated parameter, or one that is not text.
    """
    await _read_text(request, FORM_TYPE)
    form = await request.post()
    values: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in form.items():
        if name in seen:
            raise InvalidRequest(f"the parameter {name!r} appears more than once")
        seen.add(name)
        if not isinstance(value, str):
            raise InvalidRequest(f"the parameter {name!r} is not text")
        if value:
            values[name] = value
    return values


def form_as(values: Mapping[str, str], body_type: type[T]) -> T:
    """Validate form parameters (from ``read_form_values``) into ``body_type``.

    Parameters that ``body_type`` does not name are ignored (RFC 6749 §3.2).

    Raises:
        InvalidRequest: a field missing, of the wrong type or out of its bounds.
    """
    try:
        return msgspec.convert(values, body_type)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(str(exc)) from None


async def read_form(request: web.Request, body_type: type[T]) -> T:
    """Decode and validate a form body into ``body_type`` (a msgspec Struct).

    Raises:
        UnsupportedMediaType, PayloadTooLarge: see ``_read_text``.
        InvalidRequest: see ``read_form_values`` and ``form_as``.
    """
    return form_as(await read_form_values(request), body_type)
