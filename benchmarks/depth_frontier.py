"""What does a trained network of a given size score? The CIFAR ResNet family as a frontier for pruned ResNet-56.

A pruned ResNet-56 that keeps 9 of its 27 residual blocks is a ResNet-20 in depth and MACs. The family's own
checkpoints (ResNet-20/32/44/56, each trained on all 50,000 CIFAR-10 training images) say what such a network
scores when it is trained as well as the original was; a few CPU epochs on 6,400 images can hardly do better.
Each depth is exported as a build exports it (post-training int8 calibrated on the build's fine-tuning split, and
fp32), all timed interleaved in one agent session (speedups over ResNet-56 at the same precision), and scored on
the build's held-out split (the same per-class split `build` makes) on the runtime. Writes
benchmarks/results/depth_frontier/<name>.json.

    python benchmarks/depth_frontier.py --name openvino-1thread --runtime openvino --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
RESULTS = ROOT / "benchmarks" / "results" / "depth_frontier"
CHECKPOINTS = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
               56: "resnet56-4bfd9763.th"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--precisions", default="int8,fp32")
    parser.add_argument("--data", default=str(ASSETS / "datasets/cifar10_test_jpg/test"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("edgeprune-runs/depth_frontier"))
    args = parser.parse_args()

    from edgeprune.backends._registry import with_precision
    from edgeprune.build.data import split_data
    from edgeprune.build.stages import runtime_format
    from edgeprune.commands import export_model, verify_artifact
    from edgeprune.devices.profiles import load_profile, with_runtime
    from edgeprune.latency.compare import compare_latency, comparison_rounds
    from edgeprune.models import LoadOptions, load_model
    from edgeprune.progress import NoProgress

    out = args.out / args.name
    host = with_runtime(load_profile("host"), args.runtime)
    weights = ASSETS / "weights" / "cifar10_resnet"
    models = {depth: load_model(f"cifar:resnet{depth}", LoadOptions(weights=str(weights / name)))
              for depth, name in CHECKPOINTS.items()}  # fmt: skip
    splits = split_data(models[56], args.data, out / "data")
    record = {"date": time.strftime("%Y-%m-%d"), "commit": _commit(), "runtime": args.runtime,
              "threads": args.threads, "holdout": splits.holdout, "precisions": {}}  # fmt: skip
    for precision in args.precisions.split(","):
        target = with_precision(host, precision)
        fmt = runtime_format(target)
        calibration = splits.finetune if precision == "int8" else None
        artifacts = {
            depth: export_model(
                models[depth], fmt, out / precision / f"resnet{depth}", precision, data=calibration, target=target
            )  # fmt: skip
            for depth in sorted(CHECKPOINTS, reverse=True)
        }
        timing = SimpleNamespace(runs=50, warmup=10, threads=args.threads)  # what compare_latency reads
        compared = compare_latency({f"resnet{d}": a for d, a in artifacts.items()}, target, timing, NoProgress(),
                                   comparison_rounds(1.0, timing.runs))  # fmt: skip
        rows = {}
        for depth, artifact in artifacts.items():
            check = verify_artifact(models[depth], target, splits.holdout, out / "verify" / f"{precision}-{depth}",
                                    artifact_path=str(artifact.path), threads=args.threads)  # fmt: skip
            name = f"resnet{depth}"
            rows[name] = {"median_ms": compared.latency[name].median_ms, "speedup_vs_resnet56": compared.speedup[name],
                          "speedup_se": compared.speedup_se[name], "holdout_top1_runtime": check.metrics[0].runtime,
                          "holdout_top1_pytorch": check.metrics[0].reference, "quantization": artifact.quantization}  # fmt: skip
            print(precision, name, json.dumps(rows[name]), flush=True)
        record["precisions"][precision] = {"models": rows, "timing": compared.latency["resnet56"].method}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")


def _commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()  # fmt: skip


if __name__ == "__main__":
    main()
