"""The access log's direct lines read exactly as the same line through ``logging`` would;
each line leaves at once in a write of its own, a long one too, and whole on a pipe."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from authsvc.config import LogFormat
from authsvc.server.accesslog import ACCESS_LOGGER, AccessLogger
from authsvc.telemetry.logs import LineHandler, configure_logging, flush_logs
from authsvc.telemetry.requestid import current_request_id


@dataclass
class FakeRequest:
    remote: str | None = "203.0.113.7"
    method: str = "GET"
    path: str = "/v1/auth/verify"
    transport: object = "a live connection"  # None once the client is gone


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


def log_both_ways(
    log_format: LogFormat, capsys: pytest.CaptureFixture[str], request: FakeRequest | None = None
) -> list[str]:
    """One line written directly, then the same values through logging's formatter."""
    configure_logging("info", log_format)
    current_request_id.set("req-1")
    request = request or FakeRequest()
    direct = AccessLogger(ACCESS_LOGGER, "")
    direct.log(request, FakeResponse(), 0.01234)  # type: ignore[arg-type]
    through_logging = AccessLogger(ACCESS_LOGGER, "")
    through_logging._direct = None
    through_logging.log(request, FakeResponse(), 0.01234)  # type: ignore[arg-type]
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


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_client_gone_before_the_answer_is_logged_as_499_in_both_ways(
    capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    """The status the server chose (a 500 for a body that stopped coming) is not logged."""
    gone = FakeRequest(transport=None)
    for line in log_both_ways(log_format, capsys, gone):
        assert ('" 499 17 ' if log_format == "text" else '"status":499') in line, line
        assert '" 200 ' not in line and '"status":200' not in line, line


def test_a_direct_json_line_reads_as_the_formatter_writes_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    direct, formatted = (json.loads(line) for line in log_both_ways("json", capsys))
    assert list(direct) == list(formatted)  # the same fields, in the same order
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", direct.pop("ts"))
    formatted.pop("ts")
    assert direct == formatted
    assert direct["duration_ms"] == 12.3 and direct["request_id"] == "req-1"


# -- values that would forge lines ------------------------------------------------------

FORGED = (
    "2026-12-01 12:00:00,000 WARNING authsvc.domain.sessions[1] -: refresh token replayed after "
    "its grace: session AAAAAAAAAAAAAAAAAAAAAA of user 0123456789abcdef revoked"
)
# (what aiohttp's request.path holds, %-escapes decoded) -> what the line shows
HOSTILE_PATHS = {
    "newline (%0A)": ("/v1/auth/me\n" + FORGED, "/v1/auth/me\\n" + FORGED),
    "carriage return (%0D)": ("/v1/auth/me\r" + FORGED, "/v1/auth/me\\r" + FORGED),
    "escape sequence (%1B)": ("/x\x1b[2J\x1b[31mred", "/x\\x1b[2J\\x1b[31mred"),
    "C1 CSI": ("/x\x9b31m", "/x\\x9b31m"),
    "line separator": ("/x\u2028" + FORGED, "/x\\u2028" + FORGED),
    "file separator": ("/x\x1c" + FORGED, "/x\\x1c" + FORGED),
    "a byte that is not UTF-8": ("/caf\udce9", "/caf\\udce9"),
}


@pytest.mark.parametrize("hostile", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS.keys())
def test_a_path_cannot_start_a_line_or_send_an_escape_in_the_text_format(
    capsys: pytest.CaptureFixture[str], hostile: tuple[str, str]
) -> None:
    path, shown = hostile
    direct, formatted = log_both_ways("text", capsys, FakeRequest(path=path))  # two lines
    timestamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    assert timestamp.sub("", direct) == timestamp.sub("", formatted)
    assert direct.endswith(f'req-1: 203.0.113.7 "GET {shown}" 200 17 12.3ms')
    assert direct.isprintable() and formatted.isprintable()  # no control character at all


@pytest.mark.parametrize("hostile", HOSTILE_PATHS.values(), ids=HOSTILE_PATHS.keys())
def test_a_path_cannot_start_a_line_or_send_an_escape_in_the_json_format(
    capsys: pytest.CaptureFixture[str], hostile: tuple[str, str]
) -> None:
    """JSON escapes newlines itself, but a log viewer prints the decoded values: those are
    escaped too, and the same in the message and the field."""
    path, shown = hostile
    lines = log_both_ways("json", capsys, FakeRequest(path=path))  # two lines
    assert all(line.isprintable() for line in lines)
    direct, formatted = (json.loads(line) for line in lines)
    direct.pop("ts"), formatted.pop("ts")
    assert direct == formatted
    assert direct["path"] == shown
    assert direct["message"] == f'203.0.113.7 "GET {shown}" 200 17 12.3ms'
    assert all(str(value).isprintable() for value in direct.values())


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_any_logged_value_is_escaped_in_both_formats(
    capsys: pytest.CaptureFixture[str], log_format: LogFormat
) -> None:
    """Not the access log alone: a username, a device or a user agent in any message."""
    configure_logging("info", log_format)
    logging.getLogger("authsvc.domain.sessions").warning(
        "login from %s on %s", "evil\r\n" + FORGED, "\x1b]0;owned\x07", extra={"device": "\n"}
    )
    flush_logs()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.isprintable()
    message = json.loads(line)["message"] if log_format == "json" else line
    assert "login from evil\\r\\n2026-12-01" in message
    assert "on \\x1b]0;owned\\x07" in message
    if log_format == "json":
        assert json.loads(line)["device"] == "\\n"


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


class Writes:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_each_line_leaves_at_once_in_a_write_of_its_own() -> None:
    stream = Writes()
    handler = LineHandler(stream)  # type: ignore[call-overload]
    handler.setFormatter(logging.Formatter("%(message)s"))

    async def log_three() -> None:
        for n in range(3):
            handler.emit(logging.makeLogRecord({"msg": f"line {n}"}))
            assert len(stream.writes) == n + 1  # at once, not at the turn's end
        handler.write_line("direct\n")
        assert stream.writes[-1] == "direct\n"

    asyncio.run(log_three())
    assert stream.writes == ["line 0\n", "line 1\n", "line 2\n", "direct\n"]


# -- lines past PIPE_BUF ----------------------------------------------------------------

# aiohttp takes a request line of 8 KiB: its path, two bytes a character, is past PIPE_BUF.
LONG_PATH = "/v1/" + "é" * 8_000


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_line_too_long_to_share_a_write_leaves_alone_and_whole(log_format: LogFormat) -> None:
    """A line past PIPE_BUF leaves at once in a write of its own, after the lines before
    it, whole (a pipe keeps only a write of PIPE_BUF bytes whole; the logs module says what
    that leaves to the kernel)."""
    stream = Writes()
    writes = stream.writes
    configure_logging("info", log_format)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, LineHandler)
    handler.setStream(stream)  # type: ignore[arg-type]

    async def three_requests() -> None:
        access = AccessLogger(ACCESS_LOGGER, "")
        for path in ("/before", LONG_PATH):
            access.log(FakeRequest(path=path), FakeResponse(), 0.01234)  # type: ignore[arg-type]
        assert len(writes) == 2  # the line before it, then the long one, at once
        access.log(FakeRequest(path="/after"), FakeResponse(), 0.01234)  # type: ignore[arg-type]
        assert len(writes) == 3

    asyncio.run(three_requests())
    before, long_line, after = writes
    assert "GET /before" in before and "GET /after" in after
    assert len(long_line.encode()) > select.PIPE_BUF
    assert long_line.count("\n") == 1 and long_line.endswith("\n")
    if log_format == "json":
        assert json.loads(long_line)["path"] == LONG_PATH
    else:
        assert long_line.endswith(f'"GET {LONG_PATH}" 200 17 12.3ms\n')


