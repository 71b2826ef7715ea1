"""The build's human report (report.html: self-contained, plots as embedded PNG, no external scripts or fonts)
and the app bundle (the engine an app ships + manifest.json)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.fileio import copy_file, sha256_file, write_text
from edgeprune.latency.compare import format_speedup
from edgeprune.report.records import BuildReport

if TYPE_CHECKING:
    from edgeprune.latency.lut import LutReport
    from edgeprune.models.base import LoadedModel
    from edgeprune.types import PrunePlan

COLORS = {"unpruned": "#555555", "plan": "#d62728", "uniform": "#1f77b4", "flops": "#2ca02c"}


def write_html(report: BuildReport, lut: LutReport, path: Path) -> Path:
    sections = [
        f"<h1>edgeprune build: {_e(report.model)} on {_e(report.target.name)}</h1>",
        f"<p class='verdict {'ok' if report.met else 'fail'}'>{_e(report.summary())}</p>",
        *(
            [f"<p class='fail'>Every latency and energy figure below is {_e(report.emulation)}.</p>"]
            if report.emulation
            else []
        ),  # fmt: skip
        "<h2>Models, measured on the target</h2>",
        _results_table(report),
        *_recovery_section(report),
        "<h2>Accuracy vs measured latency</h2>",
        _img(_accuracy_plot(report)),
        "<h2>Per-layer latency before / after (latency table, calibrated)</h2>",
        _img(_layer_plot(report)),
        "<h2>Latency table: predicted vs measured</h2>",
        _img(_lut_plot(report, lut)),
        f"<p>Table: {_e(lut.summary())}</p><p>Method: {_e(lut.method)}</p>",
        "<h2>Plan rounds (solve → prune → measure)</h2>",
        _rounds_table(report),
        f"<p>What the planner weighed against latency: {_e(report.plan.value)}; "
        f"{len(report.plan.choice.removed_blocks)} blocks removed.</p>",
        "<h2>How the latencies were measured</h2>",
        f"<p>{_e(report.latency_method)}</p>",
        "<h2>Environment</h2>",
        _kv(report.environment),
        "<h2>Stage times (s)</h2>",
        _kv(report.stage_seconds),
    ]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#f3f3f3}.ok{color:#1a7f37}.fail{color:#b00020}img{max-width:100%}")  # fmt: skip
    return write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>edgeprune build report</title>"
                            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")  # fmt: skip


def write_bundle(report: BuildReport, model: LoadedModel, bundle: Path, splits, prune_plan: PrunePlan) -> Path:
    """bundle/: the shipped model's engine and manifest.json (what an app needs to run it, and what it was measured
    at); `prune_plan` is the shipped model's (the plan's, or a back-off candidate's)."""
    plan = report.result(report.shipped)
    files = []
    for source in plan.artifact.files:
        copied = copy_file(source, bundle / Path(source).name)
        files.append({"file": copied.name, "sha256": sha256_file(copied)})
    manifest = {
        "model": report.model,
        "target": report.target.name,
        "runtime": plan.latency.runtime,
        "format": plan.artifact.format,
        "precision": plan.artifact.precision,
        "quantization": plan.artifact.quantization,
        "files": files,
        "inputs": [spec.to_dict() for spec in plan.artifact.inputs],
        "outputs": [spec.to_dict() for spec in plan.artifact.outputs],
        "preprocessing": plan.artifact.preprocessing.to_dict() if plan.artifact.preprocessing else None,
        "labels": list(model.class_names) if model.class_names else None,
        "detection": plan.artifact.detection.to_dict() if plan.artifact.detection else None,
        "metrics": {r.name: {r.metric or "metric": r.metric_value} for r in report.results},
        "held_out_data": splits.holdout if splits else None,
        "latency": plan.latency.to_dict(),
        "unpruned_latency_median_ms": next(r for r in report.results if r.name == "unpruned").latency.median_ms,
        "speedup": report.speedup,
        "speedup_relative_se": plan.speedup_se,
        "shipped": report.shipped,
        "budget": report.budget.describe(),
        "budget_met": report.met,
        "latency_budget_met": report.latency_met,
        "max_drop_points": report.max_drop,
        "accuracy_drop_points": report.accuracy_drop,
        "accuracy_budget_met": report.accuracy_met,
        "energy": {
            "mj_per_inference": plan.latency.energy_mj,
            "how": plan.latency.energy,
            "note": plan.latency.energy_note,
        },
        "tool_versions": {**report.environment, **plan.artifact.tool_versions},
        "prune_plan": prune_plan.to_dict(),
    }
    write_text(bundle / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return bundle


# --- tables ---------------------------------------------------------------------------------------------------------


def _results_table(report: BuildReport) -> str:
    rows = ["<tr><th>model</th><th>precision</th><th>median ms</th><th>p90 ms</th><th>n</th><th>speedup</th>"
            "<th>metric</th><th>MMACs</th><th>params</th><th>energy mJ</th></tr>"]  # fmt: skip
    for r in report.results:
        lat = r.latency
        metric = f"{r.metric} {r.metric_value:.4f}" if r.metric_value is not None else "—"
        energy = f"{lat.energy_mj:.3f} ({lat.energy})" if lat.energy_mj is not None else f"— ({lat.energy})"
        how = r.artifact.quantization
        precision = f"{r.artifact.precision}, {how}" if how else r.artifact.precision
        rows.append(f"<tr><td>{_e(r.name)}</td><td>{_e(precision)}</td><td>{lat.median_ms:.3f}</td>"
                    f"<td>{lat.p90_ms:.3f}</td><td>{lat.n}</td>"
                    f"<td>{format_speedup(r.speedup, r.speedup_se)}</td><td>{_e(metric)}</td>"
                    f"<td>{r.macs / 1e6:.1f}</td><td>{r.params:,}</td><td>{_e(energy)}</td></tr>")  # fmt: skip
    return f"<table>{''.join(rows)}</table>"


def _recovery_section(report: BuildReport) -> list[str]:
    """The candidates fine-tuned and validated (the plan, then each back-off), and which one was shipped."""
    recovery = report.recovery
    if recovery is None:
        return []
    allowed = (
        "no accuracy budget"
        if recovery.max_drop is None
        else (f"allowed drop {recovery.max_drop:g} points; a candidate must reach {recovery.stop_at:.4f} on validation")
    )
    rows = ["<tr><th>candidate</th><th>planned for</th><th>speedup (plan stage)</th><th>validation top-1</th>"
            "<th>drop (points ± SE)</th><th>epochs run</th><th>best epoch</th><th>meets the drop</th><th>held-out on runtime</th>"
            "<th>speedup (final)</th></tr>"]  # fmt: skip
    final = {r.name: r for r in report.results}
    for c in recovery.candidates:
        result = final.get(c.name)
        held = f"{result.metric_value:.4f}" if result and result.metric_value is not None else "—"
        rows.append(f"<tr><td>{_e(c.name)}{' (shipped)' if c.name == report.shipped else ''}</td>"
                    f"<td>{_e(c.budget.describe())}</td><td>{_e(format_speedup(c.speedup, c.speedup_se)) if c.speedup else '—'}</td>"
                    f"<td>{'—' if c.validation is None else f'{c.validation:.4f}'}</td>"
            f"<td>{'—' if c.validation_drop is None else f'{c.validation_drop:.2f} ± {c.validation_drop_se:.2f}'}</td>"
            f"<td>{c.epochs_run}</td>"
                    f"<td>{c.best_epoch or '—'}</td><td>{'yes' if c.meets_drop else 'no'}</td><td>{held}</td>"
                    f"<td>{_e(format_speedup(result.speedup, result.speedup_se)) if result else '—'}</td></tr>")  # fmt: skip
    return [
        "<h2>Accuracy recovery: candidates fine-tuned and validated</h2>",
        f"<p>Original model on the validation split: {recovery.original_validation:.4f} top-1; {_e(allowed)}. The "
        "candidate to ship was chosen on validation; the held-out column is the frontier as the target's runtime "
        "measured it, and the verdict reads only the shipped model's.</p>",
        f"<table>{''.join(rows)}</table>",
    ]


def _rounds_table(report: BuildReport) -> str:
    rows = ["<tr><th>round</th><th>target (table) ms</th><th>predicted ms</th><th>measured median ms</th>"
            "<th>budget ms (this round)</th><th>predicted speedup</th><th>measured speedup</th>"
            "<th>table's error</th><th>met</th></tr>"]  # fmt: skip
    for r in report.plan.rounds:
        predicted = f"{r.predicted_speedup:.2f}×" if r.predicted_speedup else "—"
        measured = f"{r.speedup:.2f}×" if r.speedup else "—"
        error = f"{100 * r.prediction_error:+.1f} %" if r.prediction_error is not None else "—"
        rows.append(f"<tr><td>{r.round}</td><td>{r.target_predicted_ms:.3f}</td><td>{r.predicted_ms:.3f}</td>"
                    f"<td>{r.measured.median_ms:.3f}</td><td>{r.budget_ms:.3f}</td><td>{predicted}</td>"
                    f"<td>{measured}</td><td>{error}</td><td>{'yes' if r.met else 'no'}</td></tr>")  # fmt: skip
    return f"<table>{''.join(rows)}</table>"


def _kv(mapping: dict) -> str:
    rows = "".join(f"<tr><th>{_e(str(k))}</th><td>{_e(str(v))}</td></tr>" for k, v in mapping.items())
    return f"<table>{rows}</table>"


def _e(text: str) -> str:
    return html.escape(str(text))


# --- plots ----------------------------------------------------------------------------------------------------------


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.2), dpi=100)


