"""The fine-tuning step of `prune` and `build`, one routine per kind of model, all called the same way:
(loaded, data, arrays, recipe, teacher, out_dir, progress). A model's family names its routine
(`loaded.family.finetuner(task)`)."""

from __future__ import annotations

from edgeprune.train.finetune import finetune_classifier


def finetune_classifier_stage(model, data, arrays, recipe, teacher, out_dir, progress) -> None:
    images, labels = arrays
    finetune_classifier(model.module, images, labels, recipe, mean=model.preprocessing.mean,
                        std=model.preprocessing.std, teacher=teacher, progress=progress)  # fmt: skip


def finetune_ultralytics_stage(model, data, arrays, recipe, teacher, out_dir, progress) -> None:
    from edgeprune.train.ultralytics_trainer import finetune_ultralytics

    # ultralytics' own recipe (optimizer, schedule, augmentation); the classification recipe's SGD settings do not
    # transfer to it, so only the run's size and seed do
    finetune_ultralytics(model, data, out_dir / "ultralytics", epochs=recipe.epochs, batch=recipe.batch_size,
                         seed=recipe.seed, progress=progress)  # fmt: skip


def finetune_darknet_stage(model, data, arrays, recipe, teacher, out_dir, progress) -> None:
    from edgeprune.train.darknet_yolo import DarknetRecipe, finetune_darknet

    # Darknet's own recipe from the cfg's [net] (learning rate, momentum, decay, burn-in, augmentation); the
    # classification recipe's SGD defaults do not transfer to it, so only the run's length and seed do
    finetune_darknet(model, data, DarknetRecipe(epochs=recipe.epochs, seed=recipe.seed), progress=progress)
