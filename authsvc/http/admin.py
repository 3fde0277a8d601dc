"""/v1/admin/*: the operator API (API.md, Operator API).

Every call authenticates as a client of AUTHSVC_ADMIN_CLIENTS with HTTP Basic, decoded
as RFC 6749 §2.3.1 says and compared in constant time (``client_auth``); failures are
throttled per address, as introspection's are. With no client configured every call is
401 invalid_client. What a call changes is logged by ``AccountService`` with the client
id, the action and the user id, and recorded as a security event of the account (listed by
``GET /v1/admin/users/{user_id}/events``) with the ip and user agent of the operator's
request, which caused it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from authsvc.domain.accounts import Account
from authsvc.errors import InvalidRequest
from authsvc.http.appkeys import ACCOUNTS, CLOCK, SETTINGS, THROTTLE
from authsvc.http.bodies import read_json
from authsvc.http.client_auth import authenticate_client_throttled
from authsvc.http.events import events_response
from authsvc.http.io import NO_STORE, json_response, request_client, session_fields

routes = web.RouteTableDef()

# The role rules (count, characters) are AccountService's, answered as invalid_request;
# these bounds only keep a body from costing more than a handful of them.
Role = Annotated[str, msgspec.Meta(max_length=256)]


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    new_password: str


class RolesBody(msgspec.Struct, forbid_unknown_fields=True):
    roles: Annotated[list[Role], msgspec.Meta(max_length=1024)]


async def _operator(request: web.Request) -> str:
    """The id of the admin client calling.

    Raises:
        InvalidClient: no Basic credentials, or none of AUTHSVC_ADMIN_CLIENTS'.
        RateLimited: this address failed to authenticate too often.
    """
    return await authenticate_client_throttled(
        request, request.app[SETTINGS].admin_clients, request.app[THROTTLE],
        now=request.app[CLOCK](),
    )  # fmt: skip


def _user(account: Account) -> web.Response:
    return json_response(
        account.fields(),
        headers=NO_STORE,
    )


@routes.get("/v1/admin/users")
async def find_user(request: web.Request) -> web.Response:
    await _operator(request)
    username = request.query.get("username")
    if not username:
        raise InvalidRequest("the query parameter username is required")
    return _user(await request.app[ACCOUNTS].find(username, now=request.app[CLOCK]()))


@routes.get("/v1/admin/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    await _operator(request)
    account = await request.app[ACCOUNTS].get(
        request.match_info["user_id"], now=request.app[CLOCK]()
    )
    return _user(account)


@routes.delete("/v1/admin/users/{user_id}")
async def delete_user(request: web.Request) -> web.Response:
    operator = await _operator(request)
    await request.app[ACCOUNTS].delete(request.match_info["user_id"], operator=operator)
    return web.Response(status=204)


@routes.get("/v1/admin/users/{user_id}/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    await _operator(request)
    records = await request.app[ACCOUNTS].sessions(
        request.match_info["user_id"], now=request.app[CLOCK]()
    )
    return json_response(
        {"sessions": [session_fields(record) for record in records]}, headers=NO_STORE
    )


@routes.get("/v1/admin/users/{user_id}/events")
async def list_events(request: web.Request) -> web.Response:
    await _operator(request)
    events = await request.app[ACCOUNTS].events(
        request.match_info["user_id"], now=request.app[CLOCK]()
    )
    return events_response(events)


@routes.delete("/v1/admin/users/{user_id}/sessions")
async def revoke_sessions(request: web.Request) -> web.Response:
    operator = await _operator(request)
    await request.app[ACCOUNTS].revoke_sessions(
        request.match_info["user_id"], operator=operator,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.delete("/v1/admin/users/{user_id}/sessions/{session_id}")
async def revoke_session(request: web.Request) -> web.Response:
    operator = await _operator(request)
    await request.app[ACCOUNTS].revoke_session(
        request.match_info["user_id"], request.match_info["session_id"],
        operator=operator, client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.post("/v1/admin/users/{user_id}/disable")
async def disable(request: web.Request) -> web.Response:
    operator = await _operator(request)
    await request.app[ACCOUNTS].set_disabled(
        request.match_info["user_id"], True, operator=operator,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.post("/v1/admin/users/{user_id}/enable")
async def enable(request: web.Request) -> web.Response:
    operator = await _operator(request)
    await request.app[ACCOUNTS].set_disabled(
        request.match_info["user_id"], False, operator=operator,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.put("/v1/admin/users/{user_id}/password")
async def set_password(request: web.Request) -> web.Response:
    operator = await _operator(request)
    body = await read_json(request, PasswordBody)
    await request.app[ACCOUNTS].set_password(
        request.match_info["user_id"], body.new_password, operator=operator,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)


@routes.put("/v1/admin/users/{user_id}/roles")
async def set_roles(request: web.Request) -> web.Response:
    operator = await _operator(request)
    body = await read_json(request, RolesBody)
    await request.app[ACCOUNTS].set_roles(
        request.match_info["user_id"], body.roles, operator=operator,
        client=request_client(request), now=request.app[CLOCK](),
    )  # fmt: skip
    return web.Response(status=204)
