"""The report's evidence tables: every model measured, parity, accuracy recovery and its fine-tuning recipe, the
structure removed, the plan rounds, energy. Each returns HTML with every value escaped."""

from __future__ import annotations

import html
import math
from collections import defaultdict

from edgeprune.latency.compare import format_speedup
from edgeprune.plan.planner import PlanChoice
from edgeprune.report.records import BuildReport


def e(text) -> str:
    return html.escape(str(text), quote=True)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A table of already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def key_values(mapping: dict) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in mapping.items())
    return f"<table>{rows}</table>"


def _or_dash(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def results_table(report: BuildReport) -> str:
    rows = []
    for r in report.results:
        lat = r.latency
        n = r.verification.n_samples if r.verification else None
        metric = "—"
        if r.metric_value is not None:
            se = math.sqrt(r.metric_value * (1 - r.metric_value) / n) if n and 0 <= r.metric_value <= 1 else None
            metric = f"{r.metric} {r.metric_value:.4f}" + (f" ± {se:.4f}" if se is not None else "")
        how = r.artifact.quantization
        name = f"{r.name} (shipped)" if r.name == report.shipped else r.name
        rows.append([e(name), e(f"{r.artifact.precision}, {how}" if how else r.artifact.precision),
                     _or_dash(lat.median_ms, ".3f"), _or_dash(lat.p90_ms, ".3f"), str(lat.n),
                     e(format_speedup(r.speedup, r.speedup_se)), e(metric), _or_dash(n, "d"),
                     f"{r.macs / 1e6:.1f}", f"{r.params:,}"])  # fmt: skip
    return table(["model", "precision", "median ms", "p90 ms", "timed runs", "speedup ± SE", "held-out metric ± SE",
                  "held-out n", "MMACs", "params"], rows)  # fmt: skip


def parity_table(report: BuildReport) -> str:
    """Each model's outputs on the target's runtime against PyTorch fp32, output by output, and its task metrics."""
    rows = []
    for r in report.results:
        check = r.verification
        if check is None:
            rows.append([e(r.name), "—", "not verified (no --data)", "", "", "", ""])
            continue
        metrics = "; ".join(
            f"{m.name} {m.runtime:.4f} vs {m.reference:.4f} (tol {m.tolerance:g})" for m in check.metrics
        )
        for p in check.parity:
            rows.append([e(r.name), e(p.name), f"{p.max_abs:.3g} (tol {p.tolerance_max_abs:.3g})",
                         f"{p.cosine_min:.6f}", f"{p.tolerance_cosine} ({e(p.cosine_of)})", e(metrics),
                         "<span class='ok'>passed</span>" if p.passed else f"<span class='fail'>{e(p.failure())}</span>"])  # fmt: skip
    return table(["model", "output", "max-abs difference", "worst cosine", "cosine tolerance", "task metric: runtime "
                  "vs PyTorch", "parity"], rows)  # fmt: skip


def recovery_section(report: BuildReport) -> list[str]:
    """The fine-tuning recipe used, the candidates fine-tuned and validated, and which one was shipped."""
    out = ["<h2>Fine-tuning and accuracy recovery</h2>", _recipe(report)]
    recovery = report.recovery
    if recovery is None:
        return out
    allowed = ("no accuracy budget" if recovery.max_drop is None
               else f"allowed drop {recovery.max_drop:g} points; a candidate must reach {recovery.stop_at:.4f} on "
                    "validation (half the allowed drop kept as margin for the held-out split's noise)")  # fmt: skip
    final = {r.name: r for r in report.results}
    cap = report.options.finetune_epochs if report.options else None
    rows = []
    for c in recovery.candidates:
        result = final.get(c.name)
        held = f"{result.metric_value:.4f}" if result and result.metric_value is not None else "—"
        stopped = "—" if cap is None else ("yes" if c.epochs_run < cap else "no")
        drop = "—" if c.validation_drop is None else f"{c.validation_drop:.2f} ± {c.validation_drop_se:.2f}"
        rows.append([e(c.name + (" (shipped)" if c.name == report.shipped else "")), e(c.budget.describe()),
                     e(format_speedup(c.speedup, c.speedup_se)) if c.speedup else "—", _or_dash(c.validation, ".4f"),
                     drop, str(c.epochs_run), stopped, _or_dash(c.best_epoch, "d"), "yes" if c.meets_drop else "no",
                     held, e(format_speedup(result.speedup, result.speedup_se)) if result else "—"])  # fmt: skip
    return [*out,
            f"<p>Original model on the validation split: {recovery.original_validation:.4f} {e(recovery.metric)}; "
            f"{e(allowed)}. The candidate to ship was chosen on validation; the held-out column is the same models "
            "on the target's runtime, and the verdict reads only the shipped model's.</p>",
            table(["candidate", "planned for", "speedup (plan stage)", "validation", "drop (points ± SE)",
                   "epochs run", "stopped early", "best epoch", "meets the drop", "held-out on runtime",
                   "speedup (final)"], rows)]  # fmt: skip


def _recipe(report: BuildReport) -> str:
    options = report.options
    if options is None:
        return "<p>This report predates the record of the build's options: see build.json for the recipe.</p>"
    if not options.finetune_epochs:
        return "<p>No fine-tuning (--finetune-epochs 0): every pruned model was exported as pruned.</p>"
    from edgeprune.train.finetune import FinetuneRecipe

    recipe = FinetuneRecipe.for_build(options)
    if report.recovery is None and any(r.metric and r.metric != "top1" for r in report.results):
        return (f"<p>At most {recipe.epochs} epochs with the model family's own trainer (lr {recipe.lr:g}, "
                f"{'distilled from the unpruned model' if recipe.distill_alpha else 'no distillation'}).</p>")  # fmt: skip
    distill = (f"distilled from the unpruned model (teacher's share {recipe.distill_alpha:g}, temperature "
               f"{recipe.distill_temperature:g})" if recipe.distill_alpha else "no distillation (labels only)")  # fmt: skip
    stop = ("stops at the first epoch within the allowed drop on validation and keeps its best epoch"
            if options.max_drop is not None else "runs every epoch and keeps the best on validation")  # fmt: skip
    return (f"<p>Recipe, for the plan, the baselines and every back-off candidate: at most {recipe.epochs} epochs of "
            f"SGD (lr {recipe.lr:g}, momentum {recipe.momentum:g}, weight decay {recipe.weight_decay:g}, cosine "
            f"schedule, batch {recipe.batch_size}, random crop ±{recipe.crop_padding} px"
            f"{', horizontal flips' if recipe.flip else ''}), {e(distill)}; it {stop}; seed {recipe.seed}.</p>")  # fmt: skip


def structure_section(report: BuildReport, backoffs: dict[str, PlanChoice] | None = None) -> list[str]:
    """Blocks removed and output widths, stage by stage, for the plan, each baseline and each back-off candidate
    (`backoffs`: their choices, from their own plan reports)."""
    plan = report.plan
    choices: dict[str, PlanChoice] = {"plan": plan.choice, **plan.baselines, **(backoffs or {})}
    out = ["<h2>What was removed</h2>"]
    if plan.ruled_out:
        out.append("<p>Nothing: the latency table ruled the budget out (below, the fastest model the planner could "
                   "reach, not built).</p>")  # fmt: skip
    if plan.prune_plan is not None:
        p = plan.prune_plan
        measured = {r.name: r for r in report.results}
        size = ""
        if "plan" in measured:
            base, pruned = measured["unpruned"], measured["plan"]
            size = (f"; MACs {base.macs / 1e6:.2f} M → {pruned.macs / 1e6:.2f} M; parameters {base.params:,} → "
                    f"{pruned.params:,}")  # fmt: skip
        out.append(f"<p>The plan: {len(p.removed_blocks)} blocks removed ({e(', '.join(p.removed_blocks) or 'none')})"
                   f"{size}; channels ranked by {e(p.criterion)}"
                   f"{', rounded to multiples of ' + str(p.round_to) if p.round_to else ''}.</p>")  # fmt: skip
    if report.shipped not in choices:
        out.append(f"<p>The shipped model, {e(report.shipped)}, is a back-off candidate re-planned for a gentler "
                   f"budget: its structure is in backoff/{e(report.shipped)}/plan/plan_report.json.</p>")  # fmt: skip
    if not plan.base_widths:
        widths = "; ".join(f"{e(layer)} {w[1]}" for layer, w in plan.choice.widths.items())
        return [*out, f"<p>Output widths after the plan, layer by layer: {widths}.</p>"]
    stages = _stages(plan.base_widths)
    blocks = {stage: sorted({b for n in layers if (b := _block(n))}) for stage, layers in stages.items()}
    rows = [["unpruned", *(_stage_cell(len(blocks[s]), [], {n: plan.base_widths[n] for n in stages[s]})
                           for s in stages)]]  # fmt: skip
    for name, choice in choices.items():
        label = name + (" (shipped)" if name == report.shipped else "")
        cells = []
        for stage, layers in stages.items():
            removed = [b for b in blocks[stage] if b in choice.removed_blocks]
            kept = {n: choice.widths[n] for n in layers if n in choice.widths}
            cells.append(_stage_cell(len(blocks[stage]) - len(removed), removed, kept))
        rows.append([e(label), *cells])
    note = (
        "<p>Each cell: the stage's residual blocks kept (and which were removed), then the distinct "
        "output-channel counts of its conv/linear layers (× how many layers have it).</p>"
    )
    return [*out, table(["model", *map(e, stages)], rows), note]


def _stage_cell(blocks: int, removed: list[str], widths: dict[str, tuple[int, int]]) -> str:
    parts = []
    if blocks or removed:
        parts.append(
            f"{blocks} block{'' if blocks == 1 else 's'}" + (f" (−{e(', '.join(removed))})" if removed else "")
        )
    parts.append(f"widths {_widths(widths)}" if widths else "removed")
    return "<br>".join(parts)


def _stages(widths: dict[str, tuple[int, int]]) -> dict[str, list[str]]:
    """Layers grouped by their first name component (layer1, layer2, …), in execution order."""
    stages: dict[str, list[str]] = defaultdict(list)
    for name in widths:
        stages[name.split(".")[0]].append(name)
    return dict(stages)


def _block(layer: str) -> str | None:
    """The residual block a layer belongs to ("layer2.1" for "layer2.1.conv1"), None for a stem or head layer."""
    parts = layer.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 else None


def _widths(widths: dict[str, tuple[int, int]]) -> str:
    counts: dict[int, int] = defaultdict(int)
    for _, out in widths.values():
        counts[out] += 1
    return ", ".join(f"{w}×{n}" if n > 1 else str(w) for w, n in sorted(counts.items()))


def rounds_section(report: BuildReport) -> list[str]:
    plan = report.plan
    if plan.ruled_out:
        return ["<p>No rounds: the latency table ruled the budget out, so nothing was pruned or measured.</p>"]
    kept = plan.kept()
    rows = []
    for r in plan.rounds:
        error = f"{100 * r.prediction_error:+.1f} %" if r.prediction_error is not None else "—"
        needed = f" (needs {100 * r.headroom_needed:.1f} %)" if r.headroom_needed is not None else ""
        headroom = f"{100 * _under(report, r):.1f} % under{needed}" if r.met else "—"
        rows.append([str(r.round), f"{r.target_predicted_ms:.3f}", f"{r.predicted_ms:.3f}",
                     f"{r.measured.median_ms:.3f}", f"{r.unpruned_ms:.3f}", f"{r.budget_ms:.3f}",
                     _or_dash(r.predicted_speedup, ".2f"), e(format_speedup(r.speedup, r.speedup_se)) if r.speedup
                     else "—", error, "yes" if r.met else "no", headroom, _or_dash(r.value_lost, ".3f"),
                     e(_outcome(report, r, kept))])  # fmt: skip
    budget_note = (
        "For a speedup budget, each round times the unpruned model again beside its candidate, and its budget in ms "
        "is that round's unpruned median ÷ the speedup: it moves with the machine's speed between sessions, while "
        "the speedup, which is what is judged, does not."
        if report.budget.kind == "speedup" else "The budget in ms is the same every round.")  # fmt: skip
    return [
        table(
            [
                "round",
                "table target ms",
                "predicted ms",
                "measured median ms",
                "unpruned median ms (same session)",
                "budget ms (this round)",
                "predicted speedup",
                "measured speedup ± SE",
                "table's error",
                "met",
                "headroom",
                "value lost",
                "outcome",
            ],
            rows,
        ),  # fmt: skip
        f"<p>{e(budget_note)} Each round solves on the latency table for a target that is moved by the previous "
        "round's measured error. The kept round is the met one that lost the least value (importance removed), "
        "preferring rounds met with headroom (under the budget by the margin that survives the verify stage timing "
        "the model again).</p>",
    ]


def _under(report: BuildReport, r) -> float:
    """The share of the round's budget it stayed under by."""
    if report.budget.kind == "speedup" and r.speedup:
        return 1 - report.budget.value / r.speedup
    return 1 - r.measured.median_ms / r.budget_ms


def _outcome(report: BuildReport, r, kept) -> str:
    if kept is not None and r.round == kept.round:
        return "kept" if kept.met else "kept (no round met the budget: the last round's model)"
    if not r.met:
        return "discarded: missed the budget"
    if kept is not None and kept.headroom and not r.headroom:
        return f"discarded: met without headroom, round {kept.round} had it"
    if kept is not None and r.value_lost is not None and kept.value_lost is not None:
        return f"discarded: met, but lost more value ({r.value_lost:.3f} vs {kept.value_lost:.3f})"
    return f"discarded: round {kept.round} was kept" if kept is not None else "discarded"


def energy_section(report: BuildReport) -> list[str]:
    """Each model's energy figure, how it was obtained and, when there is none, why."""
    base = report.plan.base_latency
    rows = [["unpruned (profile stage)", _energy(base.energy_mj), e(base.energy), e(base.energy_note or "—")]]
    for r in report.results:
        lat = r.latency
        rows.append([e(r.name), _energy(lat.energy_mj), e(lat.energy), e(lat.energy_note or "—")])
    return ["<h2>Energy</h2>", table(["model", "mJ per inference", "how", "why / from what"], rows)]


def _energy(mj: float | None) -> str:
    return "—" if mj is None else f"{mj:.3f}"
