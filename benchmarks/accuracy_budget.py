"""`edgeprune build` with both budgets: does it ship a model that is faster *and* within the allowed drop?

For each --speedup, runs `edgeprune build --target host --model cifar:resnet56 … --max-drop D --finetune-epochs CAP`
(its own output folder, one latency cache for all), then times the shipped model (bundle/) and the unpruned export
independently of edgeprune: plain ONNX Runtime sessions in this process (only intra_op_num_threads set),
interleaved for --rounds rounds, the speedup being the median of per-round ratios of medians. Records the build's
exit code, wall time, stage times, epochs used, validation and held-out top-1 and its own speedup beside the
independent one, in benchmarks/results/accuracy_budget/<speedup>.json.

    python benchmarks/accuracy_budget.py --speedups 1.5 2 2.5 --cap 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results" / "accuracy_budget"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0, 2.5])
    parser.add_argument("--cap", type=int, default=10, help="--finetune-epochs of each build")
    parser.add_argument("--max-drop", default="1.0")
    parser.add_argument("--model", default="cifar:resnet56")
    parser.add_argument("--weights", default=str(ASSETS / "weights/cifar10_resnet/resnet56-4bfd9763.th"))
    parser.add_argument("--data", default=str(ASSETS / "datasets/cifar10_test_jpg/test"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds of the independent timing")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model per round")
    parser.add_argument("--out", type=Path, default=Path("edgeprune-runs/accuracy_budget"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for speedup in args.speedups:
        out = args.out / f"speedup{speedup:g}"
        command = [sys.executable, "-m", "edgeprune.cli", "build", "--target", "host", "--model", args.model,
                   "--weights", args.weights, "--data", args.data, "--speedup", f"{speedup:g}", "--max-drop",
                   args.max_drop, "--finetune-epochs", str(args.cap), "--threads", str(args.threads),
                   "--out", str(out)]  # fmt: skip
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - started
        report = json.loads((out / "report.json").read_text())
        record = {
            "date": time.strftime("%Y-%m-%d"),
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip(),  # fmt: skip
            "command": " ".join(command[2:]),
            "exit_code": done.returncode,
            "wall_s": round(wall, 1),
            "stage_seconds": report["stage_seconds"],
            "summary": done.stdout.strip().splitlines()[0] if done.stdout.strip() else None,
            "stderr_tail": done.stderr.strip().splitlines()[-1:] if done.returncode else [],
            **_verdict(report),
        }
        if report["shipped"] and (out / "bundle" / "manifest.json").is_file():
            manifest = json.loads((out / "bundle" / "manifest.json").read_text())
            record["independent"] = independent_speedup(out / "export" / "unpruned" / "model.onnx",
                                                        out / "bundle" / manifest["files"][0]["file"],
                                                        args.threads, args.rounds, args.runs)  # fmt: skip
        (RESULTS / f"speedup{speedup:g}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(record, indent=2), flush=True)


def _verdict(report: dict) -> dict:
    results = {r["name"]: r for r in report["results"]}
    recovery = report.get("recovery") or {}
    return {
        "met": report["met"],
        "latency_met": report["latency_met"],
        "accuracy_met": report["accuracy_met"],
        "shipped": report["shipped"],
        "speedup_build": report["speedup"],
        "held_out_top1": {name: r["metric_value"] for name, r in results.items()},
        "held_out_n": next((r["verification"]["n_samples"] for r in results.values() if r.get("verification")), None),
        "accuracy_drop_points": report["accuracy_drop"],
        "original_validation": recovery.get("original_validation"),
        "candidates": [
            {k: c[k] for k in ("name", "budget", "speedup", "validation", "epochs_run", "best_epoch", "meets_drop")}
            for c in recovery.get("candidates", [])
        ],  # fmt: skip
    }


def independent_speedup(unpruned: Path, shipped: Path, threads: int, rounds: int, runs: int) -> dict:
    import onnxruntime as ort
    from _timing import median_ms, ort_session  # benchmarks/, on the path when this file runs as a script

    pair = ort_session(unpruned, threads, warmup=20), ort_session(shipped, threads, warmup=20)
    per_round = []
    for k in range(rounds):
        order = pair if k % 2 == 0 else pair[::-1]
        first, second = (median_ms(*s, runs) for s in order)
        base_ms, shipped_ms = (first, second) if k % 2 == 0 else (second, first)
        per_round.append((base_ms, shipped_ms))
    ratios = [b / s for b, s in per_round]
    return {
        "how": f"plain onnxruntime {ort.__version__} sessions, {threads} threads, {rounds} interleaved rounds of "
        f"{runs} runs each; speedup = median of per-round ratios of medians",
        "unpruned_median_ms": statistics.median(b for b, _ in per_round),
        "shipped_median_ms": statistics.median(s for _, s in per_round),
        "speedup": statistics.median(ratios),
        "speedup_min_max": [min(ratios), max(ratios)],
    }


if __name__ == "__main__":
    main()
