"""Profile the server with py-spy during one scenario: a flame graph and its top frames.

py-spy samples the running server from outside, with ``--subprocesses`` so that every
worker of ``--workers N`` is seen. It pauses the process for each sample (exact stacks, at
a cost), which is why the profiled runs are extra runs, never in the table.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness import BenchError, die_with_parent

FORMATS = {"flamegraph": "svg", "raw": "txt"}  # raw: collapsed stacks, for speedscope too
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
# authsvc's modules whose frames sit under every sample (the process's entry points) are
# left out of the inclusive list: it says what the request handling spends time in.
_AUTHSVC = tuple(f"authsvc/{name}" for name in ("http/", "sessions", "tokens", "store/", "acc"))
# "Class.method (package/module.py:123)"; the first frame names the process.
_IDLE = ("concurrent/futures/thread.py", "threading.py", "queue.py")
_FRAME = re.compile(r"^(?P<function>.+) \((?P<file>[^()]+:\d+)\)$")


def clear(directory: Path, scenarios: Iterable[str]) -> None:
    """Remove the profiles of an earlier run from ``directory``: it holds the latest only."""
    for name in scenarios:
        for suffix in FORMATS.values():
            (directory / f"{name}.{suffix}").unlink(missing_ok=True)


def start_py_spy(pid: int, seconds: int, output: Path, fmt: str) -> subprocess.Popen[bytes]:
    """Sample ``pid`` and its children for ``seconds`` into ``output``.

    Raises:
        BenchError: py-spy is not installed.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy: pip install -c constraints.txt -e '.[bench]'")
    command = [py_spy, "record", "--pid", str(pid), "--subprocesses"]
    command += ["--duration", str(seconds), "--rate", "200"]
    command += ["--format", fmt, "--output", str(output)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent
    )


def wait(spy: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for py-spy to write its file.

    Raises:
        BenchError: py-spy failed (it needs ptrace: root, or CAP_SYS_PTRACE in a container).
    """
    try:
        _, stderr = spy.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.communicate()
        raise BenchError("py-spy did not finish in time") from None
    if spy.returncode != 0:
        raise BenchError(f"py-spy failed: {stderr.decode(errors='replace').strip()[-500:]}")


@dataclass(frozen=True, slots=True)
class Summary:
    """Where the server's sampled time went, each entry (name, percent of samples)."""

    own_by_package: list[tuple[str, float]]  # the leaf frame's package: aiohttp, jwt, ...
    authsvc_inclusive: list[tuple[str, float]]  # authsvc's functions, callees included
    own_top: list[tuple[str, float]]  # single frames by own time


def summarize(raw: Path, count: int = 12) -> Summary:
    """Read a collapsed-stacks file (py-spy --format raw)."""
    own: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        samples = int(match["count"])
        frames = [_FRAME.match(frame) for frame in match["stack"].split(";")]
        named = [frame for frame in frames if frame is not None]
        if not named:
            continue
        leaf = named[-1]
        if leaf["file"].startswith(_IDLE):
            continue  # a pool thread waiting for work (py-spy cannot tell it is idle)
        total += samples
        own[f"{leaf['function']} ({leaf['file']})"] += samples
        packages[_package(leaf["function"], leaf["file"])] += samples
        for name in {f["function"] for f in named if f["file"].startswith(_AUTHSVC)}:
            inclusive[name] += samples
    if not total:
        return Summary([], [], [])

    def shares(counter: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(count)]

    return Summary(shares(packages), shares(inclusive), shares(own))


def _package(function: str, file: str) -> str:
    """``aiohttp/http_writer.py:116`` -> aiohttp, ``hmac.py:61`` -> hmac."""
    if function in ("run_app", "Runner.run"):
        # The loop runs in uvloop's C code below the frame that started it: its own time is
        # the event loop's native work (epoll, socket reads and writes, scheduling).
        return "(uvloop, native)"
    head = file.split(":", 1)[0]
    if head.startswith("<"):
        return "(interpreter)"
    return head.split("/", 1)[0].removesuffix(".py")
