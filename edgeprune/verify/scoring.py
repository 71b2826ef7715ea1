"""Task scoring for verification: batches of real inputs in, the task metric on PyTorch and on the runtime out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgeprune.errors import ConfigError, DataError
from edgeprune.models.base import LoadedModel
from edgeprune.types import MetricComparison
from edgeprune.verify.data import ImageFolder, prepare_image
from edgeprune.verify.detection import DetectionScorer, postprocess
from edgeprune.verify.metrics import classification_metrics
from edgeprune.verify.yolo_data import YoloDataset


@dataclass
class Batch:
    images: np.ndarray
    meta: Any  # what the scorer needs to score this batch (labels, geometries, names)


class Scoring(Protocol):
    default_batch_size: int
    size: int
    unlabelled_images: int  # samples scored without a label (detection: background images)

    def batches(self, batch_size: int) -> Iterator[Batch]: ...

    def add(self, reference: np.ndarray, runtime: np.ndarray, batch: Batch) -> None: ...

    def comparisons(self, tolerance: float) -> tuple[MetricComparison, ...]: ...


def scoring_for(model: LoadedModel, data: str, limit: int | None) -> Scoring:
    if model.task == "classification":
        return ClassificationScoring(model, data, limit)
    if model.task == "detection":
        return DetectionScoring(model, data, limit)
    raise ConfigError(f"{model.spec} is a {model.task} model, which verify cannot score yet")


def _compare(name: str, reference: float, runtime: float, tolerance: float) -> MetricComparison:
    return MetricComparison(name, reference, runtime, tolerance, abs(runtime - reference) <= tolerance)


class ClassificationScoring:
    """top-1 / top-5 on an ImageFolder directory."""

    default_batch_size = 100
    unlabelled_images = 0

    def __init__(self, model: LoadedModel, data: str, limit: int | None):
        import torch

        with torch.inference_mode():
            num_outputs = model.module(*model.example_inputs(1)).shape[-1]
        self.dataset = ImageFolder.scan(data, model.class_names, num_outputs).subset(limit)
        self.preprocessing = model.preprocessing
        self.size = len(self.dataset.samples)
        self._reference, self._runtime, self._labels = [], [], []

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for images, labels in self.dataset.batches(self.preprocessing, batch_size):
            yield Batch(images, labels)

    def add(self, reference: np.ndarray, runtime: np.ndarray, batch: Batch) -> None:
        self._reference.append(reference)
        self._runtime.append(runtime)
        self._labels.append(batch.meta)

    def comparisons(self, tolerance: float) -> tuple[MetricComparison, ...]:
        labels = np.concatenate(self._labels)
        reference, runtime = np.concatenate(self._reference), np.concatenate(self._runtime)
        if labels.max() >= reference.shape[1]:
            raise DataError(f"labels go up to {labels.max()} but the model has {reference.shape[1]} outputs")
        on_torch, on_runtime = classification_metrics(reference, labels), classification_metrics(runtime, labels)
        return tuple(_compare(name, on_torch[name], on_runtime[name], tolerance) for name in on_torch)


class DetectionScoring:
    """mAP50-95 and mAP50 on YOLO-format data (a data yaml), boxes matched in original-image pixels."""

    default_batch_size = 16

    def __init__(self, model: LoadedModel, data: str, limit: int | None):
        if model.detection is None:
            raise ConfigError(f"{model.spec} declares no detection head, so its outputs cannot be decoded")
        if not str(data).endswith((".yaml", ".yml")):
            raise DataError(
                f"--data {data} is not a data yaml", expected="a YOLO data yaml (path, val, names) for a detector"
            )
        self.dataset = YoloDataset.from_yaml(data).subset(limit).checked(model.detection.num_classes)
        self.unlabelled_images = self.dataset.unlabelled
        self.head = model.detection
        self.preprocessing = model.preprocessing
        self.size = len(self.dataset.images)
        self._torch = DetectionScorer(self.dataset.names)
        self._runtime = DetectionScorer(self.dataset.names)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        images = self.dataset.images
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            prepared = [prepare_image(path, self.preprocessing) for path in chunk]
            meta = [(path.name, p.geometry, self.dataset.labels(path)) for path, p in zip(chunk, prepared)]
            yield Batch(np.stack([p.array for p in prepared]), meta)

    def add(self, reference: np.ndarray, runtime: np.ndarray, batch: Batch) -> None:
        for scorer, raw in ((self._torch, reference), (self._runtime, runtime)):
            for detections, (name, geometry, labels) in zip(postprocess(raw, self.head), batch.meta):
                scorer.add(detections, labels, geometry, name)

    def comparisons(self, tolerance: float) -> tuple[MetricComparison, ...]:
        on_torch, on_runtime = self._torch.result(), self._runtime.result()
        return tuple(_compare(name, on_torch[name], on_runtime[name], tolerance) for name in ("mAP50-95", "mAP50"))
