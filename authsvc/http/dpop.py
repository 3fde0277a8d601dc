"""The HTTP side of DPoP (RFC 9449): the ``DPoP`` header, the request it must match, and
``Authorization: DPoP`` on the Bearer routes.

A proof is checked against the request's method and its URL with ``AUTHSVC_ISSUER`` as the
base (the URL the client sees, whatever proxy sits in between), or, at /v1/auth/verify,
against the request a gateway forwards (``X-Forwarded-Method``, ``X-Forwarded-Uri``,
``X-Forwarded-Proto``, ``X-Forwarded-Host``). ``AUTHSVC_DPOP=off`` ignores the header.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from authsvc.domain.sessions import Principal
from authsvc.errors import InvalidDpopProof, InvalidDpopToken, InvalidToken, MissingDpopProof
from authsvc.http.appkeys import CLOCK, DPOP_PROOFS, SESSIONS, SETTINGS
from authsvc.http.io import B64TOKEN, authorization
from authsvc.tokens.dpop import Proof

DPOP_HEADER = "DPoP"


def _header(request: web.Request) -> str | None:
    """The one ``DPoP`` header's value, None when there is none.

    Raises:
        InvalidDpopProof: more than one, or one that cannot be a compact JWS.
    """
    values = request.headers.getall(DPOP_HEADER, ())
    if not values:
        return None
    # §4.3 (1): "there is not more than one DPoP HTTP request header field".
    if len(values) > 1:
        raise InvalidDpopProof("more than one DPoP header")
    value = values[0].strip()
    if B64TOKEN.fullmatch(value) is None:
        raise InvalidDpopProof("the DPoP header is not a JWT")
    return value


def _issuer_url(request: web.Request, path: str) -> str:
    return request.app[SETTINGS].effective_issuer.rstrip("/") + path


def request_target(request: web.Request) -> tuple[str, str]:
    """The method and URL a proof of this request must name: the path on the issuer."""
    return request.method, _issuer_url(request, request.rel_url.raw_path)


def forwarded_target(request: web.Request) -> tuple[str, str]:
    """What a gateway's forward-auth call asks about: its ``X-Forwarded-*`` request, or,
    without ``X-Forwarded-Uri``, the request itself.

    ``X-Forwarded-Uri`` may be a path (nginx's ``$request_uri``) or an absolute URL; a
    path takes ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, else the issuer's.
    """
    uri = request.headers.get("X-Forwarded-Uri")
    if not uri:
        return request_target(request)
    method = request.headers.get("X-Forwarded-Method", request.method).strip().upper()
    if "://" in uri:
        return method, uri
    try:
        base = urlsplit(request.app[SETTINGS].effective_issuer)
    except ValueError:
        raise InvalidDpopProof("the issuer is not a URL") from None
    proto = request.headers.get("X-Forwarded-Proto", base.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", base.netloc).split(",")[0].strip()
    path = uri if uri.startswith("/") else "/" + uri
    return method, f"{proto}://{host}{path}"


def login_proof(request: web.Request) -> Proof | None:
    """The checked proof of a login, refresh or token request; None when it has none (or
    ``AUTHSVC_DPOP=off``). Its jti is the service's to claim.

    Raises:
        MissingDpopProof: no proof at a login while ``AUTHSVC_DPOP=required`` (``login``
            is the caller's to say: refreshes follow the session's binding).
        InvalidDpopProof: a proof that fails a check of RFC 9449 §4.3.
    """
    mode = request.app[SETTINGS].dpop
    if mode == "off":
        return None
    header = _header(request)
    if header is None:
        return None
    method, url = request_target(request)
    return request.app[DPOP_PROOFS].verify(header, method=method, url=url, now=request.app[CLOCK]())


def require_login_proof(request: web.Request, proof: Proof | None) -> None:
    """Raises: MissingDpopProof when ``AUTHSVC_DPOP=required`` and a login has no proof."""
    if proof is None and request.app[SETTINGS].dpop == "required":
        raise MissingDpopProof()


async def authenticated(request: web.Request, *, forwarded: bool = False) -> Principal:
    """The principal of a Bearer route's request: ``Authorization: Bearer`` for a bearer
    token, ``Authorization: DPoP`` with a ``DPoP`` proof for a bound one (RFC 9449 §7.1).

    Raises:
        MissingToken: no Authorization header, or another scheme.
        InvalidToken: a bad token, or a bound one sent as Bearer.
        InvalidDpopToken: under the DPoP scheme, a bad token, one not bound to the
            proof's key, or one without a proof.
        InvalidDpopProof: under the DPoP scheme, a proof that fails a check (its ``ath``
            included) or was seen before; with the DPoP challenge.
    """
    dpop_enabled = request.app[SETTINGS].dpop != "off"
    scheme, token = authorization(request, dpop=dpop_enabled)
    now = request.app[CLOCK]()
    dpop = scheme == "dpop"
    proof: Proof | None = None
    try:
        if dpop:
            header = _header(request)
            if header is not None:
                method, url = forwarded_target(request) if forwarded else request_target(request)
                proof = request.app[DPOP_PROOFS].verify(
                    header, method=method, url=url, now=now, access_token=token
                )
        return await request.app[SESSIONS].authenticate(token, now=now, dpop=dpop, proof=proof)
    except InvalidDpopProof as exc:
        # On a resource, a proof's error carries the DPoP challenge (RFC 9449 §7.1).
        raise exc.at_resource() from None
    except InvalidToken as exc:
        if dpop and not isinstance(exc, InvalidDpopToken):
            raise InvalidDpopToken(exc.description) from None
        raise