def read_all(fd: int) -> tuple[threading.Thread, list[bytes]]:
    """A reader of the pipe's read end until every write end is closed (a daemon: a test
    that fails with a write end open cannot hang the run)."""
    chunks: list[bytes] = []

    def read() -> None:
        with open(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, chunks


def lines_read(reader: threading.Thread, chunks: list[bytes]) -> list[str]:
    reader.join(60)
    assert not reader.is_alive(), "a write end of the pipe is still open"
    return b"".join(chunks).decode().splitlines(keepends=True)


def numbered_line(writer: str, number: int, length: int) -> str:
    """A line that says what it must hold: its writer, its number, then its filler."""
    filler = FILLERS[number % len(FILLERS)]
    head = f"{writer} {number} "
    return head + filler * (length - len(head)) + "\n"


FILLERS = "abcdé€😀"  # 1 to 4 bytes in UTF-8


def test_long_lines_of_the_loop_and_a_thread_reach_a_pipe_whole() -> None:
    """The event loop and a password hashing thread write on one pipe, lines past PIPE_BUF
    among short ones: the handler's lock keeps each line whole, none lost."""
    read_end, write_end = os.pipe()
    reader, chunks = read_all(read_end)
    lengths = [10, 20_000, 300, 5_000, 1_000, 1_025, 60, 12_000] * 10
    with open(write_end, "w", buffering=1, encoding="utf-8") as stream:  # as stderr is
        handler = LineHandler(stream)

        def hashing_thread() -> None:
            for number, length in enumerate(lengths):
                handler.write_line(numbered_line("thread", number, length))

        async def loop() -> None:
            for number, length in enumerate(lengths):
                handler.write_line(numbered_line("loop", number, length))
                if number % 3 == 2:
                    await asyncio.sleep(0)

        thread = threading.Thread(target=hashing_thread, daemon=True)
        thread.start()
        asyncio.run(loop())
        thread.join(60)
    expected = [
        numbered_line(who, n, k) for who in ("loop", "thread") for n, k in enumerate(lengths)
    ]
    assert sorted(lines_read(reader, chunks)) == sorted(expected)


WORKER = """
import sys
from authsvc.telemetry.logs import LineHandler

name, count, fillers = sys.argv[1], int(sys.argv[2]), sys.argv[3]
handler = LineHandler(open(1, "w", encoding="utf-8", closefd=False))
for number in range(count):
    head = f"{name} {number} "
    filler = fillers[number % len(fillers)]
    handler.write_line(head + filler * (number % 250 + 10 - len(head)) + "\\n")
"""


@pytest.mark.slow  # two worker processes
def test_the_lines_of_two_workers_on_one_pipe_never_interleave() -> None:
    """Each line a write of its own within PIPE_BUF, which a pipe takes whole: the lines
    of two processes on one stderr never cut into each other."""
    read_end, write_end = os.pipe()
    reader, chunks = read_all(read_end)
    count, names = 3_000, ("w1", "w2")
    try:
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, name, str(count), FILLERS], stdout=write_end
            )
            for name in names
        ]
    finally:
        os.close(write_end)
    assert [worker.wait(60) for worker in workers] == [0, 0]
    lines = lines_read(reader, chunks)
    assert sorted(lines) == sorted(
        numbered_line(name, n, n % 250 + 10) for name in names for n in range(count)
    )
