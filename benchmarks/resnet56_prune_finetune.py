"""ResNet-56 (akamaster checkpoint) on the CIFAR-10 test JPEGs, split per class into 800 fine-tune / 200 held-out
images: prune ≥ 50 % of the MACs, fine-tune, and compare held-out top-1 with the unpruned model fine-tuned with
the same recipe (same epochs, schedule, augmentation, distillation from the unpruned checkpoint).

The acceptance result (benchmarks/RESULTS.md) is the 40-epoch pair:

    python benchmarks/resnet56_prune_finetune.py --mode baseline --epochs 40 --tag _e40 --out /tmp/r56
    python benchmarks/resnet56_prune_finetune.py --mode planned --macs-kept 0.48 --epochs 40 --tag _macs48_e40 --out /tmp/r56

Other modes, with the default 20 epochs:

    python benchmarks/resnet56_prune_finetune.py --mode baseline --out /tmp/r56
    python benchmarks/resnet56_prune_finetune.py --mode pruned --ratio 0.55 --blocks 4 --out /tmp/r56
    python benchmarks/resnet56_prune_finetune.py --mode planned --macs-kept 0.48 --out /tmp/r56
    python benchmarks/resnet56_prune_finetune.py --mode gradual --macs-kept 0.48 --prune-epochs 0,2,4,6 --out /tmp/r56

--mode planned lets the planner's solver choose per-group widths and blocks to keep that share of the conv MACs,
each item valued by its output damage measured on 256 fine-tune images (edgeprune/plan/sensitivity.py).
--mode gradual does the same in steps at the start of the listed epochs of the same recipe, measuring the
damages again on the partly fine-tuned model each time (gradual pruning, Zhu & Gupta 2017): the pruned model gets
exactly the unpruned model's epochs, schedule and data, and reaches its final width at the last listed epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgeprune.models import LoadOptions, load_model
from edgeprune.train.data import ImageSamples
from edgeprune.train.finetune import FinetuneRecipe, evaluate_top1, finetune_classifier
from edgeprune.verify.data import ImageFolder, load_image

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
DATA = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
RECIPE = FinetuneRecipe(
    epochs=20,
    batch_size=128,
    lr=0.01,
    momentum=0.9,
    weight_decay=5e-4,
    crop_padding=4,
    flip=True,
    distill_alpha=0.5,
    distill_temperature=4.0,
    seed=0,
)


def load_split(preprocessing):
    """The fine-tune and held-out splits, streamed (decoded as they are read), and the first 256 fine-tune images
    as the batch that criteria and measured values read."""
    finetune, held_out = ImageFolder.scan(DATA).split(800)
    first = finetune.samples[:256]
    calibration = (torch.from_numpy(np.stack([load_image(path, preprocessing) for path, _ in first])),
                   torch.tensor([label for _, label in first]))  # fmt: skip
    return ImageSamples(finetune, preprocessing), ImageSamples(held_out, preprocessing), [calibration]


def macs(module) -> int:
    import torch_pruning as tp

    return int(tp.utils.count_ops_and_params(module, torch.zeros(1, 3, 32, 32))[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["baseline", "pruned", "planned", "gradual"], required=True)
    parser.add_argument("--macs-kept", type=float, default=0.48, help="share of conv MACs kept, --mode planned")
    parser.add_argument("--step", type=int, default=4, help="channel step, --mode planned")
    parser.add_argument(
        "--stages",
        type=int,
        default=1,
        help="--mode planned: reach --macs-kept in this many equal steps, measuring again after each",
    )
    parser.add_argument(
        "--prune-epochs", default="0,2,4,6", help="--mode gradual: epochs that start with a pruning step"
    )
    parser.add_argument("--ratio", type=float, default=0.55, help="channel ratio for --mode pruned")
    parser.add_argument("--blocks", type=int, default=0, help="residual blocks removed for --mode pruned")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--epochs", type=int, default=RECIPE.epochs, help="fine-tuning epochs (both models must match)")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model("cifar:resnet56", LoadOptions(weights=str(WEIGHTS)))
    teacher = load_model("cifar:resnet56", LoadOptions(weights=str(WEIGHTS))).module
    finetune, held_out, batches = load_split(model.preprocessing)
    macs_before = macs(model.module)
    plan, before_epoch, steps = None, None, []
    if args.mode == "pruned":
        from edgeprune.prune.channels import prune_channels
        from edgeprune.prune.depth import remove_blocks

        if args.blocks:
            remove_blocks(model, n=args.blocks)
        plan = prune_channels(model, args.ratio, args.criterion, data=batches)
    elif args.mode == "planned":
        plan = planned(model, args, batches)
    elif args.mode == "gradual":
        before_epoch = gradual(model, args, batches, steps)
    before = evaluate_top1(model.module, held_out, device=args.device)
    started = time.time()
    recipe = replace(RECIPE, epochs=args.epochs)
    finetuned = finetune_classifier(
        model.module,
        finetune,
        recipe,
        mean=model.preprocessing.mean,
        std=model.preprocessing.std,
        teacher=teacher,
        before_epoch=before_epoch,
        device=args.device,
    )
    macs_after = macs(model.module)
    blocks = sum(len(step["removed_blocks"]) for step in steps) if steps else len(plan.removed_blocks) if plan else 0
    result = {
        "mode": args.mode,
        "ratio": args.ratio if args.mode == "pruned" else None,
        "blocks": blocks,
        "macs_kept_target": args.macs_kept if args.mode in ("planned", "gradual") else None,
        "prune_steps": steps or None,
        "criterion": None if args.mode == "baseline" else args.criterion,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_removed": 1 - macs_after / macs_before,
        "held_out_top1_before_finetune": before,
        "held_out_top1": evaluate_top1(model.module, held_out, device=args.device),
        "finetune_s": round(time.time() - started, 1),
        "conv_widths": [m.out_channels for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)],
        "epoch_losses": list(finetuned.losses),
        "recipe": recipe.to_dict(),
        "n_finetune": len(finetune),
        "n_held_out": len(held_out),
        "device": str(args.device),
    }
    (args.out / f"{args.mode}{args.tag}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("epoch_losses", "recipe")}))


def gradual(model, args, batches, steps: list):
    """A before_epoch hook that prunes toward args.macs_kept in equal MACs ratios at the listed epochs, solving on
    damages measured on the model as fine-tuned so far; each step's record is appended to `steps`."""
    epochs = sorted(int(e) for e in args.prune_epochs.split(","))
    full = conv_macs(model, args)

    def before_epoch(epoch: int) -> bool:
        if epoch not in epochs:
            return False
        model.module.eval()
        target = full * args.macs_kept ** ((epochs.index(epoch) + 1) / len(epochs))
        plan = prune_step(model, args, batches, target, label=f"epoch {epoch}")
        steps.append(
            {
                "epoch": epoch,
                "macs_target": target,
                "macs": macs(model.module),
                "removed_blocks": list(plan.removed_blocks),
            }
        )
        return True

    return before_epoch


