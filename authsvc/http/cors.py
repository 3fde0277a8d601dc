"""CORS for the origins of AUTHSVC_CORS_ORIGINS (docs/browsers.md), and nothing for others.

A listed origin gets ``Access-Control-Allow-Origin: <itself>`` with credentials on every
answer, errors included (a 401 or a 429 the page must be able to read), and a preflight on
any route answers 204 with that route's methods. An origin that is not listed gets no
``Access-Control-*`` header at all, and its preflight the answer it would get if CORS did
not exist: 405 ``method_not_allowed`` (404 ``not_found`` off the routes), which the browser
reads as a refusal. Nothing tells it which origins are listed.

Costs nothing measurable without an ``Origin`` header: one settings lookup on every
response, and ``Vary: Origin`` when origins are listed (bench/: verify, with and without).
"""

from __future__ import annotations

from aiohttp import hdrs, web

from authsvc.config import origin_of
from authsvc.errors import InvalidCsrf
from authsvc.http.appkeys import SETTINGS

# What a page may send and read. DPoP: sender-constrained sessions (API.md); X-CSRF-Token:
# the cookie-mode refresh; WWW-Authenticate tells invalid_token from a missing token.
ALLOW_HEADERS = "Authorization, Content-Type, DPoP, X-CSRF-Token, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id, Retry-After, WWW-Authenticate"
# Chromium caps a preflight's cache at 2 hours (Firefox at 24): the most that has an effect.
MAX_AGE = "7200"


def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the CORS headers of a listed origin, on every response."""
    origins = request.app[SETTINGS].cors_origins
    if not origins:
        return
    # Whatever the Origin, and without one: a cache in between must not hand one origin's
    # answer (the JWKS is public) to another.
    vary = response.headers.get(hdrs.VARY)
    response.headers[hdrs.VARY] = f"{vary}, Origin" if vary else "Origin"
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or origin not in origins:
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS


async def preflight(request: web.Request) -> tuple[str, web.Response] | None:
    """The route's template and the 204 answer to a preflight from a listed origin on it;
    None otherwise (the request then goes on as any OPTIONS request: 405, or 404 off the
    routes)."""
    if hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
        return None
    if request.headers.get(hdrs.ORIGIN) not in request.app[SETTINGS].cors_origins:
        return None
    # No route takes OPTIONS: the methods of every resource whose path matches (one path
    # may have several), as the router's 405 names them. Preflights are few: the browser
    # keeps each answer MAX_AGE seconds.
    template, methods = None, set()
    for resource in request.app.router.resources():
        _, allowed = await resource.resolve(request)
        if allowed:
            template = template or resource.canonical
            methods |= allowed
    if template is None:
        return None
    return template, web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(methods)),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
        },
    )


def check_refresh_origin(request: web.Request) -> None:
    """A cookie-mode refresh comes from authsvc's own origin or a listed one, or sends none.

    Raises:
        InvalidCsrf: an ``Origin`` that is neither (``null`` included).
    """
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return  # not every browser sends one on a same-origin POST; the CSRF token decides
    settings = request.app[SETTINGS]
    if origin in settings.cors_origins or origin == (origin_of(settings.effective_issuer) or None):
        return
    raise InvalidCsrf("the request's Origin is neither authsvc's own nor a listed one")
