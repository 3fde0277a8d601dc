"""The access log: one short line per request, without query strings or headers.

aiohttp's default access logger formats a dozen fields and a timestamp per request, which
cost more than a whole /healthz. This one logs what operators read (peer, method, path,
status, size, duration, and the request id, as every line of the request) and never the
query string, where a client might put a token. For the JSON format the same values also
go on the line as fields of their own.

Every value from the client (method, path; the peer's address too) is escaped as both
formats escape every logged value (``logs.escape_controls``): a ``%0A`` or ``%1B`` in a
URL cannot start a line or reach a terminal. The request id needs none: only visible
ASCII ids are taken (``requestid``).

A line per request through ``logging`` (a LogRecord, a filter, a formatter) cost a tenth
of a cached /v1/auth/verify. So while logging is as ``logs.configure_logging`` left it,
the line is formatted here, as that handler's formatter would write it, and handed to its
``LineWriter``; otherwise (another handler, a filter, a test's capture) it goes through
``logging`` like any other record.
"""

from __future__ import annotations

import datetime
import logging
import os
import time

import msgspec
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from authsvc.telemetry.logs import (
    LineWriterHandler,
    RequestIdFilter,
    escape_controls,
    root_line_writer,
)
from authsvc.telemetry.requestid import current_request_id

ACCESS_LOGGER = logging.getLogger("authsvc.access")
MESSAGE_FORMAT = '%s "%s %s" %d %d %.1fms'
_encode_json = msgspec.json.Encoder().encode
# remote, method, path, status, bytes, duration in ms
_Values = tuple[str | None, str, str, int, int, float]


class AccessLogger(AbstractAccessLogger):
    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._direct = _direct_handler(logger)
        self._pid = os.getpid()
        self._second = -1
        self._asctime = ""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        remote = request.remote
        values: _Values = (
            None if remote is None else escape_controls(remote),
            escape_controls(request.method),
            escape_controls(request.path),
            response.status,
            response.body_length,
            time * 1000,
        )
        if self._direct is None:
            self.logger.info(MESSAGE_FORMAT, *values, extra=self._fields(values))
        elif self._direct.log_format == "json":
            self._direct.writer.write(self._json_line(values))
        else:
            self._direct.writer.write(self._text_line(values))

    def _fields(self, values: _Values) -> dict[str, object] | None:
        return None

    def _text_line(self, values: _Values) -> str:
        """As ``logs.TEXT_FORMAT`` with logging's default asctime, from the same values."""
        created = time.time()
        second = int(created)
        if second != self._second:
            self._second = second
            self._asctime = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        millis = int((created - second) * 1000)
        request_id = current_request_id.get() or "-"
        return (
            f"{self._asctime},{millis:03d} INFO {self.logger.name}[{self._pid}] "
            f"{request_id}: {MESSAGE_FORMAT % values}\n"
        )

    def _json_line(self, values: _Values) -> str:
        """As ``logs.json_formatter`` writes a record with these values as extra fields."""
        line: dict[str, object] = {
            "level": "INFO",
            "logger": self.logger.name,
            "pid": self._pid,
            "message": MESSAGE_FORMAT % values,
            **_json_fields(values),
        }
        request_id = current_request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        line["ts"] = datetime.datetime.fromtimestamp(time.time(), tz=datetime.UTC)
        return _encode_json(line).decode() + "\n"

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class JsonAccessLogger(AccessLogger):
    """The same line, its values also as fields: what log pipelines filter on."""

    def _fields(self, values: _Values) -> dict[str, object] | None:
        return _json_fields(values)


def _json_fields(values: _Values) -> dict[str, object]:
    remote, method, path, status, size, duration_ms = values
    return {
        "remote": remote,
        "method": method,
        "path": path,
        "status": status,
        "bytes": size,
        "duration_ms": round(duration_ms, 1),
    }


def _direct_handler(logger: logging.Logger) -> LineWriterHandler | None:
    """The root's LineWriterHandler when a record of ``logger`` would reach it and nothing
    else, through no filter but the request id's: then its line may skip ``logging``."""
    handler = root_line_writer()
    if handler is None or handler.level > logging.INFO:
        return None
    node = logger
    while node.parent is not None:  # every logger on the way up to the root
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    if node.filters or any(not isinstance(f, RequestIdFilter) for f in handler.filters):
        return None
    return handler
