"""Cookie mode (docs/browsers.md): the refresh token in an HttpOnly cookie, out of reach of
any script of the page, and the session's CSRF token in the body instead.

``__Host-``: the browser keeps the cookie only when it is ``Secure``, has ``Path=/`` and no
``Domain``, so no other host of the site can set or shadow it. Browsers take ``Secure``
cookies from http://localhost and http://127.0.0.1 too, so it is always sent.
"""

from __future__ import annotations

from aiohttp import web

from authsvc.config import CookieSameSite
from authsvc.domain.sessions import TokenPair
from authsvc.http.io import NO_STORE, json_response

REFRESH_COOKIE = "__Host-authsvc-refresh"
CSRF_HEADER = "X-CSRF-Token"


def _set_refresh_cookie(
    response: web.StreamResponse, value: str, *, max_age: int, samesite: CookieSameSite
) -> None:
    response.set_cookie(
        REFRESH_COOKIE, value, max_age=max_age, path="/", secure=True, httponly=True,
        samesite=samesite,
    )  # fmt: skip


def clear_refresh_cookie(response: web.StreamResponse, *, samesite: CookieSameSite) -> None:
    """Tell the browser to drop the cookie (``Max-Age=0``, with the attributes that let a
    ``__Host-`` cookie be replaced at all)."""
    _set_refresh_cookie(response, "", max_age=0, samesite=samesite)


def cookie_token_response(
    pair: TokenPair, csrf_token: str, *, samesite: CookieSameSite
) -> web.Response:
    """The TokenPair of cookie mode: no ``refresh_token`` (it is in the cookie), the
    session's ``csrf_token``; never cached."""
    response = json_response(
        {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_expires_in": pair.refresh_expires_in,
            "session_id": pair.session_id,
            "csrf_token": csrf_token,
        },
        headers=NO_STORE,
    )
    _set_refresh_cookie(
        response, pair.refresh_token, max_age=pair.refresh_expires_in, samesite=samesite
    )
    return response
