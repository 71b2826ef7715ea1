"""ThiNet and least-squares reconstruction vs plain L1, ResNet-56: half of every block's inner channels removed.

The block-inner channels (each basic block's conv1 outputs, read only by its conv2) of the CIFAR ResNet-56 are cut
to half by each method, same data, same seed: `l1`, `l1` + `--reconstruct`, `thinet`, `thinet` + `--reconstruct`.
Each is scored on the build's 2,000-image held-out split (CIFAR-10 test JPEGs, PyTorch, top-1) before any
fine-tuning and after `--epochs` epochs of the build's fine-tuning recipe (SGD + cosine, distilled from the unpruned
model) on the build's fine-tuning split; criteria and refits see the 256 calibration images the commands use.
Writes benchmarks/results/reconstruction.json.

    python benchmarks/reconstruction.py [--epochs 3] [--out /tmp/reconstruction]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time
from pathlib import Path

import torch
from _heldout import ASSETS, CIFAR_TEST, images, top1  # benchmarks/, on the path when this file runs as a script

from edgeprune.build.data import split_data
from edgeprune.commands import calibration_batches, finetuner
from edgeprune.models import LoadOptions, load_model
from edgeprune.progress import NoProgress
from edgeprune.prune.channels import count_macs_params, prune_channels_to
from edgeprune.prune.reconstruct import refit_after_pruning
from edgeprune.train.finetune import BUILD_DISTILL_ALPHA, FinetuneRecipe

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
RESULT = ROOT / "benchmarks" / "results" / "reconstruction.json"
METHODS = (("l1", False), ("l1", True), ("thinet", False), ("thinet", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/reconstruction"))
    parser.add_argument(
        "--methods",
        default=",".join(_name(*m) for m in METHODS),
        help="comma list of the methods to run, e.g. 'l1 + reconstruct,thinet'",
    )
    parser.add_argument("--result", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = load_model("cifar:resnet56", LoadOptions(weights=str(WEIGHTS)))
    splits = split_data(base, str(CIFAR_TEST), args.out / "data")
    holdout = images(base, splits.holdout)
    calibration = calibration_batches(base, splits.finetune)
    widths = {f"{name}.conv1": layer.conv1.out_channels // 2 for name, layer in base.module.named_modules()
              if name.count(".") == 1 and hasattr(layer, "conv1")}  # fmt: skip
    rows = [{"method": "unpruned", "top1_before_finetune": top1(base, holdout), "macs": count_macs_params(base)[0]}]
    print(rows[0], flush=True)
    for criterion, refit in [m for m in METHODS if _name(*m) in args.methods.split(",")]:
        model = copy.deepcopy(base)
        started = time.monotonic()
        before = copy.deepcopy(model)
        plan = prune_channels_to(model, widths, criterion, data=calibration)
        refits = refit_after_pruning(before, model, plan, calibration) if refit else []
        seconds = time.monotonic() - started
        row = {"method": _name(criterion, refit), "prune_seconds": round(seconds, 1),
               "macs": count_macs_params(model)[0], "top1_before_finetune": top1(model, holdout),
               "refit_error": [[r.name, round(r.error_before, 4), round(r.error_after, 4)] for r in refits]}  # fmt: skip
        recipe = FinetuneRecipe(epochs=args.epochs, distill_alpha=BUILD_DISTILL_ALPHA, seed=0)
        teacher = copy.deepcopy(base.module).eval()
        finetuner(model)(model, splits.finetune, recipe, teacher, args.out / row["method"].replace(" ", ""),
                         NoProgress(), device="cpu")  # fmt: skip
        row["top1_after_finetune"] = top1(model, holdout)
        rows.append(row)
        print({k: v for k, v in row.items() if k != "refit_error"}, flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(), "model": "cifar:resnet56",
              "pruned": "every block's conv1 output channels to half (27 groups), nothing else",
              "holdout_images": len(holdout[1]), "calibration_images": int(sum(len(b[0]) for b in calibration)),
              "finetune_epochs": args.epochs, "rows": rows}  # fmt: skip
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(record, indent=2) + "\n")


def _name(criterion: str, refit: bool) -> str:
    return criterion + (" + reconstruct" if refit else "")


if __name__ == "__main__":
    main()
