"""The build's plan stage: solve on the latency table, prune, and measure on the target beside the unpruned model,
round after round, until the measured model is under the budget with headroom."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from edgeprune.build.stages import runtime_format
from edgeprune.latency.compare import compare_latency, comparison_rounds
from edgeprune.models.base import LoadedModel
from edgeprune.plan.planner import LatencyCost, MacsCost, PlanChoice, solve, uniform_choice
from edgeprune.plan.sensitivity import Sensitivity, measure_sensitivity, priced
from edgeprune.plan.structure import Structure, read_structure, realize
from edgeprune.report.records import PlanReport
from edgeprune.types import Artifact, LatencyStats, PrunePlan
from edgeprune.types.build import BuildOptions, PlanRound

MAX_ROUNDS = 5  # solve → prune → measure rounds
MARGIN = 0.07  # the plan aims this far under the budget: medians move 1–12 % between runs on shared machines


def plan_within_budget(model, target, options, base: LatencyStats, base_artifact: Artifact, table, step, calibration,
                       out_dir, progress, sensitivity: Sensitivity | None = None,
                       quantize_on: str | None = None, farm=None) -> PlanReport:  # fmt: skip
    """Solve on the latency table, prune, measure on the target beside the unpruned model; tighten after a miss
    and loosen after a large overshoot, until the measurement is under the budget with headroom (MARGIN/2, or 4
    standard errors when larger; at most MAX_ROUNDS). The met round that lost the least value is kept, one met
    with that headroom first. `sensitivity`: one measured before for this model (a back-off re-plan reuses the
    plan's), else measured here when the options value items by measured damage. `quantize_on`: the images an int8
    round's export calibrates on. With a `farm` (edgeprune.farm.Farm) of n devices, rounds are measured n at a time,
    aimed around the target (batch_aims), each on a device of its own."""
    from edgeprune.commands import export_model
    from edgeprune.models.saved import save_pruned

    budget_ms = options.budget.latency_ms(base)
    structure = read_structure(model, options.criterion, step, data=calibration)
    cost = LatencyCost(table)
    base_predicted = cost.total(structure.uses)
    # The solver takes items until none saves time, so its choice at target 0 is the fastest it can reach,
    # whatever the items' values. Beyond the budget by more than the measurement's spread (MARGIN), no round can
    # meet it: say so now rather than measure, fine-tune and verify models that cannot.
    fastest = solve(structure, cost, 0.0)
    if fastest.predicted * base.median_ms / base_predicted > budget_ms * (1 + MARGIN):
        report = PlanReport(
            options.budget,
            budget_ms,
            base,
            base_predicted,
            fastest,
            (),
            False,
            None,
            layer_ms=_layer_ms(structure, cost, fastest),
            value="nothing: the table ruled the budget out (its fastest reachable model, not built)",
        )
        report.save(out_dir / "plan" / "plan_report.json")
        return report
    if options.value != "measured":
        sensitivity = None
    elif sensitivity is None:
        sensitivity = measure_sensitivity(model, structure, options.criterion, calibration, progress=progress,
                                          data=calibration)  # fmt: skip
    if sensitivity is not None:
        structure = priced(structure, sensitivity)
    # the table's prediction and the measurement differ by a few percent; aim in the table's units
    target_predicted = budget_ms * (1 - MARGIN) * base_predicted / base.median_ms
    rounds: list[PlanRound] = []
    kept = None  # (choice, pruned, prune_plan, safe, k) of the met round that lost the least value, safe ones first
    width = len(farm.devices) if farm is not None else 1  # a farm measures a batch of rounds at once
    while len(rounds) < MAX_ROUNDS:
        aims = batch_aims(target_predicted, min(width, MAX_ROUNDS - len(rounds)))
        candidates = []
        for j, aim in enumerate(aims):
            choice = solve(structure, cost, aim)
            pruned = copy.deepcopy(model)
            prune_plan = realize(pruned, structure, choice.state(), options.criterion, options.reconstruct,
                                 data=calibration)  # fmt: skip
            round_dir = out_dir / "plan" / f"round{len(rounds) + j}"
            artifact = export_model(pruned, runtime_format(target), round_dir, target.precision, data=quantize_on,
                                    target=target, farm=farm)  # fmt: skip
            candidates.append((aim, choice, pruned, prune_plan, artifact))
        names = ["candidate"] if len(aims) == 1 else [f"candidate{j}" for j in range(len(aims))]
        # measured beside the unpruned model in one session (on a farm: each candidate on a device of its own),
        # so a machine that got slower since the profile stage moves both (a speedup budget is judged against
        # this round's unpruned median)
        compared = compare_latency({"unpruned": base_artifact, **{n: c[4] for n, c in zip(names, candidates)}},
                                   target, options, progress, comparison_rounds(base.median_ms, options.runs),
                                   farm=farm)  # fmt: skip
        stop, aims_next = False, []
        for name, (aim, choice, pruned, prune_plan, _) in zip(names, candidates):
            k = len(rounds)
            measured, unpruned_ms = compared.latency[name], compared.latency["unpruned"].median_ms
            speedup, speedup_se = compared.speedup[name], compared.speedup_se[name]
            if options.budget.kind == "speedup":  # judged on the speedup, timed next to the unpruned model
                round_budget = unpruned_ms / options.budget.value
                fraction = options.budget.value / speedup  # of the budget used
            else:
                round_budget = budget_ms
                fraction = measured.median_ms / round_budget  # of the budget used
            predicted_speedup = base_predicted / choice.predicted
            # The verify stage times the plan again, with its own error: a round that only just met the budget
            # fails there half the time. The two measurements differ by √2 standard errors, and by ~1.35x that
            # between agent sessions (measured, 8 sessions): 4 standard errors of headroom cover ~2 sd of the
            # difference.
            headroom = max(MARGIN / 2, 4 * speedup_se)
            safe = fraction <= 1 - headroom
            rounds.append(PlanRound(k, aim, choice.predicted, measured, round_budget, unpruned_ms,
                                    fraction <= 1.0, speedup, speedup_se, predicted_speedup,
                                    predicted_speedup / speedup - 1 if speedup else None, headroom=safe,
                                    headroom_needed=headroom, value_lost=choice.value_lost))  # fmt: skip
            if rounds[-1].met and (kept is None or (safe, -choice.value_lost) > (kept[3], -kept[0].value_lost)):
                kept = (choice, pruned, prune_plan, safe, k)
            slack = fraction < 1 - 3 * MARGIN  # far under: the table overestimated
            if (safe and not slack) or (not rounds[-1].met and not choice.met):
                stop = True  # under the budget with headroom, or the model cannot be pruned further
            # tighten after a miss, loosen after an overshoot: move the target by the measured error
            aims_next.append(aim * (1 - MARGIN) / fraction)
        if stop:
            break
        target_predicted = float(np.median(aims_next))
    if kept is not None:
        choice, pruned, prune_plan, _, k = kept
    prune_plan = _finish_plan(prune_plan, model, options, choice, budget_ms)
    save_pruned(pruned, prune_plan, out_dir / "plan" / "pruned")
    baselines = _baseline_choices(structure, cost, choice, options)
    for name, baseline in baselines.items():
        copy_ = copy.deepcopy(model)
        baseline_plan = realize(copy_, structure, baseline.state(), options.criterion, options.reconstruct,
                                data=calibration)  # fmt: skip
        save_pruned(copy_, _finish_plan(baseline_plan, model, options, baseline, budget_ms),
                    out_dir / "baselines" / name / "pruned")  # fmt: skip
    report = PlanReport(
        options.budget,
        budget_ms,
        base,
        base_predicted,
        choice,
        tuple(rounds),
        kept is not None,
        prune_plan,
        baselines,
        _layer_ms(structure, cost, choice),
        sensitivity.summary() if sensitivity else f"criterion ({options.criterion})",
        sensitivity,
        base_widths={u.name: (u.in_channels, u.out_channels) for u in structure.uses},
        kept_round=k,
    )
    report.save(out_dir / "plan" / "plan_report.json")
    return report


def batch_aims(target: float, n: int) -> list[float]:
    """n table targets measured at once: `target` first (the one a single device would try), then MARGIN steps
    below and above it in turn, since a round's miss is as likely either way (first rounds measured -11 % to +19 %,
    benchmarks/RESULTS.md)."""
    steps = [0] + [s for k in range(1, n) for s in (-k, k)]
    return [target * (1 + MARGIN * s) for s in steps[:n]]


def _layer_ms(structure: Structure, cost: LatencyCost, choice: PlanChoice) -> dict[str, tuple[float, float]]:
    """Each layer's table latency before and after the choice (0 after: removed with a block)."""
    after = {u.name: cost.layer(u) for u in structure.layers(choice.state())}
    return {u.name: (cost.layer(u), after.get(u.name, 0.0)) for u in structure.uses}


def _finish_plan(plan: PrunePlan, model: LoadedModel, options: BuildOptions, choice: PlanChoice,
                 budget_ms: float) -> PrunePlan:  # fmt: skip
    from edgeprune.commands import portable_spec

    return dataclasses.replace(plan, base_model=portable_spec(model.spec), base_fingerprint=model.fingerprint,
                               budget=f"{options.budget.describe()} ({budget_ms:.3f} ms)",
                               predicted_latency_ms=choice.predicted if choice.unit == "ms" else None)  # fmt: skip


def _baseline_choices(structure: Structure, cost: LatencyCost, plan: PlanChoice, options) -> dict[str, PlanChoice]:
    """Uniform: one ratio for every group, as slow as the plan by the table. FLOPs-driven: the same solver with
    MACs as the cost, to the plan's MACs."""
    found = {}
    if "uniform" in options.baselines:
        found["uniform"] = uniform_choice(structure, cost, plan.predicted)
    if "flops" in options.baselines:
        macs = MacsCost()
        plan_macs = macs.total(structure.layers(plan.state()))
        found["flops"] = solve(structure, macs, plan_macs)
    return found
