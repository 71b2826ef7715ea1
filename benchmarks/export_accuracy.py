"""ResNet-56 (akamaster checkpoint), unpruned and pruned, exported to OpenVINO fp32/int8 and TFLite fp32/int8:
held-out top-1 on the runtime vs PyTorch, and host latency of each (batch 1, timed interleaved) side by side — issue 7's acceptance.

Data: the CIFAR-10 test JPEGs split per class as in resnet56_prune_finetune.py: int8 is calibrated on the first 800
images per class (its first --calibration images, spread over the classes), accuracy is measured on the held-out
200 per class. Every runtime runs through edgeprune's own pipeline (export_model, verify_artifact, the agent's
bench), so this measures what the CLI does.

    python benchmarks/export_accuracy.py --out benchmarks/results/export_accuracy [--limit N] [--threads T]
                                         [--pruned DIR]

--pruned: a pruned ResNet-56 saved by edgeprune (`edgeprune prune ... --out DIR`: DIR/pruned or DIR/finetuned), e.g.
    edgeprune prune --model cifar:resnet56 --weights W --ratio 0.3 --blocks 3 --data D --finetune-epochs 2 --out P
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from pathlib import Path

import torch

from edgeprune.commands import export_model, verify_artifact
from edgeprune.devices.profiles import load_profile, with_runtime
from edgeprune.models import LoadOptions, load_model
from edgeprune.prune.channels import count_macs_params
from edgeprune.verify.data import ImageFolder

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
DATA = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
VARIANTS = (
    ("onnx", "onnxruntime", "fp32"),
    ("openvino", "openvino", "fp32"),
    ("openvino", "openvino", "int8"),
    ("tflite", "tflite", "fp32"),
    ("tflite", "tflite", "int8"),
)


def split_folders(root: Path, per_class: int = 800) -> tuple[Path, Path]:
    """The calibration and held-out splits as ImageFolder trees of symlinks (verify and export read folders)."""
    calibration, held_out = ImageFolder.scan(DATA).split(per_class)
    folders = []
    for name, part in (("calibration", calibration), ("held_out", held_out)):
        for path, _ in part.samples:
            link = root / name / path.parent.name / path.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(path)
        folders.append(root / name)
    return folders[0], folders[1]


def interleaved_latency(benched: list[tuple[Path, str]], rounds: int, runs: int, threads: int) -> list[dict]:
    """Every (model file, runtime) timed `rounds` times in turn in one agent session, so the machine's slow spells
    (seconds long here) fall on all of them: the median of each model's round medians, and its p90 over all runs."""
    import numpy as np

    from edgeprune.devices.agent_client import AgentSession
    from edgeprune.devices.transport import LocalTransport
    from edgeprune.latency.compare import round_median, timed_rounds

    models = {str(i): (Path(path), runtime) for i, (path, runtime) in enumerate(benched)}
    medians: dict[str, list[float]] = {name: [] for name in models}
    timings: dict[str, list[float]] = {name: [] for name in models}
    with AgentSession(LocalTransport()) as agent:
        timed = timed_rounds(agent, models, threads=threads, warmup=10, runs=runs, turn=False)
        for _ in range(rounds):
            for name, result in next(timed).items():
                medians[name].append(round_median(result))
                timings[name] += result.timings_ms
    return [{"latency_median_ms": float(np.median(medians[name])),
             "latency_p90_ms": float(np.percentile(timings[name], 90)),
             "latency_method": f"local agent, {rounds} interleaved rounds x {runs} runs (10 warm-up), {threads} "
                               "threads; median of round medians, p90 of all runs"}
            for name in models]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_accuracy"))
    parser.add_argument("--limit", type=int, default=None, help="held-out images to score (default: all 2000)")
    parser.add_argument("--calibration", type=int, default=256, help="calibration images for int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model per round")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved latency rounds")
    parser.add_argument("--pruned", type=Path, help="a saved pruned ResNet-56 directory, for the pruned rows")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model("cifar:resnet56", LoadOptions(weights=str(WEIGHTS)))
    work = Path(tempfile.mkdtemp(prefix="edgeprune-bench-"))
    try:
        calibration_dir, held_out_dir = split_folders(work)
        if args.calibration:
            calib_subset = work / "calib_subset"
            for path, _ in ImageFolder.scan(calibration_dir).subset(args.calibration).samples:
                (calib_subset / path.parent.name).mkdir(parents=True, exist_ok=True)
                (calib_subset / path.parent.name / path.name).symlink_to(path.resolve())
            calibration_dir = calib_subset
        models = {"unpruned": model}
        if args.pruned:
            from edgeprune.models.saved import load_pruned

            models["pruned"] = load_pruned(args.pruned)
        rows, benched = [], []
        for (label, subject), (fmt, runtime, precision) in itertools.product(models.items(), VARIANTS):
            out = args.out / label / f"{fmt}_{precision}"
            artifact = export_model(
                subject, fmt, out, precision, data=str(calibration_dir) if precision == "int8" else None
            )
            target = with_runtime(load_profile("host"), runtime)
            result = verify_artifact(
                subject,
                target,
                str(held_out_dir),
                out,
                artifact_path=str(artifact.path),
                threads=args.threads,
                limit=args.limit,
            )
            top1 = next(m for m in result.metrics if m.name == "top1")
            rows.append(
                {
                    "model": label,
                    "macs": count_macs_params(subject)[0],
                    "format": fmt,
                    "precision": precision,
                    "runtime": f"{runtime} {result.runtime_version}",
                    "top1_pytorch": top1.reference,
                    "top1_runtime": top1.runtime,
                    "delta_pt": 100 * top1.delta,
                    "tolerance_pt": 100 * top1.tolerance,
                    "passed": bool(result),
                    "max_abs": result.parity[0].max_abs,
                    "cosine_min": result.parity[0].cosine_min,
                    "cosine_mean": result.parity[0].cosine_mean,
                    "n_images": result.n_samples,
                    "threads": args.threads,
                }
            )
            benched.append((artifact.path, runtime))
            print(json.dumps(rows[-1]), flush=True)
        for row, latency in zip(rows, interleaved_latency(benched, args.rounds, args.runs, args.threads)):
            row.update(latency)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\n{'model':<9}{'format':<9}{'prec':<6}{'top1 torch':>11}{'top1 rt':>9}{'Δ pt':>7}{'ms p50':>8}  pass")
        for r in rows:
            print(
                f"{r['model']:<9}{r['format']:<9}{r['precision']:<6}{r['top1_pytorch']:>11.4f}{r['top1_runtime']:>9.4f}"
                f"{r['delta_pt']:>7.2f}{r['latency_median_ms']:>8.2f}  {r['passed']}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
