#!/usr/bin/env python3
"""Benchmark authsvc against the ceiling of its own stack, in one run, with one command.

    python bench/run.py                       # 3 rounds of 5 s + 1M live sessions, ~5 min
    python bench/run.py --quick               # 1 round of 2 s, 100k sessions, ~1.5 min
    python bench/run.py --write-docs          # also docs/performance.md's results and plot
    python bench/run.py --profile --profile-scenario refresh verify_fresh   # flame graphs

It starts a private Redis on a free loopback port, ``authsvc serve`` and the ceiling (a
bare aiohttp handler doing one Redis GET, bench/ceiling.py), and a second authsvc on a
second Redis holding --sessions live sessions; makes users and sessions, and drives wrk
through each scenario of bench/scenarios.py. Each round measures the ceiling and then
every scenario (refresh on both authsvc); the table shows medians over rounds, each
scenario's ratio to the ceiling of its round, and issue 9's targets. Any failed request
invalidates its run: reported loudly, and the exit status is 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import redis
from bulkload import SESSIONS_PER_USER, bulk_load
from fixtures import Fixtures, session_memory
from flamegraph import FORMATS, clear, start_py_spy, summarize, wait
from harness import BenchError, cpu_seconds, ensure_wrk, install_deadline, run_wrk
from machine import describe_machine
from processes import LOOPBACK, HttpServer
from report import BASE, LOADED, Report, Result, markdown, text
from scenarios import BY_NAME, SCENARIOS, Scenario, Workload
from stack import Authsvc, start_authsvc, start_ceiling, start_redis

from authsvc.config import Settings
from authsvc.store import keyspace
from docs import read_json, write_docs, write_json

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"duration": 2, "warmup": 1, "rounds": 1, "sessions": 100_000, "memory_sessions": 2_000}
DEFAULTS = {
    "duration": 5,
    "warmup": 1,
    "rounds": 3,
    "sessions": 1_000_000,
    "memory_sessions": 10_000,
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run: the services, then rounds of every scenario, then profiles.

    Refresh with many live sessions runs on a second authsvc on a second Redis, loaded
    with --sessions sessions, right after refresh on the first in every round: the two
    are measured minutes apart at most, not in separate phases a noisy machine may split.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        wrk: str,
        workdir: Path,
        stack: contextlib.ExitStack,
        runner: asyncio.Runner,
        report: Report,
    ) -> None:
        self.args = args
        self.wrk = wrk
        self.workdir = workdir
        self.stack = stack
        self.runner = runner
        self.report = report
        self.ceiling: HttpServer | None = None  # the first of ceilings, which share its port
        self.ceilings: list[HttpServer] = []

    def run(self) -> None:
        args, report = self.args, self.report
        store = start_redis(self.workdir / "redis", self.stack)
        say(f"Redis {store.url}; memory per session over {args.memory_sessions:,} sessions")
        report.memory = self.runner.run(session_memory(store.url, Settings(), args.memory_sessions))
        self.ceilings = start_ceiling(store, self.workdir, self.stack, workers=args.workers)
        self.ceiling = self.ceilings[0]
        options = {"workers": args.workers, "extra_env": args.server_env}
        base = start_authsvc(store, self.workdir / "base", self.stack, **options)
        say(f"authsvc {base.server.base_url}, ceiling {self.ceiling.base_url}")
        loaded = None
        if args.sessions and "refresh" in args.scenarios:
            loaded = start_authsvc(
                start_redis(self.workdir / "redis-loaded", self.stack),
                self.workdir / "loaded",
                self.stack,
                **options,
            )
            say(f"authsvc with {args.sessions:,} live sessions {loaded.server.base_url}")
        with contextlib.ExitStack() as workloads:
            workload = self.workload(base, workloads)
            self.load(base, args.base_sessions, BASE)
            loaded_workload = None
            if loaded is not None:
                loaded_workload = self.workload(loaded, workloads)
                self.load(loaded, args.sessions, LOADED)
            scenarios = [s for s in SCENARIOS if s.name == "ceiling" or s.name in args.scenarios]
            for round_no in range(1, args.rounds + 1):
                for scenario in scenarios:
                    turns = [(workload, BASE)]
                    if scenario.name == "refresh" and loaded_workload is not None:
                        turns.append((loaded_workload, LOADED))
                        if round_no % 2 == 0:
                            turns.reverse()  # neither phase always runs first
                    for turn, phase in turns:
                        self.measure(turn, scenario, phase, round_no)
            if args.profile:
                clear(Path(args.profile), BY_NAME)
            for name in args.profile_scenario if args.profile else ():
                self.profile(workload, BY_NAME[name], Path(args.profile))

    def workload(self, authsvc: Authsvc, workloads: contextlib.ExitStack) -> Workload:
        """Fixtures on this authsvc's Redis and key ring; a user with a password to log in."""
        password = secrets.token_urlsafe(18)
        user = {"username": "bench-login", "password": password}
        registered = authsvc.server.post("/v1/users", user)
        if registered.status != 201:
            raise BenchError(f"registering the login user answered {registered.status}")
        fixtures = Fixtures(authsvc.settings, authsvc.keys_dir)
        self.runner.run(fixtures.open())
        workloads.callback(self.runner.run, fixtures.close())
        return Workload(
            fixtures,
            self.runner,
            authsvc.server,
            authsvc.workdir / "tokens",
            login=("bench-login", password),
            introspection_client=authsvc.introspection_client,
        )

    def load(self, authsvc: Authsvc, count: int, phase: str) -> None:
        """Start ``count`` background sessions with the login script; count the live ones."""
        store = authsvc.redis
        with redis.Redis.from_url(store.url) as client:
            before = int(client.info("memory")["used_memory"])
            say(f"starting {count:,} sessions with the login script ({phase})")
            started = time.perf_counter()
            bulk_load(LOOPBACK, store.port, authsvc.settings, count)
            seconds = time.perf_counter() - started
            grown = int(client.info("memory")["used_memory"]) - before
            pattern = keyspace.session("*", "*")
            self.report.sessions[phase] = sum(
                1 for _ in client.scan_iter(match=pattern, count=10_000)
            )
        say(f"  {count:,} sessions in {seconds:.1f} s")
        if phase == LOADED:
            self.report.sessions |= {
                "bulk_sessions": count,
                "bulk_seconds": round(seconds, 1),
                "used_memory_per_session": grown / count,
                "sessions_per_user": SESSIONS_PER_USER,
            }

    def measure(self, workload: Workload, scenario: Scenario, phase: str, round_no: int) -> None:
        """A warm-up run, then the measured one; either failing makes the result invalid."""
        args = self.args
        target = self.ceiling if scenario.on_ceiling else workload.server
        assert target is not None
        groups = [s.pid for s in (self.ceilings if scenario.on_ceiling else [workload.server])]
        connections = scenario.connections or args.connections
        problems = []
        runs = [("warm-up: ", args.warmup)] if args.warmup else []
        for label, seconds in [*runs, ("", args.duration)]:
            tokens, extra = workload.script_args(scenario, seconds, connections)
            cpu_before = cpu_seconds(groups)
            run = run_wrk(
                self.wrk,
                target.base_url + scenario.path,
                scenario.script,
                tokens,
                extra,
                seconds=seconds,
                connections=connections,
                threads=min(args.threads, connections),
                timeout_s=scenario.timeout_s,
            )
            server_us = 1e6 * (cpu_seconds(groups) - cpu_before) / max(1, run.requests)
            reason = workload.check(scenario, run)
            if run.errors:
                reason = ", ".join(f"{n} {kind}" for kind, n in run.errors.items())
                reason += f" (first: {run.first_bad})" if run.first_bad else ""
            if reason:
                problems.append(label + reason)
        invalid = "; ".join(problems) or None
        result = Result(
            scenario=scenario.name,
            phase=phase,
            round=round_no,
            rps=run.rps,
            p50_ms=run.p50_ms,
            p99_ms=run.p99_ms,
            requests=run.requests,
            errors=run.errors,
            invalid=invalid,
            server_us=server_us,
        )
        self.report.results.append(result)
        say(
            f"  round {round_no} {scenario.name:<14}{phase:<7}{run.rps:9.1f} req/s  "
            f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  cpu {server_us:5.0f} us/req"
        )
        if invalid:
            say(f"  !!! INVALID RUN: {scenario.name} round {round_no} ({phase}): {invalid}")

    def profile(self, workload: Workload, scenario: Scenario, directory: Path) -> None:
        """Record the server during ``scenario`` (extra runs, not in the table)."""
        target = self.ceiling if scenario.on_ceiling else workload.server
        assert target is not None
        directory.mkdir(parents=True, exist_ok=True)
        seconds = self.args.duration
        connections = scenario.connections or self.args.connections
        for fmt, suffix in FORMATS.items():
            output = directory / f"{scenario.name}.{suffix}"
            say(f"profiling {scenario.name} with py-spy into {output}")
            spy = start_py_spy(target.pid, seconds, output, fmt)
            run_wrk(
                self.wrk,
                target.base_url + scenario.path,
                scenario.script,
                *workload.script_args(scenario, seconds, connections),
                seconds=seconds,
                connections=connections,
                threads=min(self.args.threads, connections),
                timeout_s=scenario.timeout_s,
            )
            wait(spy, seconds + 60)
        summary = summarize(directory / f"{scenario.name}.txt")
        self.report.profile[scenario.name] = asdict(summary)


