"""The soak (scripts/soak, bench/soak.py): its checker on made-up records, and its
60-second variant for real.

The checker's tests feed it records of each kind of failure it must find, and one clean
record set it must pass: a soak whose checker could not fail would prove nothing. The
60-second run needs nginx (./scripts/test installs it as root) and starts Redis, two
authsvc instances of two workers and nginx of its own; it is marked slow, and runs once,
on the checkout (with AUTHSVC_TEST_AUTHSVC, on that install).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import authsvc_command, child_env

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import soak  # noqa: E402  (bench/ is no package: its modules import each other by name)

T = 1_000_000.0  # made-up times, in seconds


def row(kind: str, status: int, t0: float, **fields: Any) -> dict[str, Any]:
    base = {
        "kind": kind, "status": status, "t0": T + t0, "t1": T + t0 + 0.01, "via": "nginx",
        "method": "POST", "path": "/v1/auth/" + kind, "sid": "s1", "uid": "u1", "rt": "",
        "tag": "",
    }  # fmt: skip
    return base | fields


CLEAN = [
    row("login", 200, 0, rt_out="r1"),
    row("refresh", 200, 1, rt="r1", rt_out="r2"),
    row("refresh", 200, 1.1, rt="r1", rt_out="r2", tag="grace_retry"),
    row("me", 200, 2),
    row("logout", 204, 3),
    row("me", 401, 4, tag="probe_after_end", via="a"),
    row("me", 0, 4.1, tag="probe_after_end", via="b"),  # rolled just then: no answer
    row("refresh", 401, 5, rt="r2", tag="after_end"),
]
REDIS_RESTART = {"kind": "redis_restart", "start": T + 10, "end": T + 12}
WORKER_KILL = {"kind": "worker_kill", "start": T + 20, "end": T + 21}
NGINX_RELOAD = {"kind": "nginx_reload", "start": T + 30, "end": T + 30.2}


def failures(rows: list[dict[str, Any]], faults: list[dict[str, Any]] | None = None) -> set[str]:
    return set(soak.check(rows, faults or [REDIS_RESTART, WORKER_KILL, NGINX_RELOAD]).failures)


def test_the_checker_passes_a_clean_run_with_its_windows() -> None:
    in_windows = [
        row("refresh", 503, 11, rt="r9", error="store_unavailable"),
        row("login", 503, 16.5),  # until REDIS_WINDOW_S after Redis is back
        row("login", 502, 19.995),  # in flight at the worker's SIGKILL
        row("login", 502, 20.05),  # sent as the kernel tore the worker down
        # sent as nginx reloaded: the idle keep-alive connection closed under it
        row("refresh", 0, 30.1, rt="r8", error="ServerDisconnectedError"),
    ]
    assert failures(CLEAN + in_windows) == set()


@pytest.mark.parametrize(
    "bad",
    [
        row("login", 503, 30),  # no fault then
        row("login", 502, 11),  # Redis restarts give 503, not 502
        row("login", 502, 20.5),  # sent after the kill: another worker should have had it
        row("login", 500, 11),
        row("login", 0, 40, error="ClientConnectorError"),  # nginx itself did not answer
        row("login", 502, 30.1),  # a reload closes connections; it answers nothing 502
        row("login", 0, 29.9, error="ServerDisconnectedError"),  # sent before the reload
    ],
    ids=[
        "503-outside",
        "502-in-a-redis-window",
        "502-after-the-kill",
        "500",
        "no-answer",
        "502-at-a-reload",
        "no-answer-before-a-reload",
    ],
)
def test_the_checker_finds_a_5xx_outside_the_windows(bad: dict[str, Any]) -> None:
    assert failures([*CLEAN, bad]) == {soak.CHECKS[0]}


@pytest.mark.parametrize("via", ["nginx", "a", "b"])
def test_the_checker_finds_an_access_token_accepted_after_its_session_ended(via: str) -> None:
    late = row("verify", 200, 4.2, tag="probe_after_end", via=via, method="GET")
    assert failures([*CLEAN, late]) == {soak.CHECKS[1]}


def test_the_checker_ends_every_session_of_a_logout_all_that_logged_in_before_it() -> None:
    rows = [
        row("login", 200, 0, sid="s1"),
        row("login", 200, 0.5, sid="s2"),
        row("logout_all", 204, 1, sid="s1"),
        row("login", 200, 1.005, sid="s3"),  # answered after the logout-all was sent
        row("me", 200, 2, sid="s3"),
    ]
    assert failures(rows) == set()
    assert failures([*rows, row("me", 200, 2, sid="s2", via="b")]) == {soak.CHECKS[1]}


def test_the_checker_finds_two_chains_and_a_grace_retry_without_the_same_successor() -> None:
    forked = row("refresh", 200, 1.1, rt="r1", rt_out="r3", tag="grace_retry")
    assert failures([*CLEAN, forked]) == {soak.CHECKS[2]}
    refused = row("refresh", 401, 1.1, rt="r1", tag="grace_retry", error="invalid_grant")
    assert failures([*CLEAN, refused]) == {soak.CHECKS[4]}


def test_the_checker_finds_a_replay_that_did_not_end_its_session() -> None:
    rows = [
        row("login", 200, 0),
        row("refresh", 200, 1, rt="r1", rt_out="r2"),
        row("refresh", 401, 6, rt="r1", tag="replay", error="invalid_grant"),
        row("me", 401, 7, tag="probe_after_end"),
        row("refresh", 401, 8, rt="r2", tag="after_end"),
    ]
    assert failures(rows) == set()
    accepted = [*rows[:2], row("refresh", 200, 6, rt="r1", rt_out="r2", tag="replay")]
    assert failures(accepted) == {soak.CHECKS[3]}
    survived = [*rows[:-1], row("refresh", 200, 8, rt="r2", rt_out="r3", tag="after_end")]
    assert failures(survived) == {soak.CHECKS[3]}


def test_the_memory_check_asserts_its_bounds_only_when_told() -> None:
    hour = 3600.0
    growing = [
        {"t": T + i * hour / 10, "redis": i * (1 << 20), "a": 100 << 20, "a_incarnation": 1}
        for i in range(11)
    ]  # Redis: +10 MiB/h
    verdicts = soak.Verdicts()
    slopes = soak.check_memory(growing, T, True, verdicts)
    assert slopes["redis"] == pytest.approx(10.0)
    assert slopes["a"] == pytest.approx(0.0)
    assert set(verdicts.failures) == {"memory not flat"}
    printed_only = soak.Verdicts()
    soak.check_memory(growing, T, False, printed_only)
    assert not printed_only.failures


def nginx_or_skip() -> None:
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx not installed: apt-get install nginx (./scripts/test does as root)")


@pytest.mark.slow
def test_the_60_second_soak_passes(tmp_path: Path) -> None:
    nginx_or_skip()
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", "60",
            "--workdir", str(tmp_path), "--authsvc", " ".join(authsvc_command()),
        ],
        capture_output=True, text=True, timeout=300, env=child_env(__import__("os").environ),
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "verdict: PASS" in output
    # It did what it says: traffic of every kind, and every fault.
    for kind in ("login", "refresh", "me", "verify", "logout", "logout_all", "admin_revoke_all"):
        assert f" {kind} " in output.split("by kind:")[1].split("\n")[0] + " ", kind
    assert "faults: redis_restart x1" in output
    assert "faults: worker_kill x1" in output
    assert "faults: roll x2" in output
    assert (tmp_path / "requests.jsonl").stat().st_size > 0
