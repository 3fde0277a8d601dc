"""What browsers load from authsvc: the browser client (/client/authsvc.js) and the account
page (/account, with its stylesheet and script).

The files are package data under ``authsvc/http/web/``, read once at import; the client's
source of truth is ``authsvc/http/web/authsvc.js`` (``clients/browser/authsvc.js`` in a
checkout links to it).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass

from aiohttp import hdrs, web

from authsvc.errors import NotFound
from authsvc.http.appkeys import SETTINGS

routes = web.RouteTableDef()

# A stable path, unversioned: caches keep it five minutes, then revalidate with its ETag,
# so a new release reaches every page within five minutes and costs no body until then.
ASSET_CACHE_CONTROL = "public, max-age=300"
# The page and its assets come from authsvc alone; no inline script or style, no frames.
ACCOUNT_PAGE_CSP = "default-src 'self'; frame-ancestors 'none'"
_PAGE_HEADERS = {
    "Content-Security-Policy": ACCOUNT_PAGE_CSP,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """A file served as it is in the package, with a validator for conditional requests."""

    body: bytes
    content_type: str
    etag: str

    @classmethod
    def load(cls, name: str, content_type: str) -> Asset:
        body = importlib.resources.files("authsvc.http").joinpath("web", name).read_bytes()
        return cls(body, content_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        headers = {**headers, "ETag": self.etag}
        if self.etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=self.body, headers={**headers, "Content-Type": self.content_type})


CLIENT = Asset.load("authsvc.js", "text/javascript; charset=utf-8")
ACCOUNT_HTML = Asset.load("account.html", "text/html; charset=utf-8")
ACCOUNT_CSS = Asset.load("account.css", "text/css; charset=utf-8")
ACCOUNT_JS = Asset.load("account.js", "text/javascript; charset=utf-8")
ACCOUNT_ICON = Asset.load("favicon.svg", "image/svg+xml")


@routes.get("/client/authsvc.js")
async def browser_client(request: web.Request) -> web.Response:
    """The browser client, an ES module. Any page may import it (``Access-Control-Allow-
    Origin: *``: a module script is fetched in CORS mode, and the file is public); what it
    may then call is for AUTHSVC_CORS_ORIGINS to say."""
    return CLIENT.response(
        request,
        {
            "Cache-Control": ASSET_CACHE_CONTROL,
            "Access-Control-Allow-Origin": "*",
            "Cross-Origin-Resource-Policy": "cross-origin",
            "X-Content-Type-Options": "nosniff",
        },
    )


def _account_page_on(request: web.Request) -> None:
    if not request.app[SETTINGS].account_page:
        raise NotFound("the account page is off (AUTHSVC_ACCOUNT_PAGE=false)")


@routes.get("/account")
async def account_page(request: web.Request) -> web.Response:
    """The account page: sign in, sessions, password, security events."""
    _account_page_on(request)
    # The page is the same for everyone (what it shows comes from the API), but always
    # revalidated, so a release's page never runs an old script.
    return ACCOUNT_HTML.response(request, {**_PAGE_HEADERS, "Cache-Control": "no-cache"})


@routes.get("/account/account.css")
async def account_stylesheet(request: web.Request) -> web.Response:
    _account_page_on(request)
    return ACCOUNT_CSS.response(request, {**_PAGE_HEADERS, "Cache-Control": ASSET_CACHE_CONTROL})


@routes.get("/account/account.js")
async def account_script(request: web.Request) -> web.Response:
    _account_page_on(request)
    return ACCOUNT_JS.response(request, {**_PAGE_HEADERS, "Cache-Control": ASSET_CACHE_CONTROL})


@routes.get("/account/favicon.svg")
async def account_icon(request: web.Request) -> web.Response:
    _account_page_on(request)
    return ACCOUNT_ICON.response(request, {**_PAGE_HEADERS, "Cache-Control": ASSET_CACHE_CONTROL})
