"""The load generator and the process hygiene around it: wrk, a deadline, signals.

``run_wrk`` runs one bounded wrk on loopback with a script of ``bench/wrk/`` and reads back
the one JSON line the script's ``done()`` prints. Every child is started from the main
thread with ``die_with_parent`` (the kernel stops it if the benchmark dies) and a timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"
# Beyond the run itself: wrk's start, the last requests in flight, its report.
WRK_GRACE_S = 60
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The benchmark cannot run, or a run is invalid; the message says why."""


class DeadlineExceeded(BenchError):
    """The whole benchmark ran past its hard time limit."""


def die_with_parent() -> None:  # runs in the child, before exec
    """preexec_fn: the kernel sends the child SIGTERM when the thread that forked it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class WrkRun:
    """One wrk run: throughput, latency and every way a request failed."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]  # wrk's socket/status/timeout counts and the script's "bad"
    first_bad: str = ""  # status and body of the first response the script refused

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def failures(self) -> int:
        return sum(self.errors.values())


def ensure_wrk() -> str:
    """Return wrk's path, installing Debian's package when root with apt-get.

    Raises:
        BenchError: when wrk is missing and cannot be installed here.
    """
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise BenchError(
            "wrk is not installed: install it (Debian/Ubuntu: sudo apt-get install -y wrk; "
            "macOS: brew install wrk) and run the benchmark again"
        )
    print("wrk is not installed; apt-get install -y wrk", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install, update = [apt, "install", "-y", "-qq", "wrk"], [apt, "update", "-qq"]
    for attempt in ([install], [update, install]):  # the package lists may be stale
        for command in attempt:
            subprocess.run(command, env=env, timeout=600, check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise BenchError("apt-get could not install wrk; install it by hand")


def run_wrk(
    wrk: str,
    url: str,
    script: str,
    tokens: str,
    extra: list[str],
    *,
    seconds: int,
    connections: int,
    threads: int,
    timeout_s: int,
) -> WrkRun:
    """Run wrk against ``url`` for ``seconds`` with ``bench/wrk/<script>``.

    The script gets its arguments as bench/wrk/common.lua says: the tokens file ("-" for
    none), wrk's thread count, then ``extra``.

    Raises:
        BenchError: wrk failed or printed no result.
    """
    command = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={seconds}s",
        f"--timeout={timeout_s}s",
        f"--script={WRK_SCRIPTS / script}",
        url,
        "--",
        tokens,
        str(threads),
        *extra,
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=seconds + WRK_GRACE_S,
            preexec_fn=die_with_parent,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ran {WRK_GRACE_S} s past its duration: {url}") from None
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            raw = json.loads(line.removeprefix("WRKJSON "))
            break
    else:
        raise BenchError(f"wrk exited {done.returncode} without a result: {done.stderr.strip()}")
    errors = {
        name: int(raw[name])
        for name in (
            "connect_errors",
            "read_errors",
            "write_errors",
            "status_errors",
            "timeouts",
            "bad",
        )
    }
    return WrkRun(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        errors={name: count for name, count in errors.items() if count},
        first_bad=raw.get("first_bad", ""),
    )


def cpu_seconds(pgids: Sequence[int]) -> float:
    """User and system CPU seconds used so far by the processes of these process groups.

    A server runs in a group of its own (its workers too), so this is its CPU time, the
    steadier measure on a shared machine: what a request costs, whoever else runs.
    """
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) in pgids:  # pgrp; then utime and stime, in clock ticks
                    total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def install_deadline(seconds: int) -> None:
    """Raise DeadlineExceeded after ``seconds``; SIGTERM, SIGHUP and Ctrl-C exit cleanly.

    Either way the exception unwinds through the caller's cleanup, which stops every child.
    """

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise DeadlineExceeded(f"the benchmark ran past its hard limit of {seconds} s")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.alarm(seconds)
