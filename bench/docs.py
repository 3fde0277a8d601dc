"""Write results where people read them: docs/performance.{md,png,json}.

``docs/performance.md`` is prose written by hand around one generated block, between the
two markers below; only that block is replaced. The plot needs matplotlib (the ``bench``
extra: ``pip install -c constraints.txt -e '.[bench]'``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from harness import BenchError
from report import LOADED, RATIO_TARGETS, Report, markdown

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


def write_docs(report: Report, docs: Path) -> None:
    """Replace the generated block of performance.md; write the plot and the JSON.

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
    write_json(report, docs / "performance.json")


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
    rows = report.rows()
    ceiling = report.row("ceiling")
    assert ceiling is not None
    labels, values, colors = [], [], []
    for row in rows:
        if row.scenario == "ceiling" and row.phase == LOADED:
            continue
        label = row.scenario
        if row.phase == LOADED:
            label = f"{row.scenario}\n@ {report.sessions.get(LOADED, 0):,} sessions"
        labels.append(label)
        values.append(row.rps)
        colors.append("#888888" if row.scenario == "ceiling" else "#3b75af")
    figure, axes = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.6))
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, values, color=colors)
    axes.set_yticks(positions, labels)
    axes.axvline(ceiling.rps, color="#888888", linestyle="--", linewidth=1)
    for position, row_label, value in zip(positions, labels, values, strict=True):
        name = row_label.split("\n")[0]
        share = f"  {value:,.0f}/s" + ("" if name == "ceiling" else f" ({value / ceiling.rps:.2f})")
        axes.text(value, position, share, va="center", fontsize=8)
        if name in RATIO_TARGETS and "@" not in row_label:
            goal = RATIO_TARGETS[name] * ceiling.rps
            axes.plot([goal, goal], [position - 0.4, position + 0.4], color="#c0392b", linewidth=2)
    axes.set_xlabel("requests per second (median of rounds); red: target, dashed: ceiling")
    axes.set_xlim(0, ceiling.rps * 1.25)
    machine, config = report.machine, report.config
    axes.set_title(
        f"authsvc vs the ceiling (aiohttp + one Redis GET): {config['workers']} worker, "
        f"{config['connections']} connections, {machine['cpus']} cores",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
