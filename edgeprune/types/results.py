"""Records that stages produce: measurements, exported artifacts, verification, plans and profiles."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.types.device import (
    DetectionHead,
    DeviceInfo,
    Preprocessing,
    TargetProfile,
    TensorSpec,
)
from edgeprune.types.record import Record

# --- measurements ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyDetail(Record):
    """How a measured energy figure was obtained (edgeprune/devices/energy.py). Energies are per inference of one
    sample: the window's energy divided by runs x batch."""

    sensor: str
    rails: tuple[str, ...]
    rail_rule: str  # why these rails: "board-input rail VDD_IN", "sum of all rails", "rails from the profile"
    method: str  # "trapezoid over power samples" | "difference of energy counters"
    interval_ms: float  # asked for
    achieved_interval_ms: float | None  # median spacing of the samples in the timed loop
    n_samples_run: int
    n_samples_idle: int
    run_s: float
    idle_s: float | None
    inferences: int
    gross_mj: float
    net_mj: float | None  # gross minus idle power x run time; None without an idle window
    power_w: float  # mean power over the timed loop
    idle_power_w: float | None
    basis: str  # which of gross/net LatencyStats.energy_mj reports: "net" | "gross"


@dataclass(frozen=True)
class LatencyStats(Record):
    """Latency of `n` timed runs after `warmup` untimed ones, and energy with how it was obtained.

    From per-run samples (`from_samples`) every figure is set. From a tool that reports only aggregates (TFLite's
    benchmark_model: count, mean, std, min, max, and a median in newer builds; `from_summary`) the percentiles it does
    not report are None, and `method` says so."""

    n: int
    warmup: int
    median_ms: float | None  # None: the tool reported no median
    p90_ms: float | None  # None: no per-run samples to take it from
    p99_ms: float | None
    min_ms: float
    max_ms: float
    mean_ms: float
    cv: float
    runtime: str
    runtime_version: str
    threads: int
    batch: int = 1
    method: str = "measured"  # measured on the runtime; "predicted" for LUT sums (later)
    energy: str = "unavailable"  # measured | estimated | unavailable
    energy_mj: float | None = None
    power_w: float | None = None
    energy_note: str = ""
    energy_detail: EnergyDetail | None = None  # set when energy == "measured"
    emulation: str | None = None  # set when timed under emulation: emulation_label's text, for every reader to see

    @classmethod
    def from_samples(cls, samples_ms: typing.Sequence[float], **meta: Any) -> LatencyStats:
        if len(samples_ms) == 0:
            raise ValueError("no latency samples")
        import numpy as np

        s = np.asarray(samples_ms, dtype=np.float64)
        mean = float(s.mean())
        return cls(
            n=int(s.size),
            median_ms=float(np.median(s)),
            p90_ms=float(np.percentile(s, 90)),
            p99_ms=float(np.percentile(s, 99)),
            min_ms=float(s.min()),
            max_ms=float(s.max()),
            mean_ms=mean,
            cv=float(s.std() / mean) if mean > 0 else 0.0,
            **meta,
        )

    @classmethod
    def from_summary(
        cls,
        *,
        n: int,
        mean_ms: float,
        std_ms: float,
        min_ms: float,
        max_ms: float,
        median_ms: float | None = None,
        **meta: Any,
    ) -> LatencyStats:
        """From aggregate figures when per-run samples are not available: p90/p99 are None."""
        if n < 1:
            raise ValueError("no timed runs")
        return cls(
            n=n,
            median_ms=median_ms,
            p90_ms=None,
            p99_ms=None,
            min_ms=min_ms,
            max_ms=max_ms,
            mean_ms=mean_ms,
            cv=std_ms / mean_ms if mean_ms > 0 else 0.0,
            **meta,
        )

    def summary(self) -> str:
        center = f"median {self.median_ms:.3f} ms" if self.median_ms is not None else f"mean {self.mean_ms:.3f} ms"
        tail = f", p90 {self.p90_ms:.3f} ms" if self.p90_ms is not None else ""
        text = (
            f"{center}{tail} (n={self.n}, CV {self.cv:.1%}, "
            f"{self.runtime} {self.runtime_version}, {self.threads} threads, {self.method})"
        )
        if self.energy_mj is not None:
            text += f"; energy {self.energy_mj:.2f} mJ/inference ({self.energy})"
            if self.energy_detail is not None:
                d = self.energy_detail
                text += f" [{d.basis}; gross {d.gross_mj:.2f} mJ at {d.power_w:.2f} W, {d.sensor}]"
        else:
            text += f"; energy {self.energy}: {self.energy_note}"
        return text + (f"; {self.emulation}" if self.emulation else "")


TWO_OF_FOUR = "2:4"
TWO_OF_FOUR_SPEED = (
    "2:4 sparse weights: faster only on GPUs with sparse tensor cores (Ampere, Orin) through TensorRT; "
    "elsewhere the model runs at dense speed"
)

