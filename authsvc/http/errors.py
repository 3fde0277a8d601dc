"""The one middleware that turns exceptions into responses, on both surfaces.

``AuthsvcError`` renders itself (``authsvc.errors``); this writes it out with the status of
the surface: ``oauth_status`` under /oauth/ (RFC 6749 §5.2 makes invalid_grant a 400
there), ``status`` elsewhere. aiohttp's own 404, 405 and 413 become contract bodies;
anything else is a logged 500 whose body never carries a traceback.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into a contract error body; the only catch-all in authsvc."""
    oauth = request.path.startswith(OAUTH_PREFIX)
    try:
        return await handler(request)
    except AuthsvcError as error:
        return error_response(error, oauth=oauth)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        translated = _from_http_exception(exc)
        if translated is None:
            raise
        return error_response(translated, oauth=oauth)
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(AuthsvcError("internal error"), oauth=oauth)
