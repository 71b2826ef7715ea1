"""The verdict block's answers, from the records: a real small build's report.json (tests/data, ResNet-20 on the
host, 20 held-out images) altered field by field into builds that meet everything, miss latency,
miss accuracy, fail parity, were emulated, had no accuracy budget or were ruled out at the plan stage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeprune.latency.lut import LutReport
from edgeprune.report import write_html
from edgeprune.report.records import BuildReport
from edgeprune.report.verdict import ACCURACY, LATENCY, MEASURED, PARITY, verdict
from edgeprune.types import Budget

DATA = Path(__file__).parent / "data"
REPORT = DATA / "report_resnet20_small_build.json"


@pytest.fixture(scope="module")
def real() -> BuildReport:
    report = BuildReport.load(REPORT)
    assert report.plan.rounds and report.result(report.shipped).verification.passed
    return report


def _shipped(report: BuildReport, **changes) -> BuildReport:
    """`report` with the shipped model's result changed."""
    results = tuple(dataclasses.replace(r, **changes) if r.name == report.shipped else r for r in report.results)
    return dataclasses.replace(report, results=results)


def meets_everything(r: BuildReport) -> BuildReport:
    r = _shipped(r, speedup=r.budget.value * 1.05)
    return dataclasses.replace(r, speedup=r.budget.value * 1.05, latency_met=True, max_drop=1.0, accuracy_drop=0.5,
                               accuracy_met=True, met=True)  # fmt: skip


def misses_latency(r: BuildReport) -> BuildReport:
    r = dataclasses.replace(meets_everything(r), speedup=r.budget.value * 0.9, latency_met=False, met=False)
    return _shipped(r, speedup=r.budget.value * 0.9)


def misses_accuracy(r: BuildReport) -> BuildReport:
    return dataclasses.replace(meets_everything(r), accuracy_drop=3.0, accuracy_met=False, met=False)


def no_accuracy_budget(r: BuildReport) -> BuildReport:
    return dataclasses.replace(meets_everything(r), max_drop=None, accuracy_met=None)


def emulated(r: BuildReport) -> BuildReport:
    label = "emulated: qemu-aarch64 user mode on x86_64"
    results = tuple(dataclasses.replace(x, latency=dataclasses.replace(x.latency, emulation=label)) for x in r.results)
    return dataclasses.replace(meets_everything(r), results=results)


def fails_parity(r: BuildReport) -> BuildReport:
    r = meets_everything(r)
    check = r.result(r.shipped).verification
    output = dataclasses.replace(check.parity[0], max_abs=0.5, passed=False)
    return _shipped(r, verification=dataclasses.replace(check, parity=(output,), passed=False))


def over_a_latency_budget(r: BuildReport) -> BuildReport:
    r = meets_everything(r)
    median = r.result(r.shipped).latency.median_ms
    return dataclasses.replace(r, budget=Budget("latency_ms", round(median * 0.8, 4)), budget_ms=round(median * 0.8, 4),
                               latency_met=False, met=False)  # fmt: skip


def ruled_out(r: BuildReport) -> BuildReport:
    plan = dataclasses.replace(r.plan, rounds=(), met=False, prune_plan=None)
    return dataclasses.replace(r, plan=plan, results=(r.result("unpruned"),), latency_met=False, accuracy_met=None,
                               accuracy_drop=None, met=False, recovery=None)  # fmt: skip


CASES = {
    # alteration: (ship, {question: answer}, words in that answer)
    meets_everything: (True, {LATENCY: True, ACCURACY: True, PARITY: True, MEASURED: True},
                       {LATENCY: "5.0 % beyond the budget", ACCURACY: "0.50 points to spare"}),
    misses_latency: (False, {LATENCY: False, ACCURACY: True}, {LATENCY: "10.0 % short of the budget"}),
    misses_accuracy: (False, {LATENCY: True, ACCURACY: False}, {ACCURACY: "2.00 points over"}),
    no_accuracy_budget: (True, {ACCURACY: None}, {ACCURACY: "no drop was set as a budget"}),
    emulated: (False, {LATENCY: True, MEASURED: False}, {MEASURED: "emulated: qemu-aarch64"}),
    fails_parity: (False, {PARITY: False}, {PARITY: "max-abs 0.5"}),
    over_a_latency_budget: (False, {LATENCY: False}, {LATENCY: "ms (25.0 %) over"}),
    ruled_out: (False, {LATENCY: False, ACCURACY: None, PARITY: None}, {LATENCY: "nothing was pruned"}),
}  # fmt: skip


@pytest.mark.parametrize("alter", CASES, ids=lambda f: f.__name__)
def test_each_answer_follows_the_records(real, alter):
    ship, expected, words = CASES[alter]
    judged = verdict(alter(real))
    answers = {a.question: a for a in judged.answers}
    assert judged.ship is ship
    assert judged.headline.startswith("Ship it" if ship else "Do not ship yet")
    for question, ok in expected.items():
        assert answers[question].ok is ok, answers[question]
    for question, word in words.items():
        assert word in answers[question].text, answers[question].text


def test_the_real_builds_answers_carry_its_numbers(real):
    answers = {a.question: a for a in verdict(real).answers}
    plan, base = real.result(real.shipped), real.result("unpruned")
    assert f"{real.speedup:.2f}×" in answers[LATENCY].text and real.budget.describe() in answers[LATENCY].text
    assert f"{base.metric_value:.4f} → {plan.metric_value:.4f}" in answers[ACCURACY].text
    assert f"on {plan.verification.n_samples} held-out images" in answers[ACCURACY].text
    assert plan.verification.runtime in answers[PARITY].text and answers[MEASURED].ok is True


def test_the_page_puts_the_verdict_first_and_escapes_what_it_quotes(real, tmp_path):
    hostile = dataclasses.replace(misses_accuracy(real), model="python:<script>alert(1)</script>")
    page = write_html(hostile, LutReport.load(DATA / "lut_resnet20_small_build.json"), tmp_path / "r.html").read_text()
    assert page.index("Can I ship this?") < page.index("Every model measured") < page.index("Plan rounds")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Do not ship yet: the accuracy drop is over the allowed one." in page
