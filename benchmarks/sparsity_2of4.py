"""2:4 semi-structured sparsity on the CIFAR ResNet-20: held-out top-1 before and after fine-tuning with the mask kept.

Every eligible conv/linear (input channels a multiple of 4: all but the 3-channel stem conv) gets a magnitude 2:4
mask along its input channels, through `prune_model(..., sparsity_2of4=True)` as `edgeprune prune --ratio 0
--sparsity-2of4` runs it. Scored in PyTorch on the build's held-out split of the CIFAR-10 test JPEGs (the last 20 % of
every class) before any fine-tuning and after `--epochs` epochs of `prune`'s fine-tuning (SGD + cosine, lr 0.01,
distilled from the unpruned model) on the build's fine-tuning split, beside the unpruned model fine-tuned the same
way without a mask (JPEG-compressed images: fine-tuning on them alone moves top-1). The saved weights and the
exported ONNX's initializers are checked to hold the pattern. Speed is not measured: 2:4 runs faster only on sparse
tensor cores (Ampere, Orin, through TensorRT), and there is no such GPU here. Writes
benchmarks/results/sparsity_2of4.json.

    python benchmarks/sparsity_2of4.py [--epochs 3] [--out /tmp/sparsity_2of4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgeprune.build.data import split_data
from edgeprune.commands import export_model, prune_model
from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import load_pruned
from edgeprune.progress import NoProgress
from edgeprune.prune.sparsity import check_two_of_four, eligible_layers, layer_weights
from edgeprune.train.data import ImageSamples
from edgeprune.train.finetune import FinetuneRecipe, evaluate_top1

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT.parent / "shared" / "assets"
WEIGHTS = ASSETS / "weights" / "cifar10_resnet" / "resnet20-12fca82f.th"
DATA = ASSETS / "datasets" / "cifar10_test_jpg" / "test"
RESULT = ROOT / "benchmarks" / "results" / "sparsity_2of4.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sparsity_2of4"))
    args = parser.parse_args()
    shutil.rmtree(args.out / "pruned", ignore_errors=True)
    torch.manual_seed(0)
    base = _base()
    splits = split_data(base, str(DATA), args.out / "data")
    holdout = ImageSamples.scan(splits.holdout, base.class_names, base.preprocessing)
    record = {"unpruned_top1": evaluate_top1(base.module, holdout), "holdout_images": len(holdout)}
    print(record, flush=True)

    started = time.monotonic()
    plan = prune_model(_base(), args.out / "pruned" / "before", ratio=0.0, criterion="l1", sparsity_2of4=True)
    before = load_pruned(args.out / "pruned" / "before")
    record["top1_before_finetune"] = evaluate_top1(before.module, holdout)
    print({"top1_before_finetune": record["top1_before_finetune"]}, flush=True)

    recipe = FinetuneRecipe(epochs=args.epochs, lr=0.01, distill_alpha=0.5)  # `prune`'s defaults (--distill)
    prune_model(_base(), args.out / "pruned" / "after", ratio=0.0, criterion="l1", sparsity_2of4=True,
                data=splits.finetune, recipe=recipe, progress=NoProgress())  # fmt: skip
    after = load_pruned(args.out / "pruned" / "after")
    record["top1_after_finetune"] = evaluate_top1(after.module, holdout)
    record["seconds"] = round(time.monotonic() - started, 1)
    print({"top1_after_finetune": record["top1_after_finetune"]}, flush=True)

    dense = _base()  # the control: the same fine-tuning without the mask, so the mask's own cost shows
    prune_model(dense, args.out / "pruned" / "dense", ratio=0.0, criterion="l1", data=splits.finetune, recipe=recipe,
                progress=NoProgress())  # fmt: skip
    record["unpruned_finetuned_top1"] = evaluate_top1(dense.module, holdout)
    print({"unpruned_finetuned_top1": record["unpruned_finetuned_top1"]}, flush=True)

    sparse = eligible_layers(after.module)
    weights = layer_weights(after.module, sparse)
    artifact = export_model(after, "onnx", args.out / "onnx")
    initializers = _onnx_weights(artifact.path)
    record.update(
        model="cifar:resnet20",
        weights=WEIGHTS.name,
        sparse_layers=len(sparse),
        dense_layers=list(plan.dense_layers),
        zero_fraction_of_sparse_weights=float(np.mean([float((w == 0).float().mean()) for w in weights.values()])),
        saved_weights_violating=check_two_of_four(weights),
        onnx_initializers_checked=len(initializers),
        onnx_initializers_violating=check_two_of_four(initializers),
        finetune_epochs=args.epochs,
        finetune_images=len(ImageSamples.scan(splits.finetune, base.class_names, base.preprocessing)),
        recipe=recipe.to_dict(),
        speed="not measured: 2:4 is faster only on sparse tensor cores (Ampere, Orin) through TensorRT; none here",
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    record = {"date": time.strftime("%Y-%m-%d"), "commit": commit.stdout.strip(), **record}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    if record["saved_weights_violating"] or record["onnx_initializers_violating"] or len(initializers) != len(sparse):
        raise SystemExit("the 2:4 pattern did not survive: see " + str(RESULT))


def _base():
    return load_model("cifar:resnet20", LoadOptions(weights=str(WEIGHTS)))


def _onnx_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights of the ONNX file's Conv and Gemm nodes whose input axis is a multiple of 4 (a conv's (out, in, kh,
    kw); a Gemm's (out, in) under transB = 1, as torch exports Linear)."""
    graph = onnx.load(str(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    found = {}
    for node in graph.node:
        transposed = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        if (node.op_type == "Conv" or (node.op_type == "Gemm" and transposed)) and node.input[1] in initializers:
            weight = numpy_helper.to_array(initializers[node.input[1]])
            if weight.shape[1] % 4 == 0:
                found[node.input[1]] = weight
    return found


if __name__ == "__main__":
    main()
