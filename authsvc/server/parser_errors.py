"""Requests aiohttp's HTTP parser refuses get the contract's JSON error body too.

A header line past aiohttp's limit, a malformed request line or a bad chunked body never
reach the application: aiohttp answers them itself, in plain text, with its version in
the Server header, echoing the offending bytes. aiohttp offers no hook for that answer
but its request handler's ``handle_error``, so the runner here hands its server a handler
class that renders 4xx parser errors as ``invalid_request`` (or ``payload_too_large``)
bodies with a request id, and leaves everything else to aiohttp.

The same handler class keeps a stop from cutting what it accepted. When the server stops,
aiohttp closes each connection and from then on ignores the bytes that arrive on it, so a
request whose headers had come in but whose body was still coming was never answered: its
handler waited for the rest of the body until the shutdown bound cut it. Here a connection
with a request in progress at the stop (``close``) goes on reading that request's body
(``data_received``), and its answer says ``Connection: close`` (``finish_response``): the
client knows not to send another request on it, which nobody would read.

That handler class gets in through aiohttp's private parts, all of them here and nowhere
else: ``AppRunner._make_server`` (overridden), ``web.Server``'s ``_loop`` and ``_kwargs``
(read to make each handler as aiohttp would), and the swap of the server's ``__class__``
(which needs ``web.Server`` to keep its layout: no ``__slots__``). ``handle_error`` and
``request.writer.output_size`` are public but undocumented; the stop uses
``RequestHandler``'s ``close``, ``data_received``, ``finish_response``, ``_parser``,
``_messages`` and ``_request_in_progress``. tests/test_private_apis.py
checks each against the installed aiohttp, and pyproject.toml keeps aiohttp below its next
minor until that test passes there. The hook, asked for upstream:
https://github.com/aio-libs/aiohttp/issues/3287 (custom handling of what the parser
refuses), and https://github.com/aio-libs/aiohttp/issues/6463 (``on_response_prepare``
is not run for those answers).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web import RequestHandler
from aiohttp.web_request import BaseRequest

from authsvc.errors import AuthsvcError, InvalidRequest, PayloadTooLarge
from authsvc.http.errors import error_response
from authsvc.http.observe import SERVER
from authsvc.telemetry.requestid import HEADER, new_request_id

logger = logging.getLogger(__name__)


class _JsonErrorRequestHandler(RequestHandler):
    # Set by close() when the stop found a request here: its body is still read.
    _draining = False

    def close(self) -> None:
        # The server's pre_shutdown calls it on every connection, then waits (for at most
        # the shutdown bound) for the requests in progress.
        if self._request_in_progress or self._messages:
            self._draining = True
        super().close()

    def data_received(self, data: bytes) -> None:
        if self._draining and self._parser is not None and self.transport is not None:
            # aiohttp reads nothing on a closing connection; the body of the request in
            # progress still goes to its payload. A request pipelined after it is dropped
            # with the connection, as it would be if it came after the close.
            try:
                self._parser.feed_data(data)
            except HttpProcessingError:
                self.force_close()  # a body that cannot be read: nothing to wait for
            return
        super().data_received(data)

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._close or self._force_close:
            resp.force_close()  # this connection closes after the answer: say so
        return await super().finish_response(request, resp, start_time)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # A 5xx is aiohttp's own failure, and with output already sent no answer fits.
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # Neither the bytes nor aiohttp's message (which quotes them) go to the log.
        logger.info("refused a request its parser could not read (%d)", status)
        error: AuthsvcError
        if status == 413:
            error = PayloadTooLarge()
        elif isinstance(exc, ContentEncodingError):  # br or zstd without its library
            error = InvalidRequest("the body's Content-Encoding is not supported")
        else:
            error = InvalidRequest("the request line or its headers could not be read")
        response = error_response(error, oauth=False)
        response.headers[HEADER] = new_request_id()
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    # web.Server.__call__, with our class: aiohttp reads _loop and _kwargs the same way.
    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose connections answer parser errors with contract bodies."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, same state: only the class that makes connection handlers changes.
        server.__class__ = _JsonErrorServer
        return server
