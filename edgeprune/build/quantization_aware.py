"""Quantization-aware training of the build's pruned models (`--qat-epochs N`), where the runtime's toolchain has it
(backends declare `quantization_aware`; OpenVINO through NNCF so far).

Each pruned model, once fine-tuned, gets the runtime's fake quantization (initialised on the fine-tuning split's
calibration images, as the post-training export would be), trains N more epochs with it, and is exported from
there. Its float weights after that training are saved in `qat/` beside `finetuned/`: they are the PyTorch
reference that verify compares the runtime with, as the fine-tuned weights are for a post-training export. The
unpruned model is quantized after training (post-training), so the build's accuracy drop is QAT-pruned against
PTQ-unpruned, and each artifact's `quantization` says which it had.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

from edgeprune.build.stages import pruned_dir, qat_dir
from edgeprune.types import Artifact, TargetProfile
from edgeprune.types.build import BuildOptions

RESULT_FILE = "qat_result.json"
# NNCF's QAT guidance: "a few epochs with a small learning rate". A tenth of the fine-tuning rate (0.001 with the
# default 0.01), with the same cosine schedule; the weights start from the fine-tuned ones, not from scratch.
LR_SHARE = 0.1


def check(model, target: TargetProfile, options: BuildOptions) -> None:
    """A ConfigError before any work when --qat-epochs cannot be honoured."""
    from edgeprune.backends._registry import get_backend
    from edgeprune.errors import ConfigError

    if options.qat_epochs < 0:
        raise ConfigError(f"--qat-epochs {options.qat_epochs} is negative", expected="0 (post-training) or more")
    if options.qat_epochs:
        get_backend(target.runtime).check_quantization_aware(target.precision)
        if not options.data:
            raise ConfigError("--qat-epochs needs --data (the images it trains on)", fix="pass --data")
        # built and tested with the classification loop only; the detectors' trainers (ultralytics, Darknet) were
        # not tried with nncf's model
        if model.task != "classification":
            raise ConfigError(f"--qat-epochs trains classifiers so far, not {model.spec} ({model.task})",
                              fix="drop --qat-epochs: the int8 export is then quantized after training")  # fmt: skip


def export_quantization_aware(model, target: TargetProfile, options: BuildOptions, name: str, splits, quantize_on: str,
                              out_dir: Path, progress) -> Artifact:  # fmt: skip
    """Train pruned model `name` with the runtime's fake quantization, save its float weights (qat/), export it."""
    from edgeprune.backends._quantization import calibration_images
    from edgeprune.backends._registry import get_backend
    from edgeprune.fileio import staged_folder
    from edgeprune.models.saved import PLAN_FILE, load_pruned, save_pruned
    from edgeprune.train.finetune import FinetuneRecipe
    from edgeprune.types import PrunePlan

    export_dir = out_dir / "export" / name
    saved = qat_dir(out_dir, name)
    if saved.is_dir() and (export_dir / "artifact.json").is_file():
        return Artifact.load(export_dir / "artifact.json")  # finished before an interruption
    shutil.rmtree(saved, ignore_errors=True)  # trained but not exported: the fake-quantized model is gone, train again
    backend = get_backend(target.runtime)
    loaded = load_pruned(pruned_dir(out_dir, name, True), named_base=model.spec)
    calibration = calibration_images(loaded, quantize_on)
    recipe = dataclasses.replace(FinetuneRecipe.for_build(options), epochs=options.qat_epochs,
                                 lr=options.lr * LR_SHARE)  # fmt: skip
    teacher = copy.deepcopy(model.module).eval() if options.distill else None
    progress.note(f"quantization-aware training of {name}: {options.qat_epochs} epochs with {backend.name}'s "
                  f"{target.precision} fake quantization")  # fmt: skip
    with staged_folder(saved) as staging:
        trained, result = train_quantization_aware(loaded, backend, target.precision, calibration, splits.finetune,
                                                   recipe, teacher, staging, progress, device=options.device,
                                                   validation=splits.validation)  # fmt: skip
        save_pruned(loaded, PrunePlan.load(pruned_dir(out_dir, name, True) / PLAN_FILE), staging)
        result.save(staging / RESULT_FILE)
    reference = load_pruned(saved, named_base=model.spec)  # as verify will load it
    artifact = backend.export_fake_quantized(reference, trained, export_dir, target.precision,
                                             calibration_images=len(calibration), epochs=options.qat_epochs)  # fmt: skip
    artifact.save(export_dir / "artifact.json")
    return artifact


def train_quantization_aware(loaded, backend, precision: str, calibration, data: str, recipe, teacher, out_dir: Path,
                             progress, *, device: str = "auto", validation: str | None = None):  # fmt: skip
    """Train `loaded` with `backend`'s fake quantization (initialised on `calibration`) by its family's fine-tuning
    routine; returns (the fake-quantized module, FinetuneResult). `loaded` gets the float weights the fake
    quantizers act on after training: the runtime's int8 model is judged against them."""
    from edgeprune.commands import finetuner

    trained = dataclasses.replace(loaded, module=backend.fake_quantized(loaded, precision, calibration))
    result = finetuner(loaded)(trained, data, recipe, teacher, out_dir, progress, device=device, validation=validation)
    float_state = {k: v for k, v in trained.module.state_dict().items() if k in loaded.module.state_dict()}
    loaded.module.load_state_dict(float_state, strict=True)
    loaded._fingerprint = None  # the weights changed
    return trained.module, result
