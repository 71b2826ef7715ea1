"""The fine-tuning step of `prune` and `build`, one routine per kind of model, all called the same way:
(loaded, data, recipe, teacher, out_dir, progress, *, device, validation, stop_at, checkpoints) → FinetuneResult.
A model's family names its routine (`loaded.family.finetuner(task)`)."""

from __future__ import annotations

from pathlib import Path

from edgeprune.train.finetune import FinetuneResult, finetune_classifier


def finetune_classifier_stage(model, data, recipe, teacher, out_dir, progress, *, device="cpu",
                              validation: str | None = None, stop_at: float | None = None,
                              checkpoints: Path | None = None) -> FinetuneResult:  # fmt: skip
    """`data`/`validation`: ImageFolder directories, streamed. With `validation`, top-1 on it after every epoch,
    the best epoch kept, and a stop as soon as it reaches `stop_at`."""
    from edgeprune.train.data import ImageSamples

    samples = ImageSamples.scan(data, model.class_names, model.preprocessing)
    held = ImageSamples.scan(validation, model.class_names, model.preprocessing) if validation else None
    result = finetune_classifier(model.module, samples, recipe, mean=model.preprocessing.mean,
                                 std=model.preprocessing.std, teacher=teacher, progress=progress, device=device,
                                 validation=held, stop_at=stop_at, checkpoints=checkpoints)  # fmt: skip
    model._fingerprint = None  # the weights changed
    return result


def finetune_ultralytics_stage(model, data, recipe, teacher, out_dir, progress, *, device="cpu",
                               validation: str | None = None, stop_at: float | None = None,
                               checkpoints: Path | None = None) -> FinetuneResult:  # fmt: skip
    """Ultralytics validates on the yaml's val split itself and keeps its best epoch (best.pt); `validation`,
    `stop_at` and `checkpoints` are not used."""
    from edgeprune.train.device import resolve_device, ultralytics_device
    from edgeprune.train.ultralytics_trainer import finetune_ultralytics

    # ultralytics' own recipe (optimizer, schedule, augmentation); the classification recipe's SGD settings do not
    # transfer to it, so only the run's size and seed do
    run = finetune_ultralytics(model, data, out_dir / "ultralytics", epochs=recipe.epochs, batch=recipe.batch_size,
                               seed=recipe.seed, device=ultralytics_device(resolve_device(device)),
                               progress=progress)  # fmt: skip
    return FinetuneResult(tuple(run.train_losses), (), recipe.epochs, None, False)


def finetune_darknet_stage(model, data, recipe, teacher, out_dir, progress, *, device="cpu",
                           validation: str | None = None, stop_at: float | None = None,
                           checkpoints: Path | None = None) -> FinetuneResult:  # fmt: skip
    """Darknet's YOLO-loss trainer streams its images and runs on the CPU (`auto` picks it); `validation`,
    `stop_at` and `checkpoints` are not used."""
    from edgeprune.errors import ConfigError
    from edgeprune.train.darknet_yolo import DarknetRecipe, finetune_darknet
    from edgeprune.train.device import resolve_device

    if str(device) != "auto" and resolve_device(device).type != "cpu":
        raise ConfigError("the Darknet YOLO trainer runs on the CPU only so far", fix="pass --device cpu")
    # Darknet's own recipe from the cfg's [net] (learning rate, momentum, decay, burn-in, augmentation); the
    # classification recipe's SGD defaults do not transfer to it, so only the run's length and seed do
    losses = finetune_darknet(model, data, DarknetRecipe(epochs=recipe.epochs, seed=recipe.seed), progress=progress)
    return FinetuneResult(tuple(losses), (), recipe.epochs, None, False)
