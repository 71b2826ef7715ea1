""" "Can I ship this?": the build's answer to each question a user asks before shipping, read from its records."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from edgeprune.latency.compare import format_speedup
from edgeprune.report.records import BuildReport
from edgeprune.types.build import ModelResult


@dataclass(frozen=True)
class Answer:
    """One question of the verdict; `ok` None: the build was not asked to judge it (no budget, no data)."""

    question: str
    ok: bool | None
    text: str


@dataclass(frozen=True)
class Verdict:
    ship: bool  # every judged answer is yes
    headline: str
    answers: tuple[Answer, ...]


def verdict(report: BuildReport) -> Verdict:
    answers = (_latency(report), _accuracy(report), _parity(report), _measured(report))
    failed = [a.question for a in answers if a.ok is False]
    if failed:
        headline = f"Do not ship yet: {'; '.join(_short(q) for q in failed)}."
    elif report.shipped != "plan":
        headline = f"Ship it: {report.shipped} (a gentler back-off candidate) meets every budget that was set."
    else:
        headline = "Ship it: the pruned model meets every budget that was set."
    unjudged = [a.question.rstrip("?").lower() for a in answers if a.ok is None]
    if unjudged:
        headline += f" Not judged: {'; '.join(unjudged)}."
    return Verdict(not failed, headline, answers)


def verdict_html(report: BuildReport) -> str:
    """The verdict block: the headline, then one yes/no line per question with its numbers."""
    judged = verdict(report)
    rows = "".join(
        f"<tr><th>{html.escape(a.question)}</th><td class='answer {_css(a.ok)}'>{_word(a.ok)}</td>"
        f"<td>{html.escape(a.text)}</td></tr>"
        for a in judged.answers
    )
    return (f"<section id='verdict' class='{'ship' if judged.ship else 'hold'}'>"
            f"<h2>Can I ship this?</h2><p class='headline {'ok' if judged.ship else 'fail'}'>{html.escape(judged.headline)}</p>"
            f"<table class='verdict'>{rows}</table></section>")  # fmt: skip


def _word(ok: bool | None) -> str:
    return {True: "yes", False: "no", None: "not judged"}[ok]


def _css(ok: bool | None) -> str:
    return {True: "ok", False: "fail", None: "na"}[ok]


def _short(question: str) -> str:
    return {
        LATENCY: "the latency budget is not met",
        ACCURACY: "the accuracy drop is over the allowed one",
        PARITY: "the runtime's outputs differ from PyTorch's",
        MEASURED: "the latencies were not measured on the target itself",
    }[question]


LATENCY = "Latency budget met?"
ACCURACY = "Accuracy within the allowed drop?"
PARITY = "Parity passed on the target's runtime?"
MEASURED = "Measured on the target (not emulated)?"


def _latency(report: BuildReport) -> Answer:
    budget = f"budget {report.budget.describe()} (= {report.budget_ms:.3f} ms median)"
    if report.plan.ruled_out:
        return Answer(LATENCY, False, f"{budget}: {report.plan.reachable()}; nothing was pruned")
    shipped = report.result(report.shipped)
    speedup = format_speedup(report.speedup, shipped.speedup_se)
    if report.budget.kind == "speedup":
        margin = 100 * (report.speedup / report.budget.value - 1)
        by = f"{abs(margin):.1f} % {'beyond' if margin >= 0 else 'short of'} the budget"
        text = f"{report.shipped} measured {speedup} faster than the unpruned model, {budget}: {by}"
    elif report.budget.kind == "energy_mj" and shipped.latency.energy_mj is not None:
        over = shipped.latency.energy_mj - report.budget.value
        text = (f"{report.shipped} {shipped.latency.energy_mj:.3g} mJ per inference ({shipped.latency.energy}), "
                f"budget {report.budget.describe()}: {abs(over):.3g} mJ {'over' if over > 0 else 'under'}")  # fmt: skip
    else:
        over = shipped.latency.median_ms - report.budget_ms
        text = (f"{report.shipped} median {shipped.latency.median_ms:.3f} ms ({speedup} speedup), {budget}: "
                f"{abs(over):.3f} ms ({100 * abs(over) / report.budget_ms:.1f} %) {'over' if over > 0 else 'under'}")  # fmt: skip
    return Answer(LATENCY, report.latency_met, text)


def _accuracy(report: BuildReport) -> Answer:
    base = report.result("unpruned") if report.results else None
    shipped = _shipped(report)
    if shipped is None:
        return Answer(ACCURACY, None, "nothing was pruned, so no accuracy was lost or judged")
    if base is None or shipped.metric_value is None or base.metric_value is None:
        if report.max_drop is None:
            return Answer(ACCURACY, None, "no held-out data (--data), so no accuracy was measured or judged")
        return Answer(ACCURACY, report.accuracy_met,
                      f"--max-drop {report.max_drop:g} was set but there is no held-out metric to judge it by")  # fmt: skip
    n = shipped.verification.n_samples if shipped.verification else None
    drop = (
        report.accuracy_drop if report.accuracy_drop is not None else (base.metric_value - shipped.metric_value) * 100
    )
    scale = f" on {n} held-out images (one image is {100 / n:.2g} points)" if n else ""
    measured = (f"held-out {shipped.metric} {base.metric_value:.4f} → {shipped.metric_value:.4f} on "
                f"{shipped.latency.runtime}: a drop of {drop:.2f} points{scale}")  # fmt: skip
    if report.max_drop is None:
        return Answer(ACCURACY, None, f"{measured}; no drop was set as a budget (--max-drop none)")
    if not math.isfinite(drop):
        return Answer(ACCURACY, False, f"{measured}; not a finite drop, so --max-drop {report.max_drop:g} is not met")
    by = report.max_drop - drop
    return Answer(ACCURACY, report.accuracy_met,
                  f"{measured}; allowed {report.max_drop:g}: {abs(by):.2f} points {'to spare' if by >= 0 else 'over'}")  # fmt: skip


def _parity(report: BuildReport) -> Answer:
    shipped = _shipped(report)
    if shipped is None:
        return Answer(PARITY, None, "nothing was pruned, exported or verified")
    check = shipped.verification
    if check is None:
        return Answer(PARITY, None, "not checked: the build had no --data to compare outputs on")
    others = [r for r in report.results if r.verification is not None and r.name != shipped.name]
    failing = [r.name for r in others if not r.verification.passed]
    rest = (f"; the other {len(others)} models: " + (f"{', '.join(failing)} failed" if failing else "all passed")
            if others else "")  # fmt: skip
    where = f"{check.runtime} {check.runtime_version} against {check.reference} on {check.n_samples} held-out images"
    if not check.passed:
        return Answer(PARITY, False, f"{shipped.name} on {where}: {'; '.join(check.failures())}{rest}")
    worst = max(check.parity, key=lambda p: p.max_abs_rel_range, default=None)
    detail = (f": max-abs {worst.max_abs:.2g} (tol {worst.tolerance_max_abs:.2g}), worst cosine "
              f"{worst.cosine_min:.6f} (tol {worst.tolerance_cosine})" if worst else "")  # fmt: skip
    metrics = "".join(f"; {m.name} {m.runtime:.4f} vs {m.reference:.4f}" for m in check.metrics)
    return Answer(PARITY, True, f"{shipped.name} on {where}{detail}{metrics}{rest}")


def _measured(report: BuildReport) -> Answer:
    if not report.results:
        return Answer(MEASURED, None, "nothing was measured")
    latency = (_shipped(report) or report.result("unpruned")).latency
    how = f"{latency.runtime} {latency.runtime_version}, {latency.threads} thread(s), {latency.n} timed runs per model"
    if report.emulation:
        return Answer(MEASURED, False, f"{report.emulation} ({how}): the latency verdict does not speak for the "
                                       f"device; build again on the real {report.target.name}")  # fmt: skip
    if not latency.method.startswith("measured"):
        return Answer(MEASURED, False, f"{latency.method} ({how})")
    return Answer(MEASURED, True, f"measured on {report.target.name} ({how}), each model timed interleaved with the "
                                  "unpruned one in one session")  # fmt: skip


def _shipped(report: BuildReport) -> ModelResult | None:
    return next((r for r in report.results if r.name == report.shipped), None)
