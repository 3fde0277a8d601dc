"""Logging setup: plain text for people, one JSON object a line for log pipelines.

Every line written while a request is handled carries its request id (``request_id``),
taken from a context variable by a filter on the handler, so no caller passes it along.

The format is chosen once, in ``configure_logging``: the handler's formatter. Each of the
two formatters also writes an INFO line from its values without a LogRecord
(``info_line``), beside ``format`` and the same as it; the access log (``accesslog``) hands
its values to whichever the handler has, and never asks which format it is.

Each line leaves at once in a write of its own, as ``logging.StreamHandler`` writes it,
under the handler's lock (password hashing threads log too). A pipe takes a write of up to
PIPE_BUF bytes (4096) whole, so the lines of several workers on one stderr never
interleave; a longer line (a path of 8 KiB, escaped) is still one write, but past PIPE_BUF
the kernel does not keep a write to a pipe whole, and another worker's line may land inside
it. tests/test_access_log.py holds the handler to both. (The lines of a turn of the event
loop used to leave in one write: bench/micro_linewriter.py measured that saving a
microsecond or so of CPU a line at ten lines a turn, under 1 % of the cheapest request,
and costing more for a line alone in its turn.)

Logged values cannot forge lines: a client's path, user agent, device or request id may
hold a newline, a carriage return or a terminal escape (``%0A``, ``%1B`` in a URL), so
both formats write every value through ``escape_controls``, which turns each character
that is not printable into a visible escape (``\n``, ``\x1b``, ``\u2028``). Tracebacks
(``exc_info``) keep their lines.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

import msgspec
from pythonjsonlogger.msgspec import MsgspecFormatter

from authsvc.config import LogFormat
from authsvc.telemetry.requestid import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(request_id)s: %(message)s"
_encode_json = msgspec.json.Encoder().encode


def escape_controls(text: str) -> str:
    """``text`` with every character that is not printable written as an escape.

    Not printable, as ``str.isprintable`` says: control characters (C0, DEL, C1: newlines,
    carriage returns, ESC and CSI), line and paragraph separators, format characters
    (bidirectional overrides), lone surrogates (undecodable bytes), unassigned code points,
    and every space but the ASCII one. What comes out is printable, so escaping it again
    changes nothing: a value escaped where it is logged and again by the formatter reads
    the same.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    named = _NAMED_ESCAPES.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class LineFormatter(Protocol):
    """What both of authsvc's formatters do besides ``format``."""

    # Whether a record's extra fields show on its line (a caller may skip making them).
    shows_fields: bool

    def info_line(self, logger: str, pid: int, message: str, fields: Mapping[str, object]) -> str:
        """The line ``format`` writes for an INFO record of ``logger`` made now in process
        ``pid`` with this message and these extra fields (escaped already), in the request
        being handled, its newline included."""
        ...


class LineHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that also writes a line formatted already (``write_line``)."""

    @property
    def line_formatter(self) -> LineFormatter | None:
        """Its formatter, when that is one of authsvc's, which write lines without records."""
        formatter = self.formatter
        if isinstance(formatter, _EscapingTextFormatter | _EscapingJsonFormatter):
            return formatter
        return None

    def write_line(self, line: str) -> None:
        """``line`` (its newline included) as ``emit`` writes one: a write of its own."""
        self.acquire()
        try:
            self.stream.write(line)
            self.stream.flush()
        finally:
            self.release()


class RequestIdFilter(logging.Filter):
    """Put the id of the request being handled on each record (``-`` in text when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True


_MULTILINE_FIELDS = frozenset({"exc_info", "stack_info"})


class _EscapingJsonFormatter(MsgspecFormatter):
    """JSON escapes newlines itself, but not DEL, C1 controls (CSI), U+2028 or lone
    surrogates (which msgspec cannot encode): a log viewer prints the decoded value."""

    shows_fields = True

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key, value in log_data.items():
            if isinstance(value, str) and key not in _MULTILINE_FIELDS:
                log_data[key] = escape_controls(value)
        return log_data

    def info_line(self, logger: str, pid: int, message: str, fields: Mapping[str, object]) -> str:
        """As ``format`` writes it: the fields of ``json_formatter``, the extra ones, then the
        request id and the timestamp, as the formatter adds them."""
        line: dict[str, object] = {
            "level": "INFO",
            "logger": logger,
            "pid": pid,
            "message": message,
            **fields,
        }
        request_id = current_request_id.get()
        if request_id is not None:
            line["request_id"] = request_id
        line["ts"] = datetime.datetime.fromtimestamp(time.time(), tz=datetime.UTC)
        return _encode_json(line).decode() + "\n"


class _EscapingTextFormatter(logging.Formatter):
    """The line without what follows it (a traceback), every character printable."""

    shows_fields = False
    _second = -1  # info_line's asctime, made once a second
    _asctime = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def info_line(self, logger: str, pid: int, message: str, fields: Mapping[str, object]) -> str:
        """``TEXT_FORMAT`` with logging's default asctime, as ``format`` fills it (spelt out:
        a mapping costs twice the time; tests/test_access_log.py compares the two lines).
        The text line shows no fields."""
        created = time.time()
        second = int(created)
        if second != self._second:
            self._asctime = time.strftime(self.default_time_format, self.converter(created))
            self._second = second
        millis = int((created - second) * 1000)
        request_id = current_request_id.get() or "-"
        return f"{self._asctime},{millis:03d} INFO {logger}[{pid}] {request_id}: {message}\n"


def json_formatter() -> logging.Formatter:
    """One JSON object a line: ts, level, logger, pid, message, and the record's extra
    fields (request_id, the access log's method, path, status...), each escaped."""
    return _EscapingJsonFormatter(
        ["levelname", "name", "process", "message"],
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        timestamp="ts",
    )


def text_formatter() -> logging.Formatter:
    return _EscapingTextFormatter(TEXT_FORMAT, defaults={"request_id": "-"})


def configure_logging(level: str, log_format: LogFormat) -> None:
    # No format of authsvc shows a record's thread, process name or source line: skip
    # finding them for every record (the logging HOWTO's "Optimization"). The access log
    # writes a record per request, and these lookups were a third of its cost.
    logging.logThreads = False
    logging.logMultiprocessing = False
    # Private by its name, yet the HOWTO's documented switch (no public one exists): set
    # here alone; tests/test_private_apis.py checks that it still skips findCaller.
    logging._srcfile = None
    handler = LineHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else text_formatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def flush_logs() -> None:
    """Write out what the handlers hold: before a process ends without logging.shutdown
    (a worker started by multiprocessing ends with os._exit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def root_line_handler() -> LineHandler | None:
    """The handler ``configure_logging`` installed, while it is the root's only one."""
    handlers = logging.getLogger().handlers
    if len(handlers) == 1 and isinstance(handlers[0], LineHandler):
        return handlers[0]
    return None
