"""Per-output comparison of a runtime's outputs with the PyTorch fp32 reference."""

from __future__ import annotations

import numpy as np

from edgeprune.backends.base import Tolerances
from edgeprune.types import OutputParity


def compare_output(name: str, reference: np.ndarray, runtime: np.ndarray, tolerances: Tolerances) -> OutputParity:
    if reference.shape != runtime.shape:
        raise ValueError(f"output {name}: runtime shape {runtime.shape} differs from PyTorch's {reference.shape}")
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    out = runtime.astype(np.float64).reshape(len(runtime), -1)
    max_abs = float(np.abs(ref - out).max()) if ref.size else 0.0
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    rel = max_abs / spread if spread > 0 else (0.0 if max_abs == 0 else float("inf"))
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    both_zero = norms == 0
    cosine = np.where(both_zero, 1.0, (ref * out).sum(axis=1) / np.where(both_zero, 1.0, norms))
    cosine_min = float(cosine.min()) if cosine.size else 1.0
    close = max_abs <= tolerances.max_abs or rel <= tolerances.max_abs_rel_range
    return OutputParity(
        name=name,
        max_abs=max_abs,
        max_abs_rel_range=rel,
        cosine_min=cosine_min,
        tolerance_max_abs=tolerances.max_abs,
        tolerance_cosine=tolerances.cosine,
        passed=bool(close and cosine_min >= tolerances.cosine),
    )
