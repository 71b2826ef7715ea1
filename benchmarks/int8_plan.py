"""Plan on the int8 table, or plan on the float table and quantize afterwards? Side by side, in one run, on the host.

Two builds of one model at one speedup budget, same data split and seed, `--finetune-epochs E --max-drop none`:
  int8-planned   `build --runtime R --precision int8`: planned on the runtime's int8 latency table
  fp32-planned   `build --runtime R --precision fp32`: planned on its fp32 table
then the fp32-planned model is quantized as the int8 build quantizes (post-training, the fine-tuning split).
Finally, in one agent session, interleaved: the unpruned int8 model (the reference of the budget), both pruned int8
models, the fp32-planned model and the unpruned model in fp32; and the held-out top-1 of each on the runtime.
(a) which plan meets the int8 budget, and at what accuracy; (b) unpruned int8 vs pruned int8 vs pruned fp32.
Writes benchmarks/results/int8_plan/<name>.json.

    python benchmarks/int8_plan.py --name resnet56-openvino-2x --runtime openvino --speedup 2 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results" / "int8_plan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--speedup", type=float, default=2.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="cifar:resnet56")
    parser.add_argument("--weights", default=str(ASSETS / "weights/cifar10_resnet/resnet56-4bfd9763.th"))
    parser.add_argument("--data", default=str(ASSETS / "datasets/cifar10_test_jpg/test"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", default="", help="more build options for both builds, e.g. '--step 16'")
    parser.add_argument("--out", type=Path, default=Path("edgeprune-runs/int8_plan"))
    args = parser.parse_args()
    builds = {}
    for precision in ("int8", "fp32"):
        out = args.out / args.name / f"{precision}-planned"
        command = [sys.executable, "-m", "edgeprune.cli", "build", "--target", "host", "--model", args.model,
                   "--weights", args.weights, "--data", args.data, "--speedup", f"{args.speedup:g}", "--runtime",
                   args.runtime, "--precision", precision, "--finetune-epochs", str(args.epochs), "--max-drop",
                   "none", "--lut-variants", "0", "--threads", str(args.threads), "--out", str(out),
                   *args.extra.split()]  # fmt: skip
        started = time.time()
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, "EDGEPRUNE_CACHE": str(args.out / args.name / "cache")})  # fmt: skip
        report = json.loads((out / "report.json").read_text())
        builds[precision] = {"out": out, "exit_code": done.returncode, "wall_s": round(time.time() - started, 1),
                             "build_speedup": report["speedup"], "summary": done.stdout.strip().splitlines()[:1]}  # fmt: skip
        print(precision, json.dumps({k: v for k, v in builds[precision].items() if k != "out"}), flush=True)
    record = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "model": args.model, "runtime": args.runtime,
              "speedup_budget": args.speedup, "finetune_epochs": args.epochs, "threads": args.threads,
              "builds": {k: {**v, "out": str(v["out"])} for k, v in builds.items()},
              **_side_by_side(args, builds)}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["models"], indent=2))


def _side_by_side(args, builds) -> dict:
    from edgeprune.backends._registry import with_precision
    from edgeprune.build.stages import weights_dir
    from edgeprune.commands import export_model, verify_artifact
    from edgeprune.devices.profiles import load_profile, with_runtime
    from edgeprune.latency.compare import compare_latency, comparison_rounds
    from edgeprune.models import LoadOptions, load_model
    from edgeprune.models.saved import load_pruned
    from edgeprune.progress import NoProgress
    from edgeprune.types import Artifact

    int8_dir, fp32_dir = builds["int8"]["out"], builds["fp32"]["out"]
    finetune, holdout = str(int8_dir / "data" / "finetune"), str(int8_dir / "data" / "holdout")
    unpruned = load_model(args.model, LoadOptions(weights=args.weights))
    fp32_plan = load_pruned(weights_dir(fp32_dir, "plan"), named_base=args.model)
    fmt = Artifact.load(int8_dir / "export" / "unpruned" / "artifact.json").format
    quantized = export_model(fp32_plan, fmt, args.out / args.name / "fp32-planned-int8", "int8", data=finetune)
    artifacts = {
        "unpruned int8": Artifact.load(int8_dir / "export" / "unpruned" / "artifact.json"),
        "int8-planned int8": Artifact.load(int8_dir / "export" / "plan" / "artifact.json"),
        "fp32-planned int8": quantized,
        "fp32-planned fp32": Artifact.load(fp32_dir / "export" / "plan" / "artifact.json"),
        "unpruned fp32": Artifact.load(fp32_dir / "export" / "unpruned" / "artifact.json"),
    }
    models = {"unpruned int8": unpruned, "int8-planned int8": load_pruned(weights_dir(int8_dir, "plan"), named_base=args.model),
              "fp32-planned int8": fp32_plan, "fp32-planned fp32": fp32_plan, "unpruned fp32": unpruned}  # fmt: skip
    host = with_runtime(load_profile("host"), args.runtime)
    timing = SimpleNamespace(runs=50, warmup=10, threads=args.threads)  # what compare_latency reads of BuildOptions
    compared = compare_latency(artifacts, with_precision(host, "int8"), timing, NoProgress(),
                               comparison_rounds(1.0, timing.runs))  # fmt: skip
    result = {}
    for name, artifact in artifacts.items():
        target = with_precision(host, artifact.precision)
        check = verify_artifact(models[name], target, holdout, args.out / args.name / "verify" / name.replace(" ", "-"),
                                artifact_path=str(artifact.path), threads=args.threads)  # fmt: skip
        metric = check.metrics[0]
        result[name] = {"precision": artifact.precision, "quantization": artifact.quantization,
                        "median_ms": compared.latency[name].median_ms, "speedup_vs_unpruned_int8":
                        compared.speedup[name], "speedup_se": compared.speedup_se[name],
                        "meets_int8_budget": compared.speedup[name] >= args.speedup,
                        "holdout_top1_runtime": metric.runtime, "holdout_top1_pytorch": metric.reference}  # fmt: skip
    return {"models": result, "timing": compared.latency["unpruned int8"].method}


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()  # fmt: skip


if __name__ == "__main__":
    main()
