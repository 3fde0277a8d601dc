"""The access log's direct lines read exactly as the same line through ``logging`` would."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authsvc.accesslog import ACCESS_LOGGER, AccessLogger, JsonAccessLogger
from authsvc.config import LogFormat
from authsvc.logs import LineWriter, LineWriterHandler, configure_logging, flush_logs
from authsvc.requestid import current_request_id


@dataclass
class FakeRequest:
    remote: str | None = "203.0.113.7"
    method: str = "GET"
    path: str = "/v1/auth/verify"


@dataclass
class FakeResponse:
    status: int = 200
    body_length: int = 17


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    request_id = current_request_id.set(None)
    yield
    current_request_id.reset(request_id)
    root.handlers[:] = handlers
    root.setLevel(level)


def log_both_ways(log_format: LogFormat, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """One line written directly, then the same values through logging's formatter."""
    configure_logging("info", log_format)
    current_request_id.set("req-1")
    cls = JsonAccessLogger if log_format == "json" else AccessLogger
    direct = cls(ACCESS_LOGGER, "")
    direct.log(FakeRequest(), FakeResponse(), 0.01234)  # type: ignore[arg-type]
    through_logging = cls(ACCESS_LOGGER, "")
    through_logging._direct = None
    through_logging.log(FakeRequest(), FakeResponse(), 0.01234)  # type: ignore[arg-type]
    flush_logs()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    return lines


def test_a_direct_text_line_reads_as_the_formatter_writes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    direct, formatted = log_both_ways("text", capsys)
    timestamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    assert timestamp.match(direct) and timestamp.match(formatted)
    assert timestamp.sub("", direct) == timestamp.sub("", formatted)
    assert direct.endswith('req-1: 203.0.113.7 "GET /v1/auth/verify" 200 17 12.3ms')


def test_a_direct_json_line_reads_as_the_formatter_writes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    direct, formatted = (json.loads(line) for line in log_both_ways("json", capsys))
    assert list(direct) == list(formatted)  # the same fields, in the same order
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", direct.pop("ts"))
    formatted.pop("ts")
    assert direct == formatted
    assert direct["duration_ms"] == 12.3 and direct["request_id"] == "req-1"


def test_another_handler_on_the_root_takes_the_lines_through_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("info", "text")
    logging.getLogger().addHandler(caplog.handler)  # the root has two handlers now
    with caplog.at_level(logging.INFO, logger="authsvc.access"):
        AccessLogger(ACCESS_LOGGER, "").log(FakeRequest(), FakeResponse(), 0.002)  # type: ignore[arg-type]
    assert [r.getMessage() for r in caplog.records] == [
        '203.0.113.7 "GET /v1/auth/verify" 200 17 2.0ms'
    ]


def test_the_lines_of_one_loop_turn_leave_in_one_write() -> None:
    writes: list[str] = []

    class Stream:
        def write(self, text: str) -> None:
            writes.append(text)

        def flush(self) -> None:
            pass

    writer = LineWriter(Stream())  # type: ignore[arg-type]
    handler = LineWriterHandler(writer, "text")
    handler.setFormatter(logging.Formatter("%(message)s"))

    async def log_three() -> None:
        for n in range(3):
            handler.emit(logging.makeLogRecord({"msg": f"line {n}"}))
        assert writes == []  # not before the turn ends

    async def main() -> None:
        await log_three()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert writes == ["line 0\nline 1\nline 2\n"]
    handler.emit(logging.makeLogRecord({"msg": "no loop"}))  # outside a loop: at once
    assert writes[-1] == "no loop\n"
