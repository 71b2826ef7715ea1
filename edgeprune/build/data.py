"""The build's data: the user's --data split into what fine-tuning sees and what the accuracy is measured on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.fileio import staged_folder
from edgeprune.models.base import LoadedModel
from edgeprune.types.build import BuildOptions

HOLDOUT_SHARE = 0.2  # of each class, kept out of fine-tuning for the held-out accuracy
VALIDATION_SHARE = 0.2  # of each class's fine-tuning images, kept for early stopping and choosing a candidate


@dataclass(frozen=True)
class DataSplits:
    finetune: str  # what fine-tuning and data-driven criteria see
    holdout: str  # what the final verdict's accuracy is measured on, and nothing else
    validation: str | None = None  # what early stopping and the back-off look at (classification)


def split_data(model: LoadedModel, data: str, where: Path) -> DataSplits:
    """Classification: an ImageFolder is split per class (of the first 80 %, the first 80 % to fine-tune and the
    rest to validate; the last 20 % held out), as symlink trees under `where`. Detection: the YOLO yaml's own
    train/val splits."""
    if model.task != "classification":
        from edgeprune.verify.yolo_data import YoloDataset

        YoloDataset.from_yaml(data, split="val").checked(model.detection.num_classes)  # refused before building
        return DataSplits(data, data)
    from edgeprune.verify.data import ImageFolder

    folder = ImageFolder.scan(data, model.class_names)
    counts = np.bincount([label for _, label in folder.samples])
    first = int(counts[counts > 0].min() * (1 - HOLDOUT_SHARE))
    train = min(first - 1, int(first * (1 - VALIDATION_SHARE)))
    if train < 1:
        raise ConfigError(f"{data} has too few images per class to hold some out and validate on some",
                          expected="at least 3 per class")  # fmt: skip
    learn, holdout = folder.split(first)
    parts = dict(zip(("finetune", "validation"), learn.split(train)), holdout=holdout)
    for name, part in parts.items():
        root = where / name
        if root.exists():
            continue
        with staged_folder(root) as staging:
            for path, label in part.samples:
                link = staging / folder.classes[label] / path.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(path).resolve())
    return DataSplits(str(where / "finetune"), str(where / "holdout"), str(where / "validation"))


def quantizer_data(target, splits: DataSplits | None) -> str | None:
    """What an int8 export of the build calibrates on: the fine-tuning split (never the held-out images the verdict
    reads); None at a precision that takes no calibration."""
    from edgeprune.backends._registry import get_backend

    if target.precision not in get_backend(target.runtime).calibrated:
        return None
    if splits is None:
        raise ConfigError(f"a {target.runtime} {target.precision} build needs --data: the quantizer calibrates on it",
                          fix="pass --data, or another --precision")  # fmt: skip
    return splits.finetune


def calibration_for(model: LoadedModel, options: BuildOptions, splits: DataSplits | None):
    """Batches from the fine-tuning split for a data-driven criterion and for measured values (None if neither)."""
    from edgeprune.commands import calibration_batches
    from edgeprune.prune.importance import criterion as criterion_spec

    if not (criterion_spec(options.criterion).needs_data or options.value == "measured" or options.reconstruct):
        return None
    if splits is None:
        what = "--reconstruct" if options.reconstruct else f"criterion {options.criterion}"
        raise ConfigError(f"{what} needs --data")
    return calibration_batches(model, splits.finetune, device=options.device)