def conv_macs(model, args) -> float:
    """The conv MACs the planner's structure counts for the model as it is now."""
    from edgeprune.plan.planner import MacsCost
    from edgeprune.plan.structure import read_structure

    return MacsCost().total(read_structure(model, args.criterion, args.step).uses)


def prune_step(model, args, batches, target: float, label: str):
    """Measure every item's damage on the model as it is now, solve for `target` conv MACs, prune in place."""
    from edgeprune.plan.planner import MacsCost, solve
    from edgeprune.plan.sensitivity import measure_sensitivity, priced
    from edgeprune.plan.structure import read_structure, realize

    structure = read_structure(model, args.criterion, args.step, data=batches)
    sensitivity = measure_sensitivity(model, structure, args.criterion, batches, data=batches)
    choice = solve(priced(structure, sensitivity), MacsCost(), target)
    print(f"{label}: {choice.summary()}", flush=True)
    return realize(model, structure, choice.state(), args.criterion, data=batches)


def planned(model, args, batches):
    """Solve for args.macs_kept of the conv MACs with measured values and prune the model in place; with
    args.stages > 1, in equal steps, the damages measured again on the partly pruned model before each (one
    removal changes what the next one costs). Returns the last stage's plan with every stage's removed blocks."""
    removed, plan = [], None
    full = conv_macs(model, args)
    for stage in range(1, args.stages + 1):
        plan = prune_step(model, args, batches, full * args.macs_kept ** (stage / args.stages), f"stage {stage}")
        removed += plan.removed_blocks
    return replace(plan, removed_blocks=tuple(removed))


if __name__ == "__main__":
    main()