def _img(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _accuracy_plot(report: BuildReport):
    fig, ax = _figure()
    for r in report.results:
        y = r.metric_value if r.metric_value is not None else 0.0
        ax.scatter([r.latency.median_ms], [y], s=60, color=COLORS.get(r.name, "#9467bd"), label=r.name, zorder=3)
        ax.errorbar([r.latency.median_ms], [y], xerr=[[r.latency.median_ms - r.latency.min_ms],
                                                       [r.latency.p90_ms - r.latency.median_ms]],
                    color=COLORS.get(r.name, "#9467bd"), alpha=0.5)  # fmt: skip
    ax.axvline(report.budget_ms, color="#b00020", linestyle="--", label="budget")
    metric = next((r.metric for r in report.results if r.metric), None)
    ax.set_xlabel("measured median latency (ms; bars: min to p90)")
    ax.set_ylabel(f"held-out {metric} on the target runtime" if metric else "no data given: no metric")
    ax.legend()
    return fig


def _layer_plot(report: BuildReport):
    fig, ax = _figure()
    names = list(report.plan.layer_ms)
    before = [report.plan.layer_ms[n][0] for n in names]
    after = [report.plan.layer_ms[n][1] for n in names]
    x = range(len(names))
    ax.bar(x, before, color="#bbbbbb", label="unpruned")
    ax.bar(x, after, color=COLORS["plan"], alpha=0.8, label="plan (0: layer removed)")
    ax.set_xlabel("conv/linear layer, in execution order")
    ax.set_ylabel("calibrated table latency (ms)")
    ax.legend()
    return fig


def _lut_plot(report: BuildReport, lut: LutReport):
    fig, ax = _figure()
    for role, marker in (("calibration", "s"), ("evaluation", "o")):
        points = [(v.measured_ms, v.predicted_ms) for v in lut.variants if v.role == role]
        if points:
            ax.scatter(*zip(*points), marker=marker, label=f"random variants ({role})")
    rounds = [(r.measured.median_ms, r.predicted_ms) for r in report.plan.rounds]
    if rounds:  # none when the table ruled the budget out
        ax.scatter(*zip(*rounds), marker="*", s=140, color=COLORS["plan"], label="plan rounds")
    values = [v for p in ax.collections for v in p.get_offsets().ravel()]
    low, high = min(values), max(values)
    ax.plot([low, high], [low, high], color="#888", linestyle=":", label="predicted = measured")
    ax.set_xlabel("measured median latency (ms)")
    ax.set_ylabel("table prediction (ms)")
    ax.legend()
    return fig
