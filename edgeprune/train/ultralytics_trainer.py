"""Pruned ultralytics YOLOs in ultralytics' own world: a `.pt` that `ultralytics.YOLO` loads, and fine-tuning
with ultralytics' trainer on the *pruned* architecture.

ultralytics' default trainer rebuilds the model from its `.yaml` (the unpruned architecture) and copies over the
weights whose shapes still fit, so `YOLO("pruned.pt").train(...)` would silently train an unpruned network.
`PrunedDetectionTrainer` is a DetectionTrainer whose `get_model` keeps the model it is given instead; it uses
only ultralytics' public extension points (a trainer subclass, `get_model`, `set_model_attributes`, callbacks)
and its documented checkpoint format (a dict whose "ema" or "model" is the module).

The `.pt` is a pickle that names edgeprune's classes (SplitC2f, FoldedC2f, …): loading it needs edgeprune
installed, and ultralytics' opt-in allow-list loader (ULTRALYTICS_SAFE_LOAD=1) refuses it. edgeprune itself
still loads a `.pt` only with --trust-pickle; the file is for ultralytics users.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from edgeprune._ultralytics import import_ultralytics
from edgeprune.errors import ConfigError, ModelError
from edgeprune.fileio import write_text
from edgeprune.models.base import LoadedModel
from edgeprune.models.ultralytics import check_ultralytics_detector, input_size, save_ultralytics_pt, set_head_layout
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Record

RUN_NAME = "finetune"  # the trainer's folder under out_dir; its weights/ holds best.pt and last.pt
# set by finetune_ultralytics from its own arguments, or owned by it (where the run writes)
_RESERVED = (
    "model",
    "data",
    "epochs",
    "imgsz",
    "batch",
    "seed",
    "device",
    "project",
    "name",
    "exist_ok",
    "save_dir",
    "resume",
    "pretrained",
    "task",
    "mode",
)
_DEFAULTS = {"workers": 0, "plots": False, "deterministic": True, "val": True}


@dataclass(frozen=True)
class UltralyticsFinetune(Record):
    """What a fine-tuning run produced. Truthy when every epoch's training loss was finite."""

    _volatile = ("save_dir", "best", "last", "pruned_pt")

    epochs: int
    train_losses: tuple[float, ...]  # per epoch: the sum of ultralytics' train/*_loss columns (box, cls, dfl)
    metrics: dict[str, float] = field(default_factory=dict)  # ultralytics' final validation of best.pt
    save_dir: str = ""
    best: str = ""  # the weights now in the LoadedModel
    last: str = ""
    pruned_pt: str = ""  # the pruned model before fine-tuning, as ultralytics loads it

    def __bool__(self) -> bool:
        return bool(self.train_losses) and all(math.isfinite(loss) for loss in self.train_losses)


def finetune_ultralytics(
    loaded: LoadedModel,
    data: str | Path,
    out_dir: str | Path,
    *,
    epochs: int,
    imgsz: int | None = None,
    batch: int = 16,
    seed: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
    **train_args: Any,
) -> UltralyticsFinetune:
    """Fine-tune the pruned YOLO in `loaded` with ultralytics' DetectionTrainer, keeping its architecture.

    `data` is a YOLO data yaml; its `path:` is resolved as edgeprune's verify stage resolves it (beside the yaml),
    and the run reads a copy with that path made absolute (out_dir/data.yaml). `imgsz` None means the model's input
    size. Everything the run writes goes under out_dir: pruned.pt (the model before fine-tuning) and finetune/
    (ultralytics' run folder: weights/best.pt and last.pt, results.csv, args.yaml). Deterministic for a seed; the
    caller's random states are restored afterwards. Other ultralytics train arguments (lr0, mosaic, close_mosaic,
    patience, plots, …) pass through `train_args`; workers=0, plots=False and deterministic=True are the defaults.

    Afterwards `loaded.module` holds best.pt's weights (the EMA that ultralytics validated; it stores them in fp16)
    as fp32, in eval mode, with the head's export flags as edgeprune set them, so ONNX export works as before.
    """
    check_ultralytics_detector(loaded)
    _check_run_options(epochs, batch, imgsz, train_args)
    progress = progress or NoProgress()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_yaml = _absolute_data_yaml(Path(data), out_dir, num_classes=int(loaded.detection.num_classes))
    pruned_pt = save_ultralytics_pt(loaded, out_dir / "pruned.pt")
    overrides = {
        **_DEFAULTS,
        **train_args,
        "model": str(pruned_pt),
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz or input_size(loaded),
        "batch": batch,
        "seed": seed,
        "device": device,
        "project": str(out_dir),
        "name": RUN_NAME,
        "exist_ok": True,
    }
    with _restored_random_states(), progress.task("fine-tune", epochs) as update:
        trainer = PrunedDetectionTrainer(overrides=overrides)
        trainer.add_callback("on_fit_epoch_end", lambda t: update(min(epochs, _epochs_done(t))))
        trainer.train()
    save_dir = Path(trainer.save_dir)
    best, last = save_dir / "weights" / "best.pt", save_dir / "weights" / "last.pt"
    best = best if best.is_file() else last
    _load_trained_weights(loaded, best)
    return UltralyticsFinetune(
        epochs=epochs,
        train_losses=_train_losses(save_dir / "results.csv"),
        metrics={str(k): float(v) for k, v in (trainer.metrics or {}).items() if _is_number(v)},
        save_dir=str(save_dir),
        best=str(best),
        last=str(last),
        pruned_pt=str(pruned_pt),
    )


