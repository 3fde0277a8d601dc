"""What every request goes through: its request id, the contract's error body for any
exception, its metrics, CORS preflights, and the headers every response carries
(X-Request-Id, a Server header that names no versions, CORS for a listed origin)."""

from __future__ import annotations

import time

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from authsvc.http.appkeys import METRICS
from authsvc.http.bodies import read_body
from authsvc.http.cors import add_cors_headers, preflight
from authsvc.http.errors import contract_error_response
from authsvc.telemetry.metrics import UNMATCHED_ROUTE
from authsvc.telemetry.requestid import HEADER, current_request_id, new_request_id, request_id_for

REQUEST_ID = web.RequestKey("request_id", str)
SERVER = "authsvc"
# What the access log and the metrics say of a request whose client went away before its
# answer could be written: nginx's "client closed request", never a 5xx of the server's.
CLIENT_CLOSED_REQUEST = 499


def client_is_gone(request: web.BaseRequest) -> bool:
    """True once the client's connection is lost (aiohttp drops its transport then)."""
    return request.transport is None


def route_of(request: web.Request) -> str:
    """The template of the route that matched (``/v1/auth/sessions/{session_id}``)."""
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware: the request's id for logs and response, the contract's error
    body for every exception (the only catch-all in authsvc), and its metrics.

    One middleware rather than one per concern: each costs a coroutine frame and a call
    through aiohttp's middleware chain on every request (bench/: verify).
    """
    request_id = request_id_for(request.headers.get(HEADER))
    request[REQUEST_ID] = request_id
    # Not reset on the way out: aiohttp runs each request in a task of its own, so the id
    # ends with that task, and the access log line, written in it after this returns,
    # still carries it.
    current_request_id.set(request_id)
    started = time.perf_counter()
    in_flight = request.app[METRICS].http_requests_in_flight
    in_flight.inc()
    route: str | None = None  # the route's template, where the router found none
    try:
        if hdrs.CONTENT_ENCODING in request.headers:
            # Decoded here, whatever the route: a coding that fails fails before any
            # handler, not in aiohttp after the answer (an ERROR and a traceback there).
            await read_body(request)
        # A preflight is answered here: no route takes OPTIONS (http/cors.py).
        answer = await preflight(request) if request.method == hdrs.METH_OPTIONS else None
        if answer is None:
            response = await handler(request)
        else:
            route, response = answer
    except Exception as exc:
        if isinstance(exc, ConnectionError) and client_is_gone(request):
            # The body stopped coming: the client dropped the connection mid-upload.
            response = _dropped()
            _count(request, CLIENT_CLOSED_REQUEST, started, route)
            return response
        error = contract_error_response(request, exc)
        if error is None:  # a redirect, or an aiohttp error page without a contract body
            assert isinstance(exc, web.HTTPException)
            _count(request, exc.status, started)
            raise
        response = error
    finally:
        in_flight.dec()
    if request.content.exception() is not None:
        _end_unreadable_body(request, response)
    # A request cancelled by the shutdown bound is not counted: it has no status. One whose
    # client left while it was processed is counted as dropped, whatever it would have been.
    status = CLIENT_CLOSED_REQUEST if client_is_gone(request) else response.status
    _count(request, status, started, route)
    return response


def _dropped() -> web.Response:
    """An answer for nobody: aiohttp cannot write it, and logs its status (499)."""
    response = web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
    response.force_close()
    return response


def _end_unreadable_body(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp's parser stopped at a body it could not read (a Content-Encoding that does
    not decode): no request after it can be read on this connection, so it closes once
    this answer has gone, and aiohttp is told the body has ended rather than left waiting
    for the rest of it (which would raise the parser's error again, and log it)."""
    response.force_close()
    request.content.feed_eof()


def _count(request: web.Request, status: int, started: float, route: str | None = None) -> None:
    request.app[METRICS].request_finished(
        route or route_of(request), request.method, status, time.perf_counter() - started
    )


async def set_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, error pages included, gets these headers."""
    response.headers[HEADER] = request.get(REQUEST_ID) or new_request_id()
    # aiohttp's default names the Python and aiohttp versions: no need to tell scanners.
    response.headers["Server"] = SERVER
    add_cors_headers(request, response)
