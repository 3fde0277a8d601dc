"""The README's walkthrough, run as a newcomer runs it: its shell block, against a real
``authsvc serve`` on the embedded store, printing what the README says it prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from servers import Servers

ROOT = Path(__file__).resolve().parent.parent
README_BASE = "B=http://127.0.0.1:8080"


def walkthrough() -> tuple[str, list[str]]:
    """The walkthrough's ``sh`` block and the lines of the block that says what it prints."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Walkthrough") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.DOTALL)
    script = next(body for kind, body in blocks if kind == "sh")
    printed = next(body for kind, body in blocks if kind == "")
    return script, printed.strip().splitlines()


def shape(line: str) -> tuple[Any, ...]:
    """What must match between the README and the real output: the JSON keys (and error
    code) of each line, and the status at its end."""
    body, _, status = line.rpartition(" ") if line.endswith((" 401", " 400")) else (line, "", "")
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        return ("text", body, status)
    if isinstance(document, dict) and "sessions" in document:
        return ("sessions", tuple(sorted(document["sessions"][0])), status)
    if isinstance(document, dict):
        return ("json", tuple(sorted(document)), document.get("error"), status)
    return ("json", document, status)


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="needs curl and jq")
def test_the_readme_walkthrough_prints_what_it_promises(servers: Servers, tmp_path: Path) -> None:
    script, promised = walkthrough()
    assert README_BASE in script
    server = servers.start(tmp_path / "serve.log", {"AUTHSVC_DATA_DIR": str(tmp_path / "data")})
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace(README_BASE, f"B={server.base_url}")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip().splitlines()
    assert [shape(line) for line in printed] == [shape(line) for line in promised]
    assert printed[-3:-2] == ["204"]
    assert printed[-2].endswith(" 401") and '"invalid_grant"' in printed[-2]
    assert printed[-1].endswith(" 401") and '"invalid_token"' in printed[-1]
