"""What the results were measured on: cores, CPU, versions, the commit, the load."""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

from processes import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("aiohttp", "redis", "hiredis", "uvloop", "msgspec", "PyJWT", "cryptography")


def describe_machine() -> dict[str, object]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)

    def git(*command: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *command], capture_output=True, timeout=10)
        return done.stdout.decode().strip()

    # Changes under docs/ (a previous run's results) do not make the measured code dirty.
    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--", "authsvc", "bench", "tests", "pyproject.toml"):
        commit += "-dirty"
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": f"{Path(redis_server_binary()).name} {_version(redis_version)}",
        "wrk": f"wrk {_version(wrk_version.stdout + wrk_version.stderr)}",
        "packages": {name: importlib.metadata.version(name) for name in PACKAGES},
        "commit": commit or "unknown",
        "load_before": round(os.getloadavg()[0], 2),
    }


def _version(text: str) -> str:
    found = re.search(r"\d+\.\d+(\.\d+)?", text)
    return found.group() if found else "?"