def _trainer_base():
    import_ultralytics()
    from ultralytics.models.yolo.detect import DetectionTrainer

    return DetectionTrainer


class PrunedDetectionTrainer(_trainer_base()):
    """ultralytics' DetectionTrainer that trains the model it is given, not one rebuilt from the model's yaml.

    Use it with a pruned checkpoint (from `save_ultralytics_pt` or `edgeprune prune`)::

        from ultralytics import YOLO
        from edgeprune.train.ultralytics_trainer import PrunedDetectionTrainer

        YOLO("pruned.pt").train(trainer=PrunedDetectionTrainer, data="coco128.yaml", epochs=10, imgsz=640)

    or directly: `PrunedDetectionTrainer(overrides={"model": "pruned.pt", "data": ..., ...}).train()`. Without
    `trainer=`, ultralytics rebuilds the unpruned architecture from the yaml and copies only the weights that fit.
    The pruned head predicts a fixed number of classes, so the data must have that many; `pretrained=False`
    (train from scratch) is refused, since only the pruned module knows its own layer widths.
    """

    def get_model(self, cfg=None, weights=None, verbose=True):
        """The model in `weights` itself (a copy, trainable, head in training layout); `cfg` is ignored."""
        if weights is None:
            raise ConfigError(
                "PrunedDetectionTrainer trains a given pruned model, and got none (only a yaml, or pretrained=False)",
                expected="model= a pruned .pt, with pretrained left on",
                fix="pass the pruned checkpoint as the model; its yaml describes the unpruned architecture",
            )
        if not isinstance(weights, torch.nn.Module):
            raise ConfigError(f"PrunedDetectionTrainer got {type(weights).__name__} weights", expected="a model module")
        model = copy.deepcopy(weights).float()
        set_head_layout(model, export=False, dynamic=False)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def set_model_attributes(self):
        head_classes, data_classes = int(self.model.model[-1].nc), int(self.data["nc"])
        if head_classes != data_classes:
            raise ConfigError(
                f"the pruned model predicts {head_classes} classes and the data has {data_classes}",
                fix="fine-tune on data with the model's classes (a new class count needs a new, untrained head)",
            )
        super().set_model_attributes()


def _check_run_options(epochs: int, batch: int, imgsz: int | None, train_args: dict[str, Any]) -> None:
    for name, value in (("epochs", epochs), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r}", expected="a positive integer")
    if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz < 32):
        raise ConfigError(f"imgsz={imgsz!r}", expected="an image size ≥ 32, or None for the model's input size")
    reserved = sorted(set(train_args) & set(_RESERVED))
    if reserved:
        raise ConfigError(
            f"ultralytics argument(s) {', '.join(reserved)} are set by finetune_ultralytics",
            fix="use its own parameters (epochs, imgsz, batch, seed, device, out_dir, data)",
        )


def _absolute_data_yaml(data: Path, out_dir: Path, *, num_classes: int) -> Path:
    """A copy of the data yaml whose `path:` is the dataset root as edgeprune resolves it, so ultralytics (which
    looks for a relative path in its settings' datasets_dir) reads the same images."""
    from edgeprune.verify.yolo_data import YoloDataset

    # checked here: ultralytics would drop an image with a bad label line with only a warning
    train = YoloDataset.from_yaml(data, split="train").checked(num_classes)
    YoloDataset.from_yaml(data, split="val").checked(num_classes)  # ultralytics validates each epoch
    spec = yaml.safe_load(data.read_text())
    spec["path"] = str(train.root)
    return write_text(out_dir / "data.yaml", yaml.safe_dump(spec, sort_keys=False))


def _load_trained_weights(loaded: LoadedModel, checkpoint_path: Path) -> None:
    """Copy the trained weights of an ultralytics checkpoint into `loaded.module`, which keeps its own head flags."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)  # written by this run
    trained = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    if not isinstance(trained, torch.nn.Module):
        raise ModelError(f"{checkpoint_path} holds no model", expected="an ultralytics checkpoint ('ema' or 'model')")
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in trained.state_dict().items()}  # fmt: skip
    own = loaded.module.state_dict()
    if {k: tuple(v.shape) for k, v in state.items()} != {k: tuple(v.shape) for k, v in own.items()}:
        raise ModelError(
            f"{checkpoint_path} holds a different architecture than the pruned model",
            fix="train with PrunedDetectionTrainer, which keeps the pruned architecture",
        )
    loaded.module.load_state_dict(state)
    loaded.module.float().eval()
    names = getattr(trained, "names", None)
    if isinstance(names, dict) and len(names) == len(loaded.class_names or ()):
        loaded.module.names = dict(names)
        loaded.class_names = tuple(names[i] for i in range(len(names)))
    loaded.weights = str(checkpoint_path)
    loaded._fingerprint = None


def _epochs_done(trainer) -> int:
    return int(getattr(trainer, "epoch", 0)) + 1


def _train_losses(results_csv: Path) -> tuple[float, ...]:
    """Per epoch, the sum of the train/* loss columns of ultralytics' results.csv (its documented run log)."""
    if not results_csv.is_file():
        return ()
    with results_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    losses = []
    for row in rows:
        columns = [k for k in row if k and k.strip().startswith("train/")]
        losses.append(sum(float(row[k]) for k in columns) if columns else float("nan"))
    return tuple(losses)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.generic)) and not isinstance(value, bool)


@contextlib.contextmanager
def _restored_random_states() -> Iterator[None]:
    """ultralytics seeds Python's, NumPy's and torch's global generators; give the caller theirs back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
