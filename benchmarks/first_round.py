"""Does the latency table's first plan land? Predicted vs measured speedup of the planner's own picks.

For each --speedup, runs `edgeprune build --target host --model M --speedup S --finetune-epochs 0 --max-drop none`
(its own output folder, one latency cache for all, so the table is measured once) and reads its plan_report.json:
for every plan round the table's predicted speedup (its unpruned prediction / its prediction for the pick) against
the speedup the round measured interleaved with the unpruned model, and how many rounds the build used. Writes
benchmarks/results/first_round/<name>.json; the issue's goal is every first round within ±10 % and ≤ 1.5 rounds on
average.

    python benchmarks/first_round.py --name resnet56-ort-fp32 --speedups 1.5 2 2.5
    python benchmarks/first_round.py --name yolov3-tiny-ort-fp32 --model yolov3-tiny.yaml --weights '' --data ''
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results" / "first_round"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the results file's name")
    parser.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0, 2.5])
    parser.add_argument("--model", default="cifar:resnet56")
    parser.add_argument("--weights", default=str(ASSETS / "weights/cifar10_resnet/resnet56-4bfd9763.th"))
    parser.add_argument("--data", default=str(ASSETS / "datasets/cifar10_test_jpg/test"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", default="", help="more build options, e.g. '--runtime openvino --precision int8'")
    parser.add_argument("--out", type=Path, default=Path("edgeprune-runs/first_round"))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = args.out / args.name / "cache"
    builds = []
    for speedup in args.speedups:
        out = args.out / args.name / f"speedup{speedup:g}"
        command = [sys.executable, "-m", "edgeprune.cli", "build", "--target", "host", "--model", args.model,
                   "--speedup", f"{speedup:g}", "--finetune-epochs", "0", "--max-drop", "none", "--lut-variants",
                   "0", "--threads", str(args.threads), "--out", str(out), *args.extra.split()]  # fmt: skip
        command += ["--weights", args.weights] if args.weights else []
        command += ["--data", args.data] if args.data else []
        started = time.time()
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "EDGEPRUNE_CACHE": str(cache)}
        )
        wall = time.time() - started
        report = out / "plan" / "plan_report.json"
        plan = json.loads(report.read_text()) if report.is_file() else {"rounds": []}  # none: the build failed early
        rounds = [{"round": r["round"], "predicted_speedup": r["predicted_speedup"], "measured_speedup": r["speedup"],
                   "speedup_se": r["speedup_se"], "error": r["prediction_error"], "met": r["met"]}
                  for r in plan["rounds"]]  # fmt: skip
        builds.append({"speedup": speedup, "exit_code": done.returncode, "wall_s": round(wall, 1),
                       "stderr_tail": done.stderr.strip().splitlines()[-1:] if done.returncode else [],
                       "rounds_used": len(rounds), "rounds": rounds})  # fmt: skip
        print(json.dumps(builds[-1]), flush=True)
    firsts = [b["rounds"][0]["error"] for b in builds if b["rounds"]]
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),  # fmt: skip
        "model": args.model,
        "extra": args.extra,
        "threads": args.threads,
        "builds": builds,
        "first_round_errors": firsts,
        "all_first_within_10pct": all(abs(e) <= 0.10 for e in firsts) and len(firsts) == len(builds),
        "mean_rounds": statistics.mean(b["rounds_used"] for b in builds),
    }
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "builds"}, indent=2))


if __name__ == "__main__":
    main()