def hard_limit(args: argparse.Namespace) -> int:
    runs = args.rounds * (len(args.scenarios) + 1 + 2) + 2 * len(args.profile_scenario)
    return 600 + runs * 2 * (args.warmup + args.duration + 30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCENARIOS if s.name != "ceiling"]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-d", "--duration", type=int, help="seconds per measured run (5)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up before each run (1)")
    parser.add_argument("-r", "--rounds", type=int, help="rounds; medians are reported (3)")
    parser.add_argument("-c", "--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("-w", "--workers", type=int, default=1, help="authsvc serve --workers (1)")
    parser.add_argument("-s", "--scenarios", nargs="+", choices=names, default=names)
    parser.add_argument(
        "--sessions", type=int, help="live sessions for the loaded phase (1000000; 0: skip)"
    )
    parser.add_argument("--base-sessions", type=int, default=1_000, help="before it (1000)")
    parser.add_argument("--memory-sessions", type=int, help="sessions MEMORY USAGE is over")
    parser.add_argument("-q", "--quick", action="store_true", help="a short run: " + str(QUICK))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results dir")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="rewrite docs/performance.md's results and docs/performance.png",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        nargs="?",
        const="",
        help="py-spy flame graphs into DIR (OUT/profile), replacing an earlier run's",
    )
    parser.add_argument(
        "--profile-scenario",
        nargs="+",
        choices=["ceiling", *names],
        default=["refresh"],
        help="(refresh); ceiling profiles the ceiling server, for comparison",
    )
    parser.add_argument(
        "--server-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an AUTHSVC_* setting for the server (A/B experiments); repeatable",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    parser.add_argument(
        "--render",
        metavar="JSON",
        help="measure nothing: print and write the results of a JSON this command wrote",
    )
    args = parser.parse_args(argv)
    if args.profile == "":
        args.profile = str(Path(args.out) / "profile")
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not (1 <= args.duration <= 120 and 0 <= args.warmup <= 30 and 1 <= args.rounds <= 20):
        parser.error("--duration 1..120, --warmup 0..30, --rounds 1..20")
    if not (1 <= args.connections <= 1024 and args.threads >= 1 and 1 <= args.workers <= 64):
        parser.error("--connections 1..1024, --threads 1.., --workers 1..64")
    if not 0 <= args.sessions <= 20_000_000 or not 1 <= args.memory_sessions <= 1_000_000:
        parser.error("--sessions 0..20000000, --memory-sessions 1..1000000")
    pairs = [item.partition("=") for item in args.server_env]
    if any(not key.startswith("AUTHSVC_") or not sep for key, sep, _ in pairs):
        parser.error("--server-env takes AUTHSVC_NAME=VALUE")
    args.server_env = {key: value for key, _, value in pairs}
    args.command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return publish(read_json(Path(args.render)), args)
    try:
        wrk = ensure_wrk()
    except BenchError as exc:
        say(f"bench: {exc}")
        return 2
    install_deadline(hard_limit(args))
    config = {
        key: getattr(args, key)
        for key in ("command", "duration", "warmup", "rounds", "connections", "threads")
    }
    config |= {
        key: getattr(args, key)
        for key in ("workers", "sessions", "base_sessions", "memory_sessions", "server_env")
    }
    config["profile_scenarios"] = args.profile_scenario if args.profile else []
    report = Report(config=config, machine=describe_machine())
    workdir = Path(tempfile.mkdtemp(prefix="authsvc-bench-"))
    try:
        with contextlib.ExitStack() as stack, asyncio.Runner() as runner:
            Bench(args, wrk, workdir, stack, runner, report).run()
    except (BenchError, AssertionError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        say(f"bench: {exc}")
        for log in sorted(workdir.glob("*/authsvc.log")):  # its last lines but the access log
            lines = [line for line in log.read_text().splitlines() if ".access[" not in line]
            say(f"{log}, last lines:\n" + "\n".join(lines[-20:]))
        return 1
    finally:
        signal.alarm(0)
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.machine["load_after"] = round(os.getloadavg()[0], 2)
    return publish(report, args)


def publish(report: Report, args: argparse.Namespace) -> int:
    """Print the report, write it to --out and, when asked and valid, to docs/."""
    print(text(report))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "results.json")
    (out / "results.md").write_text(markdown(report))
    say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    if report.invalid:
        say(f"!!! {len(report.invalid)} INVALID RUN(S): requests failed; see above. Not valid.")
        return 1
    if args.write_docs:
        write_docs(report, ROOT / "docs")
        say("wrote docs/performance.md and docs/performance.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
