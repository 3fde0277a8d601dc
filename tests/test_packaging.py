"""What users install: the wheel holds every file the package reads, the Dockerfile's install
step makes an authsvc that serves, and a run on the built wheel tests the wheel.

Every other test runs on the editable checkout, which reads files the wheel may lack: a Lua
library missing from package data once passed the whole suite and broke every install.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from servers import TEST_PASSWORD, Server, authsvc_command, child_env

import authsvc

# Builds the wheel and a venv from it: a minute of pip.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 600


def tracked_files() -> list[str]:
    """The files a clone holds (git's list), or every file of an unpacked sdist."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        return [name for name in listed.decode().split("\0") if name]
    return [
        path.relative_to(ROOT).as_posix()
        for path in ROOT.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and ".venv" not in path.parts
    ]


def copy_of_the_clone(destination: Path) -> Path:
    """The tracked files alone, so nothing left in the working tree leaks into a build."""
    for name in tracked_files():
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return destination


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = copy_of_the_clone(tmp_path_factory.mktemp("clone"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=PIP_TIMEOUT,
    )
    (built,) = out.glob("authsvc-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_every_file_of_the_package(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    package_files = [name for name in tracked_files() if name.startswith("authsvc/")]
    assert "authsvc/store/lua/lib/bucket.lua" in package_files  # the one that went missing
    assert [name for name in package_files if name not in names] == []
    assert [name for name in names if "__pycache__" in name or name.endswith(".pyc")] == []


def test_the_wheel_declares_the_console_script(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "authsvc = authsvc.cli:main" in wheel.read(entry_points).decode()


def dockerfile_install_step() -> tuple[list[tuple[list[str], str]], list[str]]:
    """The Dockerfile's COPY lines (sources, destination) and its ``pip install`` command."""
    copies: list[tuple[list[str], str]] = []
    install: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if words[:1] == ["COPY"]:
            copies.append((words[1:-1], words[-1]))
        elif words[:1] == ["RUN"] and "pip" in words:
            command = " ".join(words[1:]).split("&&")[0]
            install = shlex.split(command)
    assert copies and install[:2] == ["pip", "install"], "the Dockerfile changed shape"
    return copies, install


def test_the_dockerfiles_install_step_makes_an_authsvc_that_serves(tmp_path: Path) -> None:
    """The image's ``pip install`` line, run in a fresh venv on exactly what it copies in
    (no image can be built here), gives an ``authsvc`` that serves from its embedded store."""
    copies, install = dockerfile_install_step()
    app = tmp_path / "app"  # WORKDIR /app
    app.mkdir()
    for sources, destination in copies:
        for source in sources:
            target = app / destination / (Path(source).name if destination.endswith("/") else "")
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", *install],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    shutil.rmtree(app)  # the image keeps /app, but nothing may be read from it

    keys = tmp_path / "keys"
    executable = str(venv / "bin" / "authsvc")
    subprocess.run([executable, "keys", "generate", "--dir", str(keys)], check=True, timeout=60)
    server = Server(
        tmp_path / "serve.log",
        {"AUTHSVC_KEYS_DIR": str(keys), "AUTHSVC_DATA_DIR": str(tmp_path / "data")},
        command=[executable, "serve"],
    )
    try:
        server.start()
        assert server.register("alice").status == 201
        pair = server.login("alice", TEST_PASSWORD)
        me = server.request("GET", "/v1/auth/me", token=pair["access_token"])
        assert me.status == 200, me.body
        assert server.refresh(pair["refresh_token"]).status == 200
        assert server.terminate() == 0, server.log()
    finally:
        server.kill()


@pytest.mark.process
def test_a_run_on_an_install_imports_the_installed_package() -> None:
    """With AUTHSVC_TEST_AUTHSVC (scripts/test-installed), neither this process nor the
    authsvc it starts reads the checkout."""
    if not os.environ.get("AUTHSVC_TEST_AUTHSVC"):
        pytest.skip("the editable run: scripts/test-installed runs this on the built wheel")
    assert not Path(authsvc.__file__).resolve().is_relative_to(ROOT)
    started = subprocess.run(
        [sys.executable, "-c", "import authsvc; print(authsvc.__file__)"],
        cwd=ROOT,
        env=child_env(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert not Path(started.stdout.strip()).resolve().is_relative_to(ROOT)
    assert Path(authsvc_command()[0]).exists()
