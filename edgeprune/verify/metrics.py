"""Task metrics computed on the host from outputs the runtime produced."""

from __future__ import annotations

import numpy as np


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k highest scores (ties broken by index, as torch.topk)."""
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} do not pair up")
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top1, plus top5 when there are more than 5 classes."""
    metrics = {"top1": topk_accuracy(logits, labels, 1)}
    if logits.shape[1] > 5:
        metrics["top5"] = topk_accuracy(logits, labels, 5)
    return metrics
