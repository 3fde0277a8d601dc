"""/oauth/* and /.well-known/*: the standards surface for OAuth libraries and gateways.

One service behind two surfaces: /oauth/token rotates through the same SessionService
as /v1/auth/refresh, with the same grace, replay and revocation, so a chain started on
one surface continues on the other. Bodies are forms (RFC 6749 §4.1.3, RFC 7009 §2.1,
RFC 7662 §2.1); errors are RFC 6749 §5.2 bodies, rendered by ``authsvc.http.errors``
with their OAuth status.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import hdrs, web

from authsvc.errors import (
    AccountDisabled,
    InvalidCredentials,
    InvalidGrant,
    UnsupportedGrantType,
)
from authsvc.http.appkeys import ACTIVE_KEYS, CLOCK, SESSIONS, SETTINGS, THROTTLE
from authsvc.http.bodies import RefreshTokenText, form_as, read_form, read_form_values
from authsvc.http.client_auth import authenticate_client_throttled
from authsvc.http.dpop import login_proof, require_login_proof
from authsvc.http.io import NO_STORE, json_response, request_client, token_response
from authsvc.tokens.dpop import ALGORITHMS as DPOP_ALGORITHMS

routes = web.RouteTableDef()

Token = Annotated[str, msgspec.Meta(max_length=4096)]
Text = Annotated[str, msgspec.Meta(max_length=256)]


# RFC 6749 §3.2: parameters a form does not name (client_id, scope, ...) are ignored, and
# so are those of another grant type. §3.1: one sent without a value counts as omitted,
# so an empty required one is missing (invalid_request).


class GrantForm(msgspec.Struct):
    grant_type: Text


class RefreshGrantForm(msgspec.Struct):
    # §6: "refresh_token REQUIRED. The refresh token issued to the client."
    refresh_token: RefreshTokenText


class PasswordGrantForm(msgspec.Struct):
    # §4.3.2: "username REQUIRED ... password REQUIRED". Bounded like /v1/auth/login: a
    # name no account can have fails like a wrong password.
    username: Text
    password: str


class TokenHintForm(msgspec.Struct):
    token: Token
    token_type_hint: Text | None = None


@routes.get("/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    """RFC 7517 key set: every key that may have signed a live token, and the next one."""
    keys = request.app[ACTIVE_KEYS].at(request.app[CLOCK]())
    headers = {
        "Cache-Control": f"public, max-age={request.app[SETTINGS].jwks_max_age}",
        "ETag": keys.etag,
    }
    if keys.etag in request.headers.get(hdrs.IF_NONE_MATCH, ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=keys.jwks_json, content_type="application/json", charset="utf-8", headers=headers
    )


@routes.get("/.well-known/oauth-authorization-server")
async def metadata(request: web.Request) -> web.Response:
    """RFC 8414 §2: where the endpoints are and what they accept."""
    settings = request.app[SETTINGS]
    issuer = settings.effective_issuer.rstrip("/")
    grants = ["refresh_token", "password"] if settings.password_grant else ["refresh_token"]
    dpop: dict[str, object] = {}
    if settings.dpop != "off":
        # RFC 9449 §5.1: the algorithms a proof may be signed with.
        dpop["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
    return json_response(
        {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "introspection_endpoint": f"{issuer}/oauth/introspect",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "grant_types_supported": grants,
            # RFC 8414 §2 makes this REQUIRED and §3.2 omits empty arrays, so neither `[]`
            # nor leaving it out is an answer (authlib's validation refuses both). There
            # is no authorization endpoint (first-party apps log in through
            # /v1/auth/login), so nothing here issues a code or a token through one:
            # "none" is the registered response type that issues neither (OAuth 2.0
            # Multiple Response Type Encoding Practices §4), the value token-only
            # servers commonly publish. "code" or "token" would promise flows that do
            # not exist; with no authorization_endpoint, no client can start one anyway.
            "response_types_supported": ["none"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
            **dpop,
        },
        headers={"Cache-Control": f"public, max-age={settings.jwks_max_age}"},
    )


@routes.post("/oauth/token")
async def token(request: web.Request) -> web.Response:
    """RFC 6749 §6 (refresh_token grant) and §4.3 (password grant, off by default)."""
    values = await read_form_values(request)
    grant_type = form_as(values, GrantForm).grant_type
    sessions, now = request.app[SESSIONS], request.app[CLOCK]()
    if grant_type == "refresh_token":
        refresh = form_as(values, RefreshGrantForm)
        # The address's refresh bucket, shared with /v1/auth/refresh, before any signing.
        # RFC 9449 §5: a bound session's refresh needs a proof by its key.
        pair = await sessions.refresh(
            refresh.refresh_token, client=request_client(request), now=now,
            proof=login_proof(request),
        )  # fmt: skip
        return token_response(pair)
    if grant_type == "password" and request.app[SETTINGS].password_grant:
        owner = form_as(values, PasswordGrantForm)
        proof = login_proof(request)  # RFC 9449 §5: binds the session to the proof's key
        require_login_proof(request, proof)
        try:
            pair = await sessions.login(
                owner.username, owner.password, request_client(request), now=now, proof=proof
            )
        except InvalidCredentials:
            # §5.2: wrong resource owner credentials are an invalid_grant.
            raise InvalidGrant("invalid username or password") from None
        except AccountDisabled:
            # §5.2 has no other code for a grant the server will not honour.
            raise InvalidGrant("this account is disabled") from None
        return token_response(pair)
    # §5.2: "The authorization grant type is not supported by the authorization server."
    raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")


@routes.post("/oauth/revoke")
async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: end the session of a refresh or access token."""
    form = await read_form(request, TokenHintForm)
    # §2.1: the hint only speeds up the lookup; both kinds are tried whatever it says.
    await request.app[SESSIONS].revoke_token(
        form.token, client=request_client(request), now=request.app[CLOCK]()
    )
    # §2.2: "The authorization server responds with HTTP status code 200 if the token has
    # been revoked successfully or if the client submitted an invalid token."
    return web.Response(status=200, headers=NO_STORE)


@routes.post("/oauth/introspect")
async def introspect(request: web.Request) -> web.Response:
    """RFC 7662: whether an access token is active now, revocation included."""
    now = request.app[CLOCK]()
    # §2.1: the caller must be a configured introspection client (HTTP Basic); failures
    # are throttled per address.
    await authenticate_client_throttled(
        request, request.app[SETTINGS].introspection_clients, request.app[THROTTLE], now=now
    )
    form = await read_form(request, TokenHintForm)
    principal = await request.app[SESSIONS].introspect(form.token, now=now)
    if principal is None:
        # §2.2: nothing more is said about a token that is not active.
        return json_response({"active": False}, headers=NO_STORE)
    claims = principal.claims
    body: dict[str, object] = {
        "active": True,
        "sub": principal.user_id,
        "username": principal.username,
        "sid": principal.session_id,
        "client_id": claims.client_id,
        "token_type": "Bearer" if claims.jkt is None else "DPoP",
        "exp": claims.expires_at,
        "iat": claims.issued_at,
        "roles": list(claims.roles),
    }
    if claims.jkt is not None:
        # RFC 9449 §6.2: the key a bound token must be presented with.
        body["cnf"] = {"jkt": claims.jkt}
    return json_response(body, headers=NO_STORE)
