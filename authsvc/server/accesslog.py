"""The access log: one short line per request, without query strings or headers.

aiohttp's default access logger formats a dozen fields and a timestamp per request, which
cost more than a whole /healthz. This one logs what operators read (peer, method, path,
status, size, duration, and the request id, as every line of the request) and never the
query string, where a client might put a token. A request whose client dropped the
connection before its answer was written is logged with nginx's 499 ("client closed
request"), never with the 500 its unfinished body would have become.

The same values also go on the record as fields of their own, which the JSON format
writes and the text format leaves out: this module defines the line once, and the format
is the handler's (``logs.configure_logging``).

Every value from the client (method, path; the peer's address too) is escaped as both
formats escape every logged value (``logs.escape_controls``): a ``%0A`` or ``%1B`` in a
URL cannot start a line or reach a terminal. The request id needs none: only visible
ASCII ids are taken (``requestid``).

A line per request through ``logging`` (a LogRecord, a filter, a formatter) cost a tenth
of a cached /v1/auth/verify. So while logging is as ``logs.configure_logging`` left it,
that handler's formatter writes the line from the values without a record
(``info_line``), and the handler writes it; otherwise (another handler or formatter, a
filter, a test's capture) it goes through ``logging`` like any other record.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from authsvc.http.observe import CLIENT_CLOSED_REQUEST, client_is_gone
from authsvc.telemetry.logs import (
    LineFormatter,
    LineHandler,
    RequestIdFilter,
    escape_controls,
    root_line_handler,
)

ACCESS_LOGGER = logging.getLogger("authsvc.access")
MESSAGE_FORMAT = '%s "%s %s" %d %d %.1fms'
# remote, method, path, status, bytes, duration in ms
_Values = tuple[str | None, str, str, int, int, float]
_NO_FIELDS: Mapping[str, object] = {}


class AccessLogger(AbstractAccessLogger):
    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._direct = _direct_handler(logger)
        self._pid = os.getpid()

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = request.remote
        values: _Values = (
            None if remote is None else escape_controls(remote),
            escape_controls(request.method),
            escape_controls(request.path),
            # The client left before the answer was written: dropped, not the status the
            # server chose (a 500 for the body that stopped coming, say).
            CLIENT_CLOSED_REQUEST if client_is_gone(request) else response.status,
            response.body_length,
            time * 1000,
        )
        if self._direct is None:
            self.logger.info(MESSAGE_FORMAT, *values, extra=_fields(values))
        else:
            handler, formatter = self._direct
            fields = _fields(values) if formatter.shows_fields else _NO_FIELDS
            message = MESSAGE_FORMAT % values
            handler.write_line(formatter.info_line(self.logger.name, self._pid, message, fields))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _fields(values: _Values) -> dict[str, object]:
    """The values as fields of their own: what log pipelines filter on."""
    remote, method, path, status, size, duration_ms = values
    return {
        "remote": remote,
        "method": method,
        "path": path,
        "status": status,
        "bytes": size,
        "duration_ms": round(duration_ms, 1),
    }


def _direct_handler(logger: logging.Logger) -> tuple[LineHandler, LineFormatter] | None:
    """The root's LineHandler and its formatter when a record of ``logger`` would reach
    them and nothing else, through no filter but the request id's: then its line may skip
    ``logging``."""
    handler = root_line_handler()
    formatter = None if handler is None else handler.line_formatter
    if handler is None or formatter is None or handler.level > logging.INFO:
        return None
    node = logger
    while node.parent is not None:  # every logger on the way up to the root
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    if node.filters or any(not isinstance(f, RequestIdFilter) for f in handler.filters):
        return None
    return handler, formatter
