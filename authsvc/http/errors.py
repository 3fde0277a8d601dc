"""Exceptions into responses, on both surfaces (``observe.request_middleware`` calls it).

``AuthsvcError`` renders itself (``authsvc.errors``); this writes it out with the status of
the surface: ``oauth_status`` under /oauth/ (RFC 6749 §5.2 makes invalid_grant a 400
there), ``status`` elsewhere. aiohttp's own 404, 405 and 413 become contract bodies;
anything else is a logged 500 whose body never carries a traceback.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from authsvc.errors import (
    AuthsvcError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"
OAUTH_PREFIX = "/oauth/"


def error_response(error: AuthsvcError, *, oauth: bool = False) -> web.Response:
    """Render an error as the contract's JSON body with its status and headers."""
    return web.Response(
        body=msgspec.json.encode(error.body()),
        status=error.oauth_status if oauth else error.status,
        headers=error.headers(),
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
    )


def _from_http_exception(exc: web.HTTPException) -> AuthsvcError | None:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such endpoint")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(
            f"method {exc.method} is not allowed here", ", ".join(sorted(exc.allowed_methods))
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge()
    if exc.status == 400:
        return InvalidRequest(exc.reason)
    return None


def contract_error_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The contract's error response for an exception a handler raised; None for an
    HTTPException that is not an error (a redirect) or that has no contract body."""
    oauth = request.path.startswith(OAUTH_PREFIX)
    if isinstance(exc, AuthsvcError):
        return error_response(exc, oauth=oauth)
    if isinstance(exc, web.HTTPException):
        translated = _from_http_exception(exc) if exc.status >= 400 else None
        return None if translated is None else error_response(translated, oauth=oauth)
    logger.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(AuthsvcError("internal error"), oauth=oauth)
