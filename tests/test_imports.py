"""The package's rooms and the rules between them, read from the code's own imports (as
aiohttp's tests/test_imports.py keeps its own): a room imports only the rooms below it,
no module imports itself back through others, and nothing below http/ knows aiohttp."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import authsvc

PACKAGE = Path(authsvc.__file__).parent

# Each room, and the rooms it may import (besides itself). Top-level modules are rooms of
# their own; cli and __main__ stand above all and may import anything.
BASE = {"errors", "clock", "secretfile", "version"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "clock": set(),
    "secretfile": set(),
    "version": set(),
    "tokens": BASE,
    "store": BASE,
    "config": BASE | {"tokens", "store"},
    "domain": BASE | {"tokens", "store", "config"},
    "telemetry": BASE | {"config", "domain"},
    "http": BASE | {"tokens", "store", "config", "domain", "telemetry"},
    "server": BASE | {"tokens", "store", "config", "domain", "telemetry", "http"},
    "client": BASE,
}
TOP = {"cli", "__main__", "__init__"}
# Rooms below http/: plain values in, plain values out, whatever serves them.
NO_AIOHTTP = {"errors", "clock", "secretfile", "version", "tokens", "store", "config",
              "domain", "telemetry"}  # fmt: skip


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(("authsvc", *parts)), path


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def room_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


GRAPH = {name: imports_of(path) for name, path in modules()}
OURS = set(GRAPH)


def edges() -> Iterator[tuple[str, str]]:
    for module, imported in GRAPH.items():
        for target in imported:
            if target in OURS and target != module:
                yield module, target


def test_every_module_lives_in_a_known_room() -> None:
    rooms = {room_of(module) for module in OURS}
    assert rooms <= set(ALLOWED) | TOP, rooms - set(ALLOWED) - TOP


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_the_rooms_below_it(room: str) -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module, target in edges()
        if room_of(module) == room
        and room_of(target) != room
        and room_of(target) not in ALLOWED[room]
    )
    assert wrong == []


def test_the_rooms_form_no_cycle() -> None:
    """ALLOWED itself is layered: a room never reaches back to itself through others."""

    def reaches(room: str, seen: frozenset[str]) -> None:
        for below in ALLOWED[room]:
            assert below not in seen, f"{below} and {room} import each other"
            reaches(below, seen | {below})

    for room in ALLOWED:
        reaches(room, frozenset({room}))


def test_no_module_imports_itself_back() -> None:
    graph: dict[str, set[str]] = {module: set() for module in OURS}
    for module, target in edges():
        graph[module].add(target)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, " -> ".join([*path, module, target])
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("room", sorted(NO_AIOHTTP))
def test_nothing_below_http_imports_aiohttp(room: str) -> None:
    wrong = sorted(
        module
        for module, imported in GRAPH.items()
        if room_of(module) == room and any(name.split(".")[0] == "aiohttp" for name in imported)
    )
    assert wrong == []


# Each case runs an interpreter: a process, so slow (tests/README.md).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("authsvc.config", ("redis", "aiohttp")),  # settings pull no store client in
        ("authsvc.tokens.access", ("redis", "aiohttp", "authsvc.config")),
        ("authsvc.domain.sessions", ("aiohttp",)),
    ],
)
def test_importing_a_room_loads_nothing_it_must_not(module: str, absent: tuple[str, ...]) -> None:
    """What the import rules promise, as the interpreter sees it."""
    probe = f"import sys, {module}; print(' '.join(n for n in {absent!r} if n in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        # The authsvc this test read, wherever it is installed; nothing else first.
        env={**os.environ, "PYTHONSAFEPATH": "1", "PYTHONPATH": str(PACKAGE.parent)},
    )
    assert result.stdout.strip() == ""