# --- export and verification -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact(Record):
    """An exported model file and everything needed to run it without the exporter."""

    format: str
    precision: str
    files: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocessing: Preprocessing | None
    model: str
    model_fingerprint: str
    exporter: str
    opset: int | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    detection: DetectionHead | None = None
    calibration_images: int | None = None  # int8: how many of the user's images calibrated it
    float_layers: tuple[str, ...] = ()  # int8: PyTorch layers kept in float (mixed precision, --keep-float)
    qat_epochs: int | None = None  # int8: epochs of quantization-aware training before export; None: post-training

    _volatile = ("files",)

    @property
    def path(self) -> Path:
        return Path(self.files[0])

    @property
    def quantization(self) -> str | None:
        """How an int8 artifact was quantized, in words; None for a float one."""
        if self.calibration_images is None and self.qat_epochs is None:
            return None
        if self.qat_epochs is not None:
            return (f"quantization-aware training ({self.qat_epochs} epochs; ranges initialised on "
                    f"{self.calibration_images} calibration images)")  # fmt: skip
        return f"post-training (calibrated on {self.calibration_images} images)"


@dataclass(frozen=True)
class OutputParity(Record):
    """Runtime output vs the PyTorch fp32 reference for one output."""

    name: str
    max_abs: float
    max_abs_rel_range: float  # max_abs / (max - min of the reference)
    cosine_min: float  # worst per-sample cosine similarity
    tolerance_max_abs: float
    tolerance_cosine: float
    passed: bool
    cosine_mean: float | None = None  # mean per-sample cosine similarity
    cosine_of: str = "worst"  # which of the two the tolerance applies to: worst | mean
    # NaN/Inf values seen in each side's output; any fails parity (max-abs and cosine cover the finite values only)
    nonfinite_reference: int = 0
    nonfinite_runtime: int = 0

    def failure(self) -> str:
        """Why this output failed parity, in one clause."""
        if self.nonfinite_runtime or self.nonfinite_reference:
            return (
                f"output {self.name!r}: {self.nonfinite_runtime} NaN/Inf value(s) from the runtime, "
                f"{self.nonfinite_reference} from PyTorch"
            )
        cosine = self.cosine_min if self.cosine_of == "worst" else self.cosine_mean
        return (
            f"output {self.name!r}: max-abs {self.max_abs:.3g} (tol {self.tolerance_max_abs:.3g}), "
            f"{self.cosine_of} cosine {cosine:.6f} (tol {self.tolerance_cosine})"
        )


@dataclass(frozen=True)
class MetricComparison(Record):
    """A task metric on PyTorch and on the runtime over the same samples."""

    name: str
    reference: float
    runtime: float
    tolerance: float
    passed: bool

    @property
    def delta(self) -> float:
        return self.runtime - self.reference


@dataclass(frozen=True)
class LayerSensitivity(Record):
    """How much quantizing one layer alone to int8 changes the model's output (relative L2 error)."""

    layer: str
    error: float
    method: str


@dataclass(frozen=True)
class Verification(Record):
    """Parity and task metrics of an artifact on its runtime; truthy when every check passed."""

    model: str
    artifact: Artifact
    runtime: str
    runtime_version: str
    threads: int
    target: str
    data: str
    n_samples: int
    parity: tuple[OutputParity, ...]
    metrics: tuple[MetricComparison, ...]
    passed: bool
    reference: str = "pytorch fp32 (cpu)"
    latency: LatencyStats | None = None
    predicted_latency_ms: float | None = None
    sensitive_layers: tuple[LayerSensitivity, ...] = ()  # a failed int8 verification: the worst layers first
    unlabelled_images: int = 0  # detection: images without a label file, scored as background (as YOLO does)
    device: DeviceInfo | None = None  # what the runtime ran on (machine, Python, versions, emulation)

    def __bool__(self) -> bool:
        return self.passed

    def failures(self) -> list[str]:
        out = [p.failure() for p in self.parity if not p.passed]
        out += [
            f"{m.name}: {m.runtime:.4f} on {self.runtime} vs {m.reference:.4f} on PyTorch (tol {m.tolerance})"
            for m in self.metrics
            if not m.passed
        ]
        return out


@dataclass(frozen=True)
class PrunePlan(Record):
    """How the pruned model was made from the base model, replayable on a fresh load of `base_model`.

    Replay order: `removed_blocks` (depth pruning, on the family's own structure), then `rewrites` (exact,
    named), then `channel_history` (torch-pruning's pruning history: module name, whether output channels were
    pruned, removed indices).
    """

    base_model: str
    base_fingerprint: str
    criterion: str  # one of prune/criterion_names.py
    channel_ratio: float  # fraction of prunable channels removed
    round_to: int | None
    global_ranking: bool
    rewrites: tuple[str, ...] = ()
    removed_blocks: tuple[str, ...] = ()
    channel_history: tuple[tuple[str, bool, tuple[int, ...]], ...] = ()
    params_before: int = 0
    params_after: int = 0
    macs_before: int = 0
    macs_after: int = 0
    budget: str | None = None
    predicted_latency_ms: float | None = None
    # --reconstruct: each refit layer's output error on the sampled positions (relative), before and after
    reconstructed: tuple[tuple[str, float, float], ...] = ()
    rewound_to: str | None = None  # --rewind: the early checkpoint the surviving weights were set to
    # --sparsity-2of4: "2:4" when every eligible Conv2d/Linear weight holds that pattern (prune/sparsity.py; the
    # saved weights carry the zeros), and the Conv2d/Linear layers left dense (inputs not a multiple of 4, grouped)
    sparsity: str | None = None
    dense_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileReport(Record):
    """End-to-end latency (and energy) of one artifact on one target."""

    model: str
    target: TargetProfile
    device: DeviceInfo
    artifact: Artifact
    latency: LatencyStats
