"""Reading requests and writing responses: bearer tokens, client details, JSON responses."""

from __future__ import annotations

import logging
import re

import msgspec
from aiohttp import web

from authsvc.config import Network
from authsvc.domain.addresses import IPAddress, normalized_address, parse_address
from authsvc.domain.clients import ClientInfo
from authsvc.domain.sessions import TokenPair
from authsvc.errors import (
    InvalidToken,
    MissingToken,
)
from authsvc.http.appkeys import SETTINGS, UNTRUSTED_FORWARDING_WARNED
from authsvc.http.errors import JSON_CONTENT_TYPE
from authsvc.store.records import SessionRecord

logger = logging.getLogger(__name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
USER_AGENT_MAX_LENGTH = 512
# RFC 6750 §2.1 b64token. aiohttp hands non-UTF-8 header bytes over as lone surrogates,
# which no JWT library can encode: anything outside this alphabet is refused here.
B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*", re.ASCII)


def bearer_token(request: web.Request) -> str:
    """Return the access token of an ``Authorization: Bearer`` header.

    Raises:
        MissingToken: no Authorization header, or another scheme (RFC 6750 §3.1).
        InvalidToken: a Bearer header with no usable token.
    """
    return authorization(request, dpop=False)[1]


def authorization(request: web.Request, *, dpop: bool) -> tuple[str, str]:
    """Return the scheme (``bearer``, or ``dpop`` when ``dpop`` allows it: RFC 9449 §7.1)
    and the access token of the Authorization header.

    Raises:
        MissingToken: no Authorization header, or another scheme (RFC 6750 §3.1).
        InvalidToken: a Bearer or DPoP header with no usable token.
    """
    header = request.headers.get("Authorization")
    if header is None:
        raise MissingToken()
    scheme, _, token = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme != "bearer" and (scheme != "dpop" or not dpop):
        raise MissingToken()
    token = token.strip()
    if B64TOKEN.fullmatch(token) is None:
        raise InvalidToken("the Authorization header is malformed")
    return scheme, token


def header_text(request: web.Request, name: str) -> str:
    """A header's value as text any store, encoder or log takes ("" when absent; the
    values of a repeated header joined by ", ", as RFC 9110 §5.3 combines them).

    aiohttp hands header bytes that are not UTF-8 (``café`` sent in ISO-8859-1) over as
    lone surrogates, which Redis's client, JSON and the log stream cannot encode: every
    header authsvc keeps or logs is read here, and such bytes become U+FFFD.
    """
    value = ", ".join(request.headers.getall(name, ()))
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def client_user_agent(request: web.Request) -> str:
    return header_text(request, "User-Agent")[:USER_AGENT_MAX_LENGTH]


def request_client(request: web.Request, *, device: str = "") -> ClientInfo:
    """The request's client as sessions and security events record it."""
    return ClientInfo(device=device, user_agent=client_user_agent(request), ip=client_ip(request))


def client_ip(request: web.Request) -> str:
    """The client's address: the peer, or behind trusted proxies the X-Forwarded-For hop
    nearest to them that they did not add themselves.

    Written without a port, and an IPv4-mapped IPv6 address as the IPv4 address it maps
    (``authsvc.domain.addresses``): the full address, as sessions record it; rate limits group
    it further (``client_network``).
    """
    peer = normalized_address(request.remote or "")
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted:
        if "X-Forwarded-For" in request.headers:
            _warn_untrusted_forwarding(request.app)
        return peer
    if not _is_trusted(parse_address(peer), trusted):
        return peer
    hops = [hop.strip() for hop in header_text(request, "X-Forwarded-For").split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        ip = parse_address(hop)
        if not _is_trusted(ip, trusted):
            return peer if ip is None else str(ip)
    return peer


def _warn_untrusted_forwarding(app: web.Application) -> None:
    warned = app[UNTRUSTED_FORWARDING_WARNED]
    if warned.done:
        return
    warned.done = True
    # Never the header's value: it is the client's to write.
    logger.warning(
        "requests carry X-Forwarded-For but AUTHSVC_TRUSTED_PROXIES is unset: the peer's "
        "address is used, so every client behind a proxy or load balancer shares one "
        "rate-limit bucket; set AUTHSVC_TRUSTED_PROXIES to the proxies' addresses"
    )


def _is_trusted(ip: IPAddress | None, trusted: tuple[Network, ...]) -> bool:
    return ip is not None and any(ip in network for network in trusted)


def json_response(
    body: object, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type=JSON_CONTENT_TYPE,
        charset="utf-8",
    )


def session_fields(record: SessionRecord) -> dict[str, object]:
    """A session as /v1/auth/sessions and the operator API list it (without ``current``)."""
    return {
        "session_id": record.session_id,
        "created_at": record.created_at,
        "last_used_at": record.last_used_at,
        "expires_at": record.expires_at,
        "device": record.device or None,
        "user_agent": record.user_agent or None,
        "ip": record.ip or None,
    }


def token_response(pair: TokenPair) -> web.Response:
    """The TokenPair body of docs/api.md, never cached (RFC 6749 §5.1)."""
    return json_response(
        {
            "access_token": pair.access_token,
            "token_type": pair.token_type,
            "expires_in": pair.expires_in,
            "refresh_token": pair.refresh_token,
            "refresh_expires_in": pair.refresh_expires_in,
            "session_id": pair.session_id,
        },
        headers=NO_STORE,
    )
