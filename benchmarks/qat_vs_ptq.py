"""Quantization-aware training vs post-training quantization of one pruned, fine-tuned model, judged on the
runtime's int8 (held-out top-1 through `verify`, the build's own gate).

Three arms from the same fine-tuned weights, same seed, same fine-tuning split of a finished build, same recipe as
`build --qat-epochs` (SGD + cosine at a tenth of --lr, distillation from the unpruned model):
  ptq        the fine-tuned model, post-training quantized (what a build without --qat-epochs ships)
  fp32+ptq   N more float epochs, then post-training quantized (equal training: is QAT more than more training?)
  qat        N epochs with the runtime's fake quantization, exported from there (build --qat-epochs N)
Writes benchmarks/results/qat_vs_ptq/<name>.json.

    python benchmarks/qat_vs_ptq.py --build edgeprune-runs/accuracy_budget/speedup1.5 --epochs 1 --name resnet56-1.5x
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "qat_vs_ptq"


def main() -> None:
    from edgeprune.backends._quantization import calibration_images
    from edgeprune.backends._registry import get_backend, with_precision
    from edgeprune.build.quantization_aware import LR_SHARE, train_quantization_aware
    from edgeprune.commands import export_model, finetuner, verify_artifact
    from edgeprune.devices.profiles import load_profile, with_runtime
    from edgeprune.models import LoadOptions, load_model
    from edgeprune.models.saved import load_pruned
    from edgeprune.train.finetune import FinetuneRecipe
    from edgeprune.types.build import BuildOptions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, required=True, help="a finished build folder (plan/finetuned, data/)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    options = BuildOptions.from_json(json.dumps(json.loads((args.build / "build.json").read_text())["options"]))
    teacher = load_model(options.model, LoadOptions(weights=options.weights)).module.eval()
    target = with_precision(with_runtime(load_profile("host"), args.runtime), "int8")
    backend = get_backend(args.runtime)
    finetune, validation, holdout = (str(args.build / "data" / s) for s in ("finetune", "validation", "holdout"))
    recipe = FinetuneRecipe(epochs=args.epochs, lr=options.lr * LR_SHARE, seed=options.seed, distill_alpha=0.5)
    arms = {}
    with tempfile.TemporaryDirectory(prefix="edgeprune-qat-") as tmp:
        for arm in ("ptq", "fp32+ptq", "qat"):
            model = load_pruned(args.build / "plan" / "finetuned", named_base=options.model)
            out, started, result = Path(tmp) / arm.replace("+", "_"), time.time(), None
            if arm == "ptq":
                artifact = export_model(model, backend.format, out / "export", "int8", data=finetune)
            elif arm == "fp32+ptq":
                result = finetuner(model)(model, finetune, recipe, copy.deepcopy(teacher), out, None,
                                          validation=validation)  # fmt: skip
                artifact = export_model(model, backend.format, out / "export", "int8", data=finetune)
            else:
                calibration = calibration_images(model, finetune)
                trained, result = train_quantization_aware(model, backend, "int8", calibration, finetune, recipe,
                                                           copy.deepcopy(teacher), out, None, validation=validation)  # fmt: skip
                artifact = backend.export_fake_quantized(model, trained, out / "export", "int8",
                                                         calibration_images=len(calibration), epochs=args.epochs)  # fmt: skip
            verification = verify_artifact(model, target, holdout, out / "verify", artifact_path=str(artifact.path),
                                           threads=1)  # fmt: skip
            metric = verification.metrics[0]
            arms[arm] = {"holdout_top1_int8": metric.runtime, "holdout_top1_pytorch_fp32": metric.reference,
                         "validation_top1_after": list(result.validation) if result else None,
                         "quantization": artifact.quantization, "wall_s": round(time.time() - started, 1)}  # fmt: skip
            print(arm, json.dumps(arms[arm]), flush=True)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=ROOT).stdout.strip(),  # fmt: skip
        "build": str(args.build), "model": options.model, "runtime": args.runtime, "epochs": args.epochs,
        "recipe": recipe.to_dict(), "holdout": holdout, "arms": arms,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
