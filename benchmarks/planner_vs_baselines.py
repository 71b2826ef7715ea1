"""The latency planner against the FLOPs-driven baseline on accuracy-vs-latency curves: one `edgeprune build` per
speedup budget (same model, target, runtime, fine-tuning recipe and value model), then every exported model timed
again in one interleaved agent session, so all speedups share one set of conditions.

The FLOPs-driven baseline is the planner's own solver with MACs as the cost, pruned to the plan's MACs; it differs
from the plan only in what it believes costs time. The issue's two comparisons are read off the curves by linear
interpolation between the baseline's points (never extrapolated):
- matched accuracy: the baseline's speedup at the plan's held-out top-1, and the latency ratio
  baseline / plan (the issue's goal: ≥ 1.3×). Where the baseline's curve crosses that accuracy more than once,
  its fastest crossing is used (the comparison least favourable to the plan);
- matched latency: the baseline's top-1 at the plan's speedup, and the difference.

    python benchmarks/planner_vs_baselines.py --out /tmp/pvb [--speedups 1.5,2,2.5] [--epochs 3]
        [--value measured|criterion] [--threads 2]

Rerunning with the same options resumes the builds and only times the models again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgeprune.build import Budget, BuildOptions, build, compare_latency
from edgeprune.devices.profiles import load_profile
from edgeprune.models import LoadOptions, load_model
from edgeprune.progress import NoProgress

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
DATA = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
CYCLES = 12  # interleaved cycles in the final timing (every model in every position 12 times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--speedups", default="1.5,2,2.5")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--value", choices=("measured", "criterion"), default="measured")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    target = load_profile("host")
    model = load_model("cifar:resnet56", LoadOptions(weights=str(WEIGHTS)))
    top1, artifacts, blocks = {}, {}, {}
    for speedup in [float(s) for s in args.speedups.split(",")]:
        options = BuildOptions(model="cifar:resnet56", weights=str(WEIGHTS), target="host", data=str(DATA),
                               budget=Budget("speedup", speedup), value=args.value, finetune_epochs=args.epochs,
                               threads=args.threads, baselines=("flops",), runs=50)  # fmt: skip
        report = build(model, target, options, args.out / f"speedup-{speedup:g}")
        print(report.summary(), flush=True)
        choices = {"plan": report.plan.choice, **report.plan.baselines}
        for result in report.results:
            name = result.name if result.name == "unpruned" else f"{result.name}@{speedup:g}"
            artifacts[name], top1[name] = result.artifact, result.metric_value
            blocks[name] = len(choices[result.name].removed_blocks) if result.name in choices else 0
    options = BuildOptions(model="cifar:resnet56", weights=None, target="host", data=None,
                           budget=Budget("speedup", 2.0), threads=args.threads, runs=50)  # fmt: skip
    timed = compare_latency(artifacts, target, options, NoProgress(), CYCLES * len(artifacts))
    rows = [{"name": name, "speedup": timed.speedup[name], "speedup_relative_se": timed.speedup_se[name],
             "median_ms": timed.latency[name].median_ms, "n": timed.latency[name].n, "top1": top1[name],
             "blocks_removed": blocks[name]} for name in artifacts]  # fmt: skip
    print(f"\n{'model':12} {'speedup':>14} {'median ms':>10} {'blocks':>6} {'top-1':>7}")
    for r in rows:
        print(f"{r['name']:12} {r['speedup']:7.3f} ± {100 * r['speedup_relative_se']:3.1f} % {r['median_ms']:10.3f} "
              f"{r['blocks_removed']:6d} {r['top1'] if r['top1'] is not None else float('nan'):7.4f}")  # fmt: skip
    plan = [(r["speedup"], r["top1"]) for r in rows if r["name"].startswith("plan@")]
    flops = [(r["speedup"], r["top1"]) for r in rows if r["name"].startswith("flops@")]
    matched = [matched_comparisons(point, flops) for point in plan]
    for m in matched:
        print(f"plan {m['plan_speedup']:.3f}× top-1 {m['plan_top1']:.4f}: FLOPs-driven at the same top-1 "
              f"{_fmt(m['flops_speedup_at_plan_top1'], '×')} → latency ratio {_fmt(m['latency_ratio_at_matched_top1'], '×')}; "
              f"at the same speedup top-1 {_fmt(m['flops_top1_at_plan_speedup'])} → plan "
              f"{_fmt(m['top1_gain_at_matched_speedup'], ' pt', 100)}")  # fmt: skip
    summary = {"value": args.value, "epochs": args.epochs, "threads": args.threads, "rounds": timed.rounds,
               "method": timed.latency["unpruned"].method, "rows": rows, "matched": matched}  # fmt: skip
    (args.out / "planner_vs_baselines.json").write_text(json.dumps(summary, indent=2) + "\n")


def matched_comparisons(plan: tuple[float, float], curve: list[tuple[float, float]]) -> dict:
    """The baseline `curve` of (speedup, top-1) points read at the plan point's top-1 and at its speedup."""
    speedup, top1 = plan
    at_top1 = _at_accuracy(curve, top1)
    at_speedup = _at_speedup(curve, speedup)
    return {"plan_speedup": speedup, "plan_top1": top1, "flops_speedup_at_plan_top1": at_top1,
            "latency_ratio_at_matched_top1": speedup / at_top1 if at_top1 else None,
            "flops_top1_at_plan_speedup": at_speedup,
            "top1_gain_at_matched_speedup": top1 - at_speedup if at_speedup is not None else None}  # fmt: skip


def _at_accuracy(curve, top1: float) -> float | None:
    """The fastest speedup at which the piecewise-linear curve has accuracy `top1`; None outside its range."""
    points = sorted(curve)
    found = []
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if min(a0, a1) <= top1 <= max(a0, a1):
            found.append(s0 if a0 == a1 else s0 + (top1 - a0) * (s1 - s0) / (a1 - a0))
    return max(found) if found else None


def _at_speedup(curve, speedup: float) -> float | None:
    points = sorted(curve)
    for (s0, a0), (s1, a1) in zip(points, points[1:]):
        if s0 <= speedup <= s1:
            return a0 if s1 == s0 else a0 + (speedup - s0) * (a1 - a0) / (s1 - s0)
    return None


def _fmt(value: float | None, unit: str = "", scale: float = 1.0) -> str:
    return "outside the baseline's range" if value is None else f"{scale * value:.3f}{unit}"


if __name__ == "__main__":
    main()
