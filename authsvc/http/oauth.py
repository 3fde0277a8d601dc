"""/.well-known/*: the standards surface that lets others verify our tokens."""

from __future__ import annotations

from aiohttp import web

from authsvc.http.appkeys import KEY_RING, SETTINGS

routes = web.RouteTableDef()


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """RFC 7517 key set of every key that may have signed a live token."""
    max_age = request.app[SETTINGS].jwks_max_age
    return web.Response(
        body=request.app[KEY_RING].jwks_json,
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )
