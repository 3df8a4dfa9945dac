"""A finished what-if's report: report.md with PNG plots (each KPI per plan, the seeds' min-max as
error bars; garage occupancy over time per plan), under <reports dir>/whatif/<id>/."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from almere.whatif.v1 import whatif_pb2 as pb

from services.whatif.logic import SCORE_WEIGHTS


def _source(source: int) -> str:
    return "twin state" if source == pb.START_SOURCE_TWIN_STATE else "live picture"


def _cell(kpi: pb.KpiSummary) -> str:
    return f"{kpi.mean:.2f} ({kpi.min:.2f}-{kpi.max:.2f})"


def _kpi_plot(results: list[pb.PlanResult], kpi: str, path: Path) -> None:
    labels = [f"{r.plan_id}\n({_source(r.start_source)})" for r in results if kpi in r.kpis]
    summaries = [r.kpis[kpi] for r in results if kpi in r.kpis]
    means = [s.mean for s in summaries]
    errors = [[s.mean - s.min for s in summaries], [s.max - s.mean for s in summaries]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels)), 3.5))
    ax.bar(range(len(means)), means, yerr=errors, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(means)), labels, fontsize=7)
    ax.set_title(kpi)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _occupancy_plot(results: list[pb.PlanResult], path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(7.0, 3.5))
    drawn = False
    for result in results:
        for series in result.occupancy:
            ax.plot(
                range(len(series.occupied)),
                list(series.occupied),
                label=f"{result.plan_id} {series.facility_id} ({_source(result.start_source)})",
            )
            drawn = True
    if drawn:
        ax.set_xlabel("minutes from now")
        ax.set_ylabel("occupied spaces")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=80)
    plt.close(fig)
    return drawn


def write(what_if: pb.WhatIf, reports_dir: Path) -> str:
    """Writes the report; returns its path relative to the reports dir (`whatif/<id>/report.md`)."""
    what_if_id = what_if.name.removeprefix("whatIfs/")
    relative = Path("whatif") / what_if_id
    folder = reports_dir / relative
    folder.mkdir(parents=True, exist_ok=True)
    results = sorted(what_if.results, key=lambda r: (r.start_source, r.rank))
    kpis = sorted({k for r in results for k in r.kpis})
    lines = [
        f"# What-if {what_if.title or what_if_id}",
        "",
        f"Scenario {what_if.scenario or '-'}, from sim time {what_if.start_sim_time_seconds:g} s, "
        f"{what_if.horizon_minutes:g} minutes ahead, {what_if.seeds} seed(s) per plan and start.",
        "",
        "Score: the weighted sum of each KPI's mean over do-nothing's (lower is better; weights "
        + ", ".join(f"{k} {w:g}" for k, w in SCORE_WEIGHTS.items())
        + ").",
        "",
        "| rank | plan | start | score | " + " | ".join(kpis) + " |",
        "|---|---|---|---|" + "---|" * len(kpis),
    ]
    for r in results:
        cells = [
            f"{r.kpis[k].mean:.2f} ({r.kpis[k].min:.2f}-{r.kpis[k].max:.2f})" if k in r.kpis else "-" for k in kpis
        ]
        lines.append(
            f"| {r.rank} | {r.plan_id} | {_source(r.start_source)} | {r.score:.3f} | " + " | ".join(cells) + " |"
        )
    if what_if.start_errors:
        lines += [
            "",
            "## Live picture against twin state",
            "",
            "| plan | kpi | twin | live | error |",
            "|---|---|---|---|---|",
        ]
        for e in what_if.start_errors:
            lines.append(
                f"| {e.plan_id} | {e.kpi} | {e.twin_state:.2f} | {e.live_picture:.2f} | {e.relative_error:+.1%} |"
            )
    if what_if.error:
        lines += ["", f"**Failed:** {what_if.error}"]
    lines += ["", "## KPIs", ""]
    for kpi in kpis:
        _kpi_plot(results, kpi, folder / f"{kpi}.png")
        lines.append(f"![{kpi}]({kpi}.png)")
    if _occupancy_plot(results, folder / "occupancy.png"):
        lines += ["", "## Garage occupancy", "", "![occupancy](occupancy.png)"]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return str(relative / "report.md")
