"""Streamed fine-tuning: batches that depend on (seed, epoch, index) only, devices, validation with early stop and
the best epoch kept, and per-epoch checkpoints that resume bit-exactly."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from edgeprune.errors import ConfigError, DataError
from edgeprune.train.checkpoint import CHECKPOINT_FILE
from edgeprune.train.data import GlobalBatches, ImageSamples, TensorSamples
from edgeprune.train.device import resolve_device, ultralytics_device
from edgeprune.train.finetune import FinetuneRecipe, evaluate_top1, finetune_classifier
from edgeprune.types import Preprocessing

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _samples(n=192, seed=0) -> TensorSamples:
    """Two classes told apart by the mean brightness of the red channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.normal(0, 0.6, (n, 3, 8, 8)).astype(np.float32)
    images[:, 0] += np.where(labels == 1, 0.4, -0.4)[:, None, None]
    return TensorSamples(images, labels)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))  # fmt: skip


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _train(model, recipe, **kwargs):
    kwargs.setdefault("num_workers", 0)
    return finetune_classifier(model, _samples(), recipe, mean=MEAN, std=STD, **kwargs)


def test_batches_do_not_depend_on_workers_and_the_ranks_shares_make_up_the_one_process_batch():
    a, b = _net(), _net()
    recipe = FinetuneRecipe(epochs=2, batch_size=32)
    _train(a, recipe, num_workers=0)
    _train(b, recipe, num_workers=2)  # decoded and augmented in two worker processes
    assert _same(a, b)
    one = GlobalBatches(50, 16, seed=3, shuffle=True)
    two = [GlobalBatches(50, 16, seed=3, shuffle=True, rank=r, world=2) for r in range(2)]
    for sampler in (one, *two):
        sampler.epoch = 1
    for whole, *shares in zip(one, *two, strict=True):
        assert sorted(whole) == sorted(key for share in shares for key in share)
    assert list(one) != list(GlobalBatches(50, 16, seed=3, shuffle=True))  # epoch 0's order differs


def test_devices_resolve_here_and_a_missing_cuda_is_one_config_error():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ultralytics_device(torch.device("cpu")) == "cpu" and ultralytics_device(torch.device("cuda", 1)) == "1"
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device("cuda:1")


def test_validation_keeps_the_best_epoch_and_stops_at_the_target():
    validation = _samples(seed=1)
    model = _net()
    result = _train(model, FinetuneRecipe(epochs=4, batch_size=32, lr=0.05), validation=validation)
    assert result.epochs_run == 4 and len(result.validation) == 4 and not result.stopped_early
    best = result.best_epoch
    assert result.validation[best - 1] == max(result.validation)
    assert evaluate_top1(model, validation, num_workers=0) == result.validation[best - 1]  # its weights came back
    stopped = _train(_net(), FinetuneRecipe(epochs=4, batch_size=32, lr=0.05), validation=validation, stop_at=0.0)
    assert stopped.stopped_early and stopped.epochs_run == 1 and stopped.best_epoch == 1


class _StopAfter:
    """Progress whose update raises KeyboardInterrupt (a Ctrl-C) once `steps` steps are done."""

    def __init__(self, steps: int):
        self.steps = steps

    @contextlib.contextmanager
    def task(self, description, total):
        def update(done):
            if done > self.steps:
                raise KeyboardInterrupt

        yield update

    def note(self, text):
        self.noted = text


def test_an_interrupted_run_resumes_after_its_last_epoch_with_the_same_weights(tmp_path):
    recipe = FinetuneRecipe(epochs=3, batch_size=32, lr=0.05, distill_alpha=0.5)
    teacher = _net()
    whole = _net()
    expected = _train(whole, recipe, teacher=teacher, validation=_samples(seed=1), checkpoints=tmp_path / "a")
    resumed = _net()
    steps_per_epoch = 6  # 192 samples / 32
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C in the middle of epoch 2
        _train(resumed, recipe, teacher=teacher, validation=_samples(seed=1), checkpoints=tmp_path / "b",
               progress=_StopAfter(steps_per_epoch + 2))  # fmt: skip
    assert (tmp_path / "b" / CHECKPOINT_FILE).is_file()
    resumed = _net()  # a fresh process would start from the unpruned weights again
    progress = _StopAfter(10**9)
    result = _train(resumed, recipe, teacher=teacher, validation=_samples(seed=1), checkpoints=tmp_path / "b",
                    progress=progress)  # fmt: skip
    assert "after epoch 1 of 3" in progress.noted
    assert result == expected
    assert _same(whole, resumed)
    with pytest.raises(ConfigError, match="another run"):
        _train(_net(), FinetuneRecipe(epochs=3, batch_size=16), checkpoints=tmp_path / "b")


def test_an_unreadable_image_is_one_data_error_from_a_worker(tmp_path):
    from PIL import Image

    for k in range(6):
        folder = tmp_path / ("a" if k % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(folder / f"{k}.png")
    (tmp_path / "a" / "9.png").write_bytes(b"not a png")
    samples = ImageSamples.scan(tmp_path, None, Preprocessing(crop=(8, 8), mean=MEAN, std=STD))
    with pytest.raises(DataError, match=r"cannot read image .*9\.png"):
        finetune_classifier(_net(), samples, FinetuneRecipe(epochs=1, batch_size=4), mean=MEAN, std=STD,
                            num_workers=1)  # fmt: skip
