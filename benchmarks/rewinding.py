"""Lottery-ticket rewinding vs fine-tuning at equal epochs, ResNet-20 trained here from scratch.

ResNet-20 is trained from random weights for `--train-epochs` on the build's fine-tuning split of the CIFAR-10 test
JPEGs (the training set is not in the assets), keeping its weights after `--rewind-epoch` epochs (what `edgeprune
train --rewind-to` does). Half of every layer's channels are then removed by L1 (same pruning for both arms), and
the pruned network is given `--epochs` more epochs either way:
- fine-tuning: from the trained weights, at the fine-tuning learning rate (0.01, cosine);
- rewinding (Renda et al. 2020): the surviving weights set back to the early checkpoint's (`prune --rewind`), then
  retrained at the training learning rate (`--lr`, cosine).
Held-out top-1 on the build's 2,000-image held-out split (PyTorch). One run each (one seed). Writes
benchmarks/results/rewinding.json.

    python benchmarks/rewinding.py [--train-epochs 12] [--rewind-epoch 1] [--epochs 8] [--out /tmp/rewinding]
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import time
from pathlib import Path

import torch
from _heldout import CIFAR_TEST, images, top1  # benchmarks/, on the path when this file runs as a script

from edgeprune.build.data import split_data
from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import replay_plan
from edgeprune.prune.channels import prune_channels
from edgeprune.train.data import ImageSamples
from edgeprune.train.finetune import FinetuneRecipe, finetune_classifier
from edgeprune.verify.data import ImageFolder

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "rewinding.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-epochs", type=int, default=12)
    parser.add_argument("--rewind-epoch", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--images", type=int, help="train on this many images of the split, spread over the classes")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rewinding"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model("cifar:resnet20")  # random weights
    splits = split_data(model, str(CIFAR_TEST), args.out / "data")
    holdout = images(model, splits.holdout)
    folder = ImageFolder.scan(splits.finetune, model.class_names).subset(args.images)
    train = ImageSamples(folder, model.preprocessing)
    norm = {"mean": model.preprocessing.mean, "std": model.preprocessing.std, "progress": None, "device": "cpu"}
    rewind_path = args.out / f"rewind-epoch{args.rewind_epoch}.safetensors"
    started = time.monotonic()
    finetune_classifier(model.module, train, FinetuneRecipe(epochs=args.train_epochs, lr=args.lr, seed=0),
                        snapshots={args.rewind_epoch: rewind_path}, **norm)  # fmt: skip
    row = {"trained_top1": top1(model, holdout), "train_seconds": round(time.monotonic() - started)}
    print(row, flush=True)
    pruned = copy.deepcopy(model)
    plan = prune_channels(pruned, args.ratio, "l1")
    row["pruned_top1_before_retraining"] = top1(pruned, holdout)
    arms = {}
    for arm, lr in (("fine-tuning", 0.01), ("rewinding", args.lr)):
        work = copy.deepcopy(pruned)
        if arm == "rewinding":
            early = load_model("cifar:resnet20", LoadOptions(weights=str(rewind_path)))
            replay_plan(early, plan)
            work.module.load_state_dict(early.module.state_dict())
            row["rewound_top1_before_retraining"] = top1(work, holdout)
        finetune_classifier(work.module, train, FinetuneRecipe(epochs=args.epochs, lr=lr, seed=0), **norm)
        arms[arm] = {"lr": lr, "top1": top1(work, holdout)}
        print(arm, arms[arm], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(), "model": "cifar:resnet20",
              "train_images": len(train), "holdout_images": len(holdout[1]), "train_epochs": args.train_epochs,
              "train_lr": args.lr, "rewind_epoch": args.rewind_epoch, "channel_ratio": args.ratio, "criterion": "l1",
              "retrain_epochs": args.epochs, **row, "arms": arms, "runs": "one each, seed 0"}  # fmt: skip
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
