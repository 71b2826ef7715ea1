"""The build's human report (report.html: self-contained, plots as embedded PNG, no external scripts or fonts)
and the app bundle (the engine an app ships + manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from edgeprune.fileio import copy_file, sha256_file, write_text
from edgeprune.report import plots
from edgeprune.report.records import BuildReport, PlanReport
from edgeprune.report.sections import (
    e,
    energy_section,
    key_values,
    parity_table,
    recovery_section,
    results_table,
    rounds_section,
    structure_section,
)
from edgeprune.report.verdict import verdict_html

if TYPE_CHECKING:
    from edgeprune.latency.lut import LutReport
    from edgeprune.models.base import LoadedModel
    from edgeprune.plan.planner import PlanChoice
    from edgeprune.types import PrunePlan


def write_html(report: BuildReport, lut: LutReport, path: Path) -> Path:
    """report.html: the verdict first ("can I ship this?"), then the evidence behind each answer."""
    sections = [
        f"<h1>edgeprune build: {e(report.model)} on {e(report.target.name)}</h1>",
        verdict_html(report),
        f"<p class='summary'>{e(report.summary())}</p>",
        *(
            [f"<p class='fail'>Every latency and energy figure below is {e(report.emulation)}.</p>"]
            if report.emulation
            else []
        ),  # fmt: skip
        "<h2>Every model measured: accuracy vs latency</h2>",
        plots.img(plots.accuracy_plot(report), "held-out accuracy against measured latency, every model"),
        results_table(report),
        "<h2>Parity on the target's runtime, per model</h2>",
        parity_table(report),
        *recovery_section(report),
        *structure_section(report, _backoff_choices(report, path.parent)),
        "<h2>Plan rounds (solve → prune → measure): predicted vs measured</h2>",
        *(
            [plots.img(plots.speedup_plot(report), "predicted against measured speedup, each plan round")]
            if report.plan.rounds
            else []
        ),  # fmt: skip
        *rounds_section(report),
        f"<p>What the planner weighed against latency: {e(report.plan.value)}.</p>",
        "<h2>Latency table: predicted vs measured</h2>",
        plots.img(plots.lut_plot(report, lut), "latency table prediction against measurement"),
        f"<p>Table: {e(lut.summary())}</p><p>Method: {e(lut.method)}</p>",
        "<h2>Per-layer latency before / after (latency table, calibrated)</h2>",
        plots.img(plots.layer_plot(report), "per-layer table latency before and after"),
        *energy_section(report),
        "<h2>How the latencies were measured</h2>",
        f"<p>{e(report.latency_method)}</p>",
        "<h2>Environment</h2>",
        key_values(report.environment),
        "<h2>Stage times (s)</h2>",
        key_values(report.stage_seconds),
    ]
    return write_text(path, f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                            f"<title>edgeprune build report: {e(report.model)}</title><style>{STYLE}</style></head>"
                            f"<body>{''.join(sections)}</body></html>\n")  # fmt: skip


def _backoff_choices(report: BuildReport, out_dir: Path) -> dict[str, PlanChoice]:
    """Each back-off candidate's structure, from the plan report its own plan stage saved in the build folder."""
    found = {}
    for candidate in report.recovery.candidates if report.recovery else ():
        saved = out_dir / "backoff" / candidate.name / "plan" / "plan_report.json"
        if candidate.name != "plan" and saved.is_file():
            found[candidate.name] = PlanReport.load(saved).choice
    return found


STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "th{background:#f3f3f3}.ok{color:#1a7f37}.fail{color:#b00020}.na{color:#666}img{max-width:100%}"
         "#verdict{border:2px solid;border-radius:6px;padding:0 1em 1em}#verdict.ship{border-color:#1a7f37}"
         "#verdict.hold{border-color:#b00020}#verdict .headline{font-size:1.25em;font-weight:bold}"
         "table.verdict th,table.verdict td{text-align:left}td.answer{font-weight:bold;text-transform:uppercase}"
         ".summary{color:#555}")  # fmt: skip


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
