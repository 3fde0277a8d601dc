"""Logging setup: plain text for people, one JSON object a line for log pipelines.

Every line written while a request is handled carries its request id (``request_id``),
taken from a context variable by a filter on the handler, so no caller passes it along.
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.msgspec import MsgspecFormatter

from authsvc.config import LogFormat
from authsvc.requestid import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(request_id)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Put the id of the request being handled on each record (``-`` in text when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object a line: ts, level, logger, pid, message, and the record's extra
    fields (request_id, the access log's method, path, status...)."""
    return MsgspecFormatter(
        ["levelname", "name", "process", "message"],
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="ts",
    )


def text_formatter() -> logging.Formatter:
    return logging.Formatter(TEXT_FORMAT, defaults={"request_id": "-"})


def configure_logging(level: str, log_format: LogFormat) -> None:
    # No format of authsvc shows a record's thread, process name or source line: skip
    # finding them for every record (the logging HOWTO's "Optimization"). The access log
    # writes a record per request, and these lookups were a third of its cost.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else text_formatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
