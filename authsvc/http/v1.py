"""/v1/users and /v1/auth/*: the first-party account and token API."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from authsvc.domain.passwords import USERNAME_MAX_LENGTH
from authsvc.domain.sessions import Principal
from authsvc.errors import InvalidGrant, RegistrationClosed
from authsvc.http.appkeys import ACCOUNTS, CLOCK, SESSIONS, SETTINGS
from authsvc.http.bodies import RefreshTokenText, read_json
from authsvc.http.cookies import (
    CSRF_HEADER,
    REFRESH_COOKIE,
    clear_refresh_cookie,
    cookie_token_response,
)
from authsvc.http.cors import check_refresh_origin
from authsvc.http.dpop import authenticated, login_proof, require_login_proof
from authsvc.http.errors import error_response
from authsvc.http.events import events_response
from authsvc.http.io import (
    NO_STORE,
    client_ip,
    json_response,
    request_client,
    session_fields,
    token_response,
)

routes = web.RouteTableDef()

# A new username is 1 to 64 characters as sent, and again after normalisation
# (normalize_username: NFKC, trimming, case folding), which also refuses control and
# unassigned characters. A login takes any name up to 256 characters: one no account can
# have fails like a wrong password. Passwords are bounded by the policy (weak_password)
# and by AUTHSVC_MAX_BODY_SIZE.
NewUsername = Annotated[str, msgspec.Meta(min_length=1, max_length=USERNAME_MAX_LENGTH)]
LoginUsername = Annotated[str, msgspec.Meta(max_length=256)]
Device = Annotated[str, msgspec.Meta(max_length=128)]


class RegisterBody(msgspec.Struct, forbid_unknown_fields=True):
    username: NewUsername
    password: str


class LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    username: LoginUsername
    password: str
    device: Device | None = None
    # Cookie mode (docs/browsers.md): the refresh token in an HttpOnly cookie.
    cookie: bool = False


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    # Left out: cookie mode, the refresh token is the cookie's (null is refused).
    refresh_token: RefreshTokenText | msgspec.UnsetType = msgspec.UNSET


class ChangePasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: str
    new_password: str


class DeleteAccountBody(msgspec.Struct, forbid_unknown_fields=True):
    password: str


async def _principal(request: web.Request) -> Principal:
    """Bearer, or DPoP with its proof for a bound token (``authsvc.http.dpop``)."""
    return await authenticated(request)


async def _principal_forwarded(request: web.Request) -> Principal:
    return await authenticated(request, forwarded=True)


@routes.post("/v1/users")
async def register(request: web.Request) -> web.Response:
    if request.app[SETTINGS].registration == "closed":
        raise RegistrationClosed("registration is closed; an operator creates accounts")
    body = await read_json(request, RegisterBody)
    user = await request.app[SESSIONS].register(
        body.username, body.password, ip=client_ip(request), now=request.app[CLOCK]()
    )
    return json_response({"user_id": user.user_id, "username": user.username}, status=201)


@routes.delete("/v1/users/me")
async def delete_account(request: web.Request) -> web.Response:
    """The account goes with everything the store holds of it; the name is free again."""
    principal = await _principal(request)
    body = await read_json(request, DeleteAccountBody)
    await request.app[ACCOUNTS].delete_own(principal, body.password, now=request.app[CLOCK]())
    return web.Response(status=204)


@routes.post("/v1/auth/password")
async def change_password(request: web.Request) -> web.Response:
    """A new password; every other session of the user ends at once, this one stays."""
    principal = await _principal(request)
    body = await read_json(request, ChangePasswordBody)
    await request.app[ACCOUNTS].change_password(
        principal, body.current_password, body.new_password,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.post("/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await read_json(request, LoginBody)
    proof = login_proof(request)  # binds the session to its key (RFC 9449 §5)
    require_login_proof(request, proof)
    client = request_client(request, device=body.device or "")
    sessions = request.app[SESSIONS]
    pair = await sessions.login(
        body.username, body.password, client, now=request.app[CLOCK](), proof=proof
    )
    if body.cookie:
        return cookie_token_response(
            pair,
            sessions.csrf_token(pair.session_id),
            samesite=request.app[SETTINGS].cookie_samesite,
        )
    return token_response(pair)


@routes.post("/v1/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    # Cookie mode sends no body at all, or {}.
    body = await read_json(request, RefreshBody) if request.body_exists else RefreshBody()
    if body.refresh_token is msgspec.UNSET:
        return await _refresh_cookie(request)
    # A token in the body wins over a cookie sent with it.
    pair = await request.app[SESSIONS].refresh(
        body.refresh_token, client=request_client(request), now=request.app[CLOCK](),
        proof=login_proof(request),  # a bound session's refresh needs its key's proof
    )  # fmt: skip
    return token_response(pair)


async def _refresh_cookie(request: web.Request) -> web.Response:
    """Rotate the cookie's refresh token: the session's CSRF token and an Origin of ours
    (or none) first, so a page elsewhere that makes the browser send the cookie rotates
    and revokes nothing (403 invalid_csrf)."""
    check_refresh_origin(request)
    sessions, samesite = request.app[SESSIONS], request.app[SETTINGS].cookie_samesite
    try:
        token = request.cookies.get(REFRESH_COOKIE)
        if token is None:
            raise InvalidGrant("no refresh token: none in the body, and no cookie")
        pair = await sessions.refresh(
            token,
            csrf_token=request.headers.get(CSRF_HEADER, ""),
            client=request_client(request),
            now=request.app[CLOCK](),
            proof=login_proof(request),  # a bound session's refresh needs its key's proof
        )
    except InvalidGrant as exc:
        # The cookie is HTTP's to clear, here, rather than the error's: a browser that keeps
        # a refused cookie sends it again and again.
        response = error_response(exc)
        clear_refresh_cookie(response, samesite=samesite)
        return response
    return cookie_token_response(pair, sessions.csrf_token(pair.session_id), samesite=samesite)


def _ended_session_response(request: web.Request) -> web.Response:
    """204 for logout and logout-all, dropping the refresh cookie when the request has one."""
    response = web.Response(status=204)
    if REFRESH_COOKIE in request.cookies:
        clear_refresh_cookie(response, samesite=request.app[SETTINGS].cookie_samesite)
    return response


@routes.post("/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    principal = await _principal(request)
    await request.app[SESSIONS].logout(
        principal, client=request_client(request), now=request.app[CLOCK]()
    )
    return _ended_session_response(request)


@routes.post("/v1/auth/logout-all")
async def logout_all(request: web.Request) -> web.Response:
    principal = await _principal(request)
    await request.app[SESSIONS].logout_all(
        principal, client=request_client(request), now=request.app[CLOCK]()
    )
    return _ended_session_response(request)


@routes.get("/v1/auth/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    principal = await _principal(request)
    records = await request.app[SESSIONS].list_sessions(principal, now=request.app[CLOCK]())
    return json_response(
        {
            "sessions": [
                {
                    **session_fields(record),
                    "current": record.session_id == principal.session_id,
                }
                for record in records
            ]
        },
        headers=NO_STORE,  # the user's data: what follows a Bearer read is never cached
    )


@routes.delete("/v1/auth/sessions/{session_id}")
async def revoke_session(request: web.Request) -> web.Response:
    principal = await _principal(request)
    await request.app[SESSIONS].revoke_session(
        principal,
        request.match_info["session_id"],
        client=request_client(request),
        now=request.app[CLOCK](),
    )
    return web.Response(status=204)


@routes.get("/v1/auth/events")
async def list_events(request: web.Request) -> web.Response:
    principal = await _principal(request)
    events = await request.app[SESSIONS].list_events(principal, now=request.app[CLOCK]())
    return events_response(events)


@routes.get("/v1/auth/me")
async def me(request: web.Request) -> web.Response:
    principal = await _principal(request)
    return json_response(
        {
            "user_id": principal.user_id,
            "username": principal.username,
            "session_id": principal.session_id,
        },
        headers=NO_STORE,
    )


@routes.get("/v1/auth/verify")
async def verify(request: web.Request) -> web.Response:
    """Forward-auth: 200 with identity headers for a live session, else 401.

    A DPoP proof is checked against the request the gateway forwards (X-Forwarded-*).
    """
    principal = await _principal_forwarded(request)
    return web.Response(
        status=200,
        headers={
            "X-Auth-User-Id": principal.user_id,
            "X-Auth-Session-Id": principal.session_id,
            # Present, and empty, when the user has no roles: a gateway that forwards it
            # overwrites whatever a client sent under that name.
            "X-Auth-Roles": ",".join(principal.claims.roles),
            **NO_STORE,
        },
    )
