"""Results for people: medians per scenario, ratios to the ceiling, targets, text and markdown.

Each round measures the ceiling and then every scenario; a scenario's ratio in a round is
its req/s over the ceiling's req/s of that round and phase, and the table shows the
median over rounds of each column. The targets are issue 9's, all ratios.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from scenarios import BY_NAME

# Two authsvc on two Redis servers, measured in turn in each round: few live sessions in
# Redis (base), and --sessions of them (loaded).
BASE, LOADED = "base", "loaded"
RATIO_TARGETS = {"refresh": 0.65, "verify": 0.85, "verify_fresh": 0.60}
TAIL_TARGET = 2.0  # p99 <= 2 x p50
LOADED_TARGET = 0.90  # refresh with --sessions live sessions within 10 % of few
PROFILE_PARTS = (
    ("own time by package", "own_by_package"),
    ("authsvc functions, callees included", "authsvc_inclusive"),
    ("top frames by own time", "own_top"),
)


@dataclass(frozen=True, slots=True)
class Result:
    """One measured wrk run."""

    scenario: str
    phase: str
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    invalid: str | None  # why the run does not count, None when it does
    server_us: float = 0.0  # CPU time of the server (all its processes) per request


@dataclass(frozen=True, slots=True)
class Row:
    """Medians over the rounds of one scenario in one phase."""

    scenario: str
    phase: str
    rps: float
    ratio: float
    p50_ms: float
    p99_ms: float
    rounds: int
    invalid: int
    server_us: float  # CPU per request, median
    cpu_ratio: float  # the ceiling's CPU per request over this one's, median of rounds

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else float("inf")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: float
    passed: bool


@dataclass
class Report:
    config: dict[str, Any]
    machine: dict[str, Any]
    results: list[Result] = field(default_factory=list)
    memory: dict[str, float] = field(default_factory=dict)
    sessions: dict[str, Any] = field(default_factory=dict)  # live counts, bulk load
    # py-spy's summaries (bench/flamegraph.py): scenario -> part -> [(name, percent)]
    profile: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)

    @property
    def invalid(self) -> list[Result]:
        return [r for r in self.results if r.invalid]

    def rows(self) -> list[Row]:
        """A row per scenario in the order run, the loaded phase's right after the base's."""
        measured = dict.fromkeys((r.scenario, r.phase) for r in self.results)
        return [
            self._row(name, phase)
            for name in dict.fromkeys(name for name, _ in measured)
            for phase in (BASE, LOADED)
            if (name, phase) in measured
        ]

    def row(self, scenario: str, phase: str = BASE) -> Row | None:
        if any(r.scenario == scenario and r.phase == phase for r in self.results):
            return self._row(scenario, phase)
        return None

    def _row(self, scenario: str, phase: str) -> Row:
        runs = [r for r in self.results if r.scenario == scenario and r.phase == phase]
        # The loaded phase runs in the same rounds, against the same ceiling.
        ceiling = {
            r.round: r.rps for r in self.results if r.scenario == "ceiling" and r.phase == BASE
        }
        ratios = [r.rps / ceiling[r.round] for r in runs if ceiling.get(r.round)]
        ceiling_us = {
            r.round: r.server_us
            for r in self.results
            if r.scenario == "ceiling" and r.phase == BASE
        }
        cpu_ratios = [ceiling_us[r.round] / r.server_us for r in runs if r.server_us]
        return Row(
            scenario=scenario,
            phase=phase,
            rps=statistics.median(r.rps for r in runs),
            ratio=statistics.median(ratios) if ratios else float("nan"),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            rounds=len(runs),
            invalid=sum(1 for r in runs if r.invalid),
            server_us=statistics.median(r.server_us for r in runs),
            cpu_ratio=statistics.median(cpu_ratios) if cpu_ratios else float("nan"),
        )

    def targets(self) -> list[Target]:
        found = []
        for name, goal in RATIO_TARGETS.items():
            row = self.row(name)
            if row is not None:
                found.append(Target(name, f">= {goal:.2f} x ceiling", row.ratio, row.ratio >= goal))
        connections = self.config["connections"]
        for row in self.rows():
            fixed = BY_NAME[row.scenario].connections is not None  # login: its own count
            if row.phase == BASE and row.scenario != "ceiling" and not fixed:
                found.append(
                    Target(
                        f"{row.scenario} p99/p50",
                        f"<= {TAIL_TARGET:g} at {connections} connections",
                        row.tail,
                        row.tail <= TAIL_TARGET,
                    )
                )
        kept = self.loaded_over_base()
        if kept is not None:
            found.append(
                Target(
                    f"refresh, {count_text(self.sessions.get(LOADED, 0))} vs "
                    f"{count_text(self.sessions.get(BASE, 0))} live sessions",
                    f">= {LOADED_TARGET:.2f} (req/s loaded / base, median of rounds)",
                    kept,
                    kept >= LOADED_TARGET,
                )
            )
        return found

    def loaded_over_base(self) -> float | None:
        """Median over rounds of refresh's req/s with many live sessions over with few.

        Both run back to back in each round (in alternating order), so each round's
        quotient compares two runs minutes apart at most, under the same load.
        """
        runs = {(r.phase, r.round): r.rps for r in self.results if r.scenario == "refresh"}
        quotients = [
            rps / runs[BASE, round_no]
            for (phase, round_no), rps in runs.items()
            if phase == LOADED and runs.get((BASE, round_no))
        ]
        return statistics.median(quotients) if quotients else None


def count_text(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2g}M"
    return f"{n / 1e3:.3g}k" if n >= 1000 else str(n)


def _rps(rps: float) -> str:
    return f"{rps:,.0f}" if rps >= 100 else f"{rps:.1f}"


def _scenario_label(row: Row, sessions: dict[str, Any]) -> str:
    if row.phase == LOADED:
        return f"{row.scenario} @ {count_text(sessions.get(LOADED, 0))} sessions"
    return row.scenario


def text(report: Report) -> str:
    """The console summary."""
    lines = [
        f"{'scenario':<28}{'req/s':>9}{'x ceiling':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99/p50':>9}{'cpu us/req':>11}{'x ceiling':>10}{'rounds':>8}"
    ]
    for row in report.rows():
        apart = not BY_NAME[row.scenario].ratio_target
        ratio = "" if apart else f"{row.ratio:.3f}"
        cpu_ratio = "" if apart else f"{row.cpu_ratio:.3f}"
        flag = f"  INVALID {row.invalid}" if row.invalid else ""
        lines.append(
            f"{_scenario_label(row, report.sessions):<28}{row.rps:>9.1f}{ratio:>11}"
            f"{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}{row.tail:>9.2f}{row.server_us:>11.0f}"
            f"{cpu_ratio:>10}{row.rounds:>8}{flag}"
        )
    lines += ["", *_memory_lines(report), "", "targets:"]
    for target in report.targets():
        verdict = "pass" if target.passed else "MISS"
        lines.append(f"  {verdict:<5}{target.name:<40}{target.measured:>7.3f}  ({target.goal})")
    for scenario, summary in report.profile.items():
        for title, key in PROFILE_PARTS:
            if not summary[key]:
                continue  # the ceiling has no authsvc functions
            lines += ["", f"server profile during {scenario}, {title}:"]
            lines += [f"  {share:5.1f}%  {name}" for name, share in summary[key]]
    return "\n".join(lines)


def _memory_lines(report: Report) -> list[str]:
    memory, sessions, lines = report.memory, report.sessions, []
    if memory:
        lines.append(
            f"Redis memory per live session (MEMORY USAGE over {memory['sessions']:,.0f} "
            f"sessions started by Store.login, one user each): {memory['session']:.0f} B the "
            f"session hash and the user's index, {memory['user']:.0f} B the user hash"
        )
    if "bulk_seconds" in sessions:
        lines.append(
            f"Loaded phase: {sessions['bulk_sessions']:,} sessions started by the login "
            f"script in {sessions['bulk_seconds']:.1f} s ({sessions[LOADED]:,} live then); Redis "
            f"used_memory grew {sessions['used_memory_per_session']:.0f} B per session (users "
            f"of {sessions['sessions_per_user']} sessions included). Base phase: "
            f"{sessions[BASE]:,} live sessions"
        )
    return lines


def markdown(report: Report) -> str:
    """The results as markdown: what docs/performance.md embeds and --out writes."""
    config, machine = report.config, report.machine
    packages = ", ".join(f"{name} {v}" for name, v in machine["packages"].items())
    out = [
        f"Measured {machine['date']} on {machine['cpus']} cores ({machine['cpu']}), Python "
        f"{machine['python']}, {machine['redis']}, {machine['wrk']}; {packages}; authsvc at "
        f"`{machine['commit']}`. Load average {machine['load_before']} before the run and "
        f"{machine['load_after']} after (the machine is shared).",
        "",
        f"`{config['command']}`: {config['workers']} worker(s), {config['connections']} "
        f"connections, {config['rounds']} rounds of {config['duration']} s (after "
        f"{config['warmup']} s of warm-up); medians over the rounds.",
        "",
        "| scenario | what each request does | req/s | x ceiling | p50 ms | p99 ms | p99/p50 "
        "| server CPU µs/req | x ceiling (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows():
        scenario = BY_NAME[row.scenario]
        ratio = f"{row.ratio:.2f}" if scenario.ratio_target else "apart"
        cpu_ratio = f"{row.cpu_ratio:.2f}" if scenario.ratio_target else "apart"
        invalid = f" **INVALID ({row.invalid} runs)**" if row.invalid else ""
        out.append(
            f"| {_scenario_label(row, report.sessions)}{invalid} | {scenario.summary} | "
            f"{_rps(row.rps)} | {ratio} | {row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.tail:.2f} "
            f"| {row.server_us:,.0f} | {cpu_ratio} |"
        )
    out += ["", *(f"- {line}" for line in _memory_lines(report))]
    out += ["", "| target | goal | measured | |", "|---|---|---:|---|"]
    for target in report.targets():
        verdict = "pass" if target.passed else "**miss**"
        out.append(f"| {target.name} | {target.goal} | {target.measured:.2f} | {verdict} |")
    for scenario, summary in report.profile.items():
        out += ["", f"Server profile during `{scenario}` (py-spy, share of samples):", ""]
        for title, key in PROFILE_PARTS:
            shares = ", ".join(f"`{name}` {share:.1f}%" for name, share in summary[key])
            if shares:
                out.append(f"- {title}: {shares}")
    return "\n".join(out) + "\n"
