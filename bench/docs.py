"""Write results where people read them: docs/performance.md and docs/performance.png.

``docs/performance.md`` is prose written by hand around one generated block, between the
two markers below; only that block is replaced, and the plot overwritten. The raw numbers
(every run, the profiles' summaries) stay in the run's ``results.json`` (``--out``, not
committed), which ``--render`` reads again. The plot needs matplotlib (the ``bench``
extra: ``pip install -c constraints.txt -e '.[bench]'``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from harness import BenchError
from report import LOADED, RATIO_TARGETS, Report, Result, count_text, markdown
from scenarios import BY_NAME

BEGIN = "<!-- bench/run.py --write-docs: begin (generated, do not edit) -->"
END = "<!-- bench/run.py --write-docs: end -->"


def write_json(report: Report, path: Path) -> None:
    data = {
        "config": report.config,
        "machine": report.machine,
        "rows": [asdict(row) | {"p99_over_p50": row.tail} for row in report.rows()],
        "targets": [asdict(target) for target in report.targets()],
        "memory": report.memory,
        "sessions": report.sessions,
        "profile": report.profile,
        "runs": [asdict(result) for result in report.results],
    }
    path.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> Report:
    """A report written by write_json, to render again (``bench/run.py --render``)."""
    data = json.loads(path.read_text())
    return Report(
        config=data["config"],
        machine=data["machine"],
        results=[Result(**run) for run in data["runs"]],
        memory=data["memory"],
        sessions=data["sessions"],
        profile=data["profile"],
    )


def write_docs(report: Report, docs: Path) -> None:
    """Replace the generated block of performance.md; write the plot.

    Raises:
        BenchError: performance.md lacks the markers, or matplotlib is missing.
    """
    page = docs / "performance.md"
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise BenchError(f"{page} has no generated block ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    plot(report, docs / "performance.png")
    page.write_text(f"{head}{BEGIN}\n{markdown(report)}{END}{tail}")


def plot(report: Report, path: Path) -> None:
    """Requests per second by scenario against the ceiling, targets marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "the plot needs matplotlib: pip install -c constraints.txt -e '.[bench]'"
        ) from None
    ceiling = report.row("ceiling")
    assert ceiling is not None
    rows = report.rows()
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    positions = list(range(len(rows)))[::-1]
    labels = [
        f"{row.scenario} @\n{count_text(report.sessions.get(LOADED, 0))} sessions"
        if row.phase == LOADED
        else row.scenario
        for row in rows
    ]
    colors = ["#888888" if row.scenario == "ceiling" else "#3b75af" for row in rows]
    axes.barh(positions, [row.rps for row in rows], color=colors)
    axes.set_yticks(positions, labels)
    axes.axvline(ceiling.rps, color="#888888", linestyle="--", linewidth=1)
    for position, row in zip(positions, rows, strict=True):
        if row.scenario == "ceiling":
            note = f"{row.rps:,.0f}/s"
        elif not BY_NAME[row.scenario].ratio_target:
            note = f"{row.rps:,.1f}/s (argon2id: reported apart)"
        else:
            note = f"{row.rps:,.0f}/s ({row.ratio:.2f} x ceiling)"
        axes.text(row.rps, position, "  " + note, va="center", fontsize=8)
        if row.scenario in RATIO_TARGETS and row.phase != LOADED:
            goal = RATIO_TARGETS[row.scenario] * ceiling.rps
            axes.plot([goal, goal], [position - 0.4, position + 0.4], color="#c0392b", linewidth=2)
    axes.set_xlabel("requests per second (median of rounds); red: target, dashed: ceiling")
    axes.set_xlim(0, max(row.rps for row in rows) * 1.4)  # room for the notes
    machine, config = report.machine, report.config
    axes.set_title(
        f"authsvc vs the ceiling (aiohttp + one Redis GET): {config['workers']} worker, "
        f"{config['connections']} connections, {machine['cpus']} cores",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
