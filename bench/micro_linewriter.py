#!/usr/bin/env python3
"""Log lines a second into a pipe read by another process: a write each, or a turn's in one.

    python bench/micro_linewriter.py                  # 200,000 lines, best of 5 runs
    python bench/micro_linewriter.py --per-turn 1 8 --lines 50000

The stream is what a worker's stderr is under a process manager: a line-buffered text
stream on a pipe, which a reader process drains. Each run writes ``--lines`` access-log
sized lines from an event loop (uvloop when installed, as ``authsvc serve`` runs), so many
lines per turn of the loop (``--per-turn``: how many requests end in one turn); then either
``plain``, a write and a flush per line, as authsvc writes them (``telemetry.logs.LineHandler``,
the access log's ``write_line``), or ``batched``, a turn's lines in one write up to
BATCH_CHARS (``TurnBatcher`` below: authsvc's ``LineWriter`` until these numbers folded it
back). Both spend the same turns; only the writes differ. Nothing but the writer is measured:
formatting a line costs the same either way. Besides lines a second (wall time, the best
run), it prints the CPU time per line of the writer and of the reader (over every run): a
write wakes the reader, whose CPU a log collector pays on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from authsvc.telemetry.logs import LineHandler

# Characters a batched write at most: at most 4 bytes each in UTF-8, within PIPE_BUF.
BATCH_CHARS = 1024

# About an access line of authsvc's text format.
LINE = (
    "2026-12-01 12:00:00,123 INFO authsvc.access[12345] 8f3c2a9d41b07e65: "
    '203.0.113.7 "GET /v1/auth/verify" 200 17 0.4ms\n'
)
READER = "import os\nwhile os.read(0, 1 << 16):\n    pass\n"


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def write_lines(write: Callable[[str], None], lines: int, per_turn: int) -> None:
    for number in range(lines):
        write(LINE)
        if number % per_turn == per_turn - 1:
            await asyncio.sleep(0)  # the turn ends: TurnBatcher's flush runs
    await asyncio.sleep(0)


class TurnBatcher:
    """Whole lines to a stream; those of one event-loop turn go out in one write."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._size = 0
        self._lock = threading.Lock()  # as authsvc's: password hashing threads log too

    def write(self, line: str) -> None:
        with self._lock:
            if self._size + len(line) > BATCH_CHARS:
                self._write_out()
            self._lines.append(line)
            self._size += len(line)
            if len(self._lines) > 1:
                return  # a flush is due already
        asyncio.get_running_loop().call_soon(self.flush)

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


@dataclass(frozen=True, slots=True)
class Measure:
    lines_per_second: float  # the best run's
    writer_us: float  # CPU per line, over every run
    reader_us: float


def measure(kind: str, per_turn: int, lines: int, repeat: int) -> Measure:
    reader = subprocess.Popen([sys.executable, "-c", READER], stdin=subprocess.PIPE)
    assert reader.stdin is not None
    stream = open(  # noqa: SIM115 - closed below, before the reader is waited for
        reader.stdin.fileno(), "w", buffering=1, encoding="utf-8", closefd=False
    )
    write = TurnBatcher(stream).write if kind == "batched" else LineHandler(stream).write_line
    factory = event_loop_factory()
    cpu = time.process_time()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            best = min(
                timeit.repeat(
                    lambda: runner.run(write_lines(write, lines, per_turn)),
                    number=1,
                    repeat=repeat,
                )
            )
        cpu = time.process_time() - cpu
    finally:
        stream.close()
        reader.stdin.close()
        _, status, usage = os.wait4(reader.pid, 0)
        reader.returncode = os.waitstatus_to_exitcode(status)
    total = lines * repeat
    reader_cpu = usage.ru_utime + usage.ru_stime
    return Measure(lines / best, 1e6 * cpu / total, 1e6 * reader_cpu / total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines per run (200000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts (5)")
    parser.add_argument(
        "--per-turn", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64], help="lines a turn"
    )
    args = parser.parse_args(argv)
    print(
        f"{args.lines:,} lines of {len(LINE)} characters, best of {args.repeat}; "
        f"BATCH_CHARS {BATCH_CHARS}; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(
        "lines/turn |      plain lines/s  CPU us/line writer reader "
        "|    batched lines/s  CPU us/line writer reader | batched/plain"
    )
    for per_turn in args.per_turn:
        row = [measure(kind, per_turn, args.lines, args.repeat) for kind in ("plain", "batched")]
        cells = [
            f"{m.lines_per_second:>19,.0f} {m.writer_us:>18.2f} {m.reader_us:>6.2f}" for m in row
        ]
        ratio = row[1].lines_per_second / row[0].lines_per_second
        print(f"{per_turn:>10} | {cells[0]} | {cells[1]} | {ratio:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
