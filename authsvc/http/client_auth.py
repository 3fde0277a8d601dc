"""HTTP Basic client authentication as RFC 6749 §2.3.1 says, for every endpoint that takes it.

§2.3.1: "The client identifier is encoded using the application/x-www-form-urlencoded
encoding algorithm per Appendix B, and the encoded value is used as the username; the
client password is encoded using the same algorithm and used as the password." So the id
and the secret are form-urldecoded after Base64 (RFC 7617): `gw%2Dsecret` and `gw-secret`
are the same secret, and a `+` is a space. A secret of letters, digits and `-._~` reads the
same whether the client encoded it (openid-client) or not (`curl -u`, authlib).

The caller passes its own client list (introspection clients today, operator clients
later) and, to throttle failures, its ``Throttle``; this module knows no setting.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from urllib.parse import unquote_plus

from aiohttp import hdrs, web

from authsvc.domain.ratelimit import Throttle
from authsvc.errors import InvalidClient
from authsvc.http.io import client_ip

# (client id, secret) as configured, e.g. Settings.introspection_clients.
ClientCredentials = Iterable[tuple[str, str]]


def decode_basic(header: str) -> tuple[str, str]:
    """The client id and secret of an ``Authorization: Basic ...`` header, form-urldecoded.

    Raises:
        InvalidClient: not Basic, not Base64, no ``:``, or not UTF-8 once decoded.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient()
    try:
        decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True).decode()
    except (binascii.Error, ValueError):  # UnicodeError is a ValueError
        raise InvalidClient() from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient()
    try:
        return unquote_plus(client_id, errors="strict"), unquote_plus(secret, errors="strict")
    except ValueError:  # a %-escape that is not UTF-8
        raise InvalidClient() from None


def match_client(client_id: str, secret: str, clients: ClientCredentials) -> str:
    """The id of the configured client these credentials are, compared in constant time.

    Every client is compared, id and secret both, so the time taken tells nothing about
    which ids exist or how much of a secret was right.

    Raises:
        InvalidClient: they are no configured client's.
    """
    presented_id, presented_secret = client_id.encode(), secret.encode()
    matched: str | None = None
    for known_id, known_secret in clients:
        id_ok = hmac.compare_digest(presented_id, known_id.encode())
        secret_ok = hmac.compare_digest(presented_secret, known_secret.encode())
        if id_ok & secret_ok:
            matched = known_id
    if matched is None:
        raise InvalidClient()
    return matched


def authenticate_client(request: web.Request, clients: ClientCredentials) -> str:
    """The id of the client whose Basic credentials ``request`` carries.

    Raises:
        InvalidClient: no Basic credentials, or none of ``clients``' (401 with
            ``WWW-Authenticate: Basic realm="authsvc"``).
    """
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise InvalidClient()
    return match_client(*decode_basic(header), clients)


async def authenticate_client_throttled(
    request: web.Request, clients: ClientCredentials, throttle: Throttle, *, now: int
) -> str:
    """``authenticate_client``, each failure taken from its address's bucket.

    Only failures count: a configured client's request costs no store call, and is never
    refused for failures, its own address's included.

    Raises:
        InvalidClient: as ``authenticate_client``, while the address has failures left.
        RateLimited: the address failed too often (429 with ``Retry-After``).
    """
    try:
        return authenticate_client(request, clients)
    except InvalidClient:
        await throttle.client_auth_failed(client_ip(request), now=now)
        raise
