"""Per-output comparison of a runtime's outputs with the PyTorch fp32 reference, batch by batch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeprune.errors import ConfigError
from edgeprune.types import OutputParity
from edgeprune.verify.finite import nonfinite_count


@dataclass(frozen=True)
class Tolerances:
    """When a runtime's result still counts as the same model.

    An output passes when max-abs ≤ `max_abs` or max-abs / (reference range) ≤ `max_abs_rel_range`, and the
    per-sample cosine ≥ `cosine`: every sample's (`cosine_of` "worst"), or on average ("mean": for quantized
    models, whose worst sample over thousands is a tail statistic that falls as the data grows). A task metric
    passes when |runtime − PyTorch| ≤ `metric`.
    """

    max_abs: float
    max_abs_rel_range: float
    cosine: float
    metric: float
    why: str
    cosine_of: str = "worst"

    def __post_init__(self):
        if self.cosine_of not in ("worst", "mean"):
            raise ValueError(f"cosine_of {self.cosine_of!r}: worst or mean")


def int8_tolerances(why: str) -> Tolerances:
    """int8 is judged by the task metric, within 1.0 pt (issue 7's acceptance); its outputs carry the quantization
    error itself, so parity only catches a broken model: mean per-sample cosine ≥ 0.95 (seen ≥ 0.9945 on ResNet-56
    with OpenVINO and TFLite, benchmarks/RESULTS.md)."""
    return Tolerances(max_abs=np.inf, max_abs_rel_range=np.inf, cosine=0.95, cosine_of="mean", metric=0.01, why=why)


class ParityAccumulator:
    """Running max-abs, reference range, worst and mean per-sample cosine and non-finite counts, so outputs need not
    be kept in memory."""

    def __init__(self, name: str):
        self.name = name
        self.max_abs = 0.0
        self.ref_min, self.ref_max = np.inf, -np.inf
        self.cosine_min = 1.0
        self.cosine_sum = 0.0
        self.samples = 0
        self.nonfinite_reference = self.nonfinite_runtime = 0

    def update(self, reference: np.ndarray, runtime: np.ndarray) -> None:
        if reference.shape != runtime.shape:
            raise ConfigError(
                f"output {self.name!r}: the runtime's shape {runtime.shape} differs from PyTorch's {reference.shape}",
                expected="an artifact exported from this model",
                fix="drop --artifact to export it, or pass the file exported from this model",
            )
        if reference.size == 0:
            return
        ref = reference.astype(np.float64).reshape(len(reference), -1)
        out = runtime.astype(np.float64).reshape(len(runtime), -1)
        self.nonfinite_reference += nonfinite_count(ref)
        self.nonfinite_runtime += nonfinite_count(out)
        # NaN would fold away in max()/min() below (max(x, nan) is x), so non-finite values are counted above, fail
        # the result on their own, and are left out of max-abs, range and cosine, which describe the finite rest
        finite = np.isfinite(ref) & np.isfinite(out)
        if not finite.all():
            ref, out = np.where(finite, ref, 0.0), np.where(finite, out, 0.0)
        self.max_abs = max(self.max_abs, float(np.abs(ref - out).max()))
        if finite.any():
            kept = ref[finite]
            self.ref_min, self.ref_max = min(self.ref_min, float(kept.min())), max(self.ref_max, float(kept.max()))
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
        both_zero = norms == 0
        cosine = np.where(both_zero, 1.0, (ref * out).sum(axis=1) / np.where(both_zero, 1.0, norms))
        self.cosine_min = min(self.cosine_min, float(cosine.min()))
        self.cosine_sum += float(cosine.sum())
        self.samples += len(ref)

    def result(self, tolerances: Tolerances) -> OutputParity:
        spread = self.ref_max - self.ref_min if self.ref_max >= self.ref_min else 0.0
        rel = self.max_abs / spread if spread > 0 else (0.0 if self.max_abs == 0 else float("inf"))
        close = self.max_abs <= tolerances.max_abs or rel <= tolerances.max_abs_rel_range
        cosine_mean = self.cosine_sum / self.samples if self.samples else 1.0
        cosine = self.cosine_min if tolerances.cosine_of == "worst" else cosine_mean
        all_finite = self.nonfinite_reference == self.nonfinite_runtime == 0
        return OutputParity(
            name=self.name,
            max_abs=self.max_abs,
            max_abs_rel_range=rel,
            cosine_min=self.cosine_min,
            tolerance_max_abs=tolerances.max_abs,
            tolerance_cosine=tolerances.cosine,
            passed=bool(close and cosine >= tolerances.cosine and all_finite),
            cosine_mean=cosine_mean,
            cosine_of=tolerances.cosine_of,
            nonfinite_reference=self.nonfinite_reference,
            nonfinite_runtime=self.nonfinite_runtime,
        )


def compare_output(name: str, reference: np.ndarray, runtime: np.ndarray, tolerances: Tolerances) -> OutputParity:
    accumulator = ParityAccumulator(name)
    accumulator.update(reference, runtime)
    return accumulator.result(tolerances)
