"""Logging setup: plain text for people, one JSON object a line for log pipelines.

Every line written while a request is handled carries its request id (``request_id``),
taken from a context variable by a filter on the handler, so no caller passes it along.

Lines go out through a ``LineWriter``: what one turn of the event loop logs leaves in one
write, rather than a write (a system call) per line; the access log (``accesslog``) also
writes its lines there directly, formatted as the handler's formatter would.

Logged values cannot forge lines: a client's path, user agent, device or request id may
hold a newline, a carriage return or a terminal escape (``%0A``, ``%1B`` in a URL), so
both formats write every value through ``escape_controls``, which turns each character
that is not printable into a visible escape (``\n``, ``\x1b``, ``\u2028``). Tracebacks
(``exc_info``) keep their lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any, TextIO

from pythonjsonlogger.msgspec import MsgspecFormatter

from authsvc.config import LogFormat
from authsvc.requestid import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(request_id)s: %(message)s"
# Characters per write at most: at most 4 bytes each in UTF-8, so every write fits in
# PIPE_BUF (4096), which a pipe takes whole: the lines of several workers never interleave.
BATCH_CHARS = 1024


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


class LineWriter:
    """Whole lines to a stream; those of one event-loop turn go out in one write."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._lock = threading.Lock()  # password hashing threads log too

    def write(self, line: str) -> None:
        with self._lock:
            if self._size + len(line) > BATCH_CHARS:
                self._write_out()
            self._lines.append(line)
            self._size += len(line)
            if len(self._lines) > 1:
                return  # a flush is due already
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop in this thread: nothing would flush it later
                self._write_out()
                return
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._write_out()

    def _write_out(self) -> None:
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            self.stream.write(text)
            self.stream.flush()


class LineWriterHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines go through a ``LineWriter``."""

    def __init__(self, writer: LineWriter, log_format: LogFormat) -> None:
        super().__init__(writer.stream)
        self.writer = writer
        self.log_format = log_format

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.writer.flush()


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

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        for key, value in log_data.items():
            if isinstance(value, str) and key not in _MULTILINE_FIELDS:
                log_data[key] = escape_controls(value)
        return log_data


class _EscapingTextFormatter(logging.Formatter):
    """The line without what follows it (a traceback), every character printable."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


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
    handler = LineWriterHandler(LineWriter(sys.stderr), log_format)
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


def root_line_writer() -> LineWriterHandler | None:
    """The handler ``configure_logging`` installed, while it is the root's only one."""
    handlers = logging.getLogger().handlers
    if len(handlers) == 1 and isinstance(handlers[0], LineWriterHandler):
        return handlers[0]
    return None
