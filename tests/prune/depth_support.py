"""Helpers for the depth-pruning tests: silence a residual branch, and compare PyTorch with ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.models.base import LoadedModel


def silence(bn: torch.nn.Module) -> None:
    """Zero a batch norm's γ and β: the branch it ends then adds exactly zero (and ranks first)."""
    with torch.no_grad():
        bn.weight.zero_()
        bn.bias.zero_()


def run(loaded: LoadedModel, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return loaded.module(x).numpy()


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output − reference| over the reference's range."""
    return float(np.abs(output - reference).max() / np.ptp(reference))


def onnxruntime_error(loaded: LoadedModel, out_dir: Path, x: torch.Tensor) -> float:
    """Export with our backend, run ONNX Runtime on `x`, and return its error relative to PyTorch's range."""
    import onnxruntime as ort

    artifact = OnnxRuntimeBackend().export(loaded, out_dir)
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    return relative_error(session.run(None, {"input": x.numpy()})[0], run(loaded, x))
