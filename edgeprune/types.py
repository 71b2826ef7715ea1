"""Artifacts that flow between stages: frozen dataclasses with a JSON round-trip and a fingerprint.

Every top-level JSON document carries `schema_version` and `kind`; `load_json` refuses a document written by an
incompatible schema instead of guessing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types as _pytypes
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeprune.errors import ConfigError

SCHEMA_VERSION = 1
T = TypeVar("T", bound="Record")


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, _pytypes.UnionType):
        members = [a for a in args if a is not type(None)]
        record_members = [a for a in members if isinstance(a, type) and issubclass(a, Record)]
        if record_members and isinstance(value, dict):
            return record_members[0]._from_fields(value)
        return _decode(members[0], value) if len(members) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value))
    if origin is dict:
        return {k: _decode(args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp._from_fields(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class Record:
    """Mixin for the frozen dataclasses below: dict/JSON round-trip and a content fingerprint."""

    # Fields left out of the fingerprint (timestamps, paths): two runs that produced the same content agree.
    _volatile: typing.ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "kind": type(self).__name__, **_encode(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{cls.__name__} was written with schema_version {version}",
                expected=f"schema_version {SCHEMA_VERSION}",
                fix="re-run the command that produced it with this edgeprune version",
            )
        kind = data.get("kind", cls.__name__)
        if kind != cls.__name__:
            raise ConfigError(f"JSON holds a {kind}", expected=f"a {cls.__name__}")
        return cls._from_fields(data)

    @classmethod
    def _from_fields(cls: type[T], data: dict[str, Any]) -> T:
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: _decode(hints[k], v) for k, v in data.items() if k in known}
        return cls(**kwargs)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        from edgeprune.fileio import write_text

        return write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        try:
            return cls.from_json(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{cls.__name__} file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None

    @property
    def fingerprint(self) -> str:
        content = {k: v for k, v in _encode(self).items() if k not in self._volatile}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- shared pieces -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec(Record):
    """One model input or output. A string dimension is dynamic (e.g. "batch")."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        return tuple(batch if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class Preprocessing(Record):
    """How an image becomes the model's input, so export and verify never guess.

    The image is decoded as `channel_order` (RGB, BGR or L). With `resize` set, its shorter side goes to `resize`
    and it is centre-cropped to `crop` (h, w): the classification eval transform. With `resize` None it goes
    straight to `crop`, or, with `letterbox`, keeps its aspect ratio and is padded with `pad_value`.
    `interpolation` is a torchvision mode or "bilinear-align-corners" (Darknet's resize_image); `antialias`
    False means OpenCV's resize. Then it is multiplied by `scale`, normalised with `mean`/`std` and laid out as
    `layout`.
    """

    crop: tuple[int, int]
    resize: int | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    channel_order: str = "RGB"
    layout: str = "NCHW"
    interpolation: str = "bilinear"
    antialias: bool = True
    letterbox: bool = False
    pad_value: float = 0.5  # on the 0..1 scale (Darknet 0.5, ultralytics 114/255)


@dataclass(frozen=True)
class DetectionHead(Record):
    """How the host turns a detector's output tensor into boxes, after the runtime ran it.

    layouts: "darknet" — (N, boxes, 5 + C): cx, cy, w, h in input pixels, objectness, per-class sigmoid
    probabilities (score = objectness × class probability); "ultralytics" — (N, 4 + C, boxes): cx, cy, w, h in
    input pixels, per-class scores.
    """

    layout: str
    num_classes: int
    conf_threshold: float
    iou_threshold: float
    max_det: int = 300
    class_agnostic_nms: bool = False


@dataclass(frozen=True)
class Fact(Record):
    """A hardware fact and where it comes from; a fact without a source is left out of a profile."""

    value: str | int | float
    source: str


# --- target and device ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connection(Record):
    """How the host reaches a target. None everywhere means "ask the user's tools": ssh reads ~/.ssh/config (a Host
    alias works), adb takes the only attached device. Flags and EDGEPRUNE_* variables override these
    (devices/transport.py: resolve_connection)."""

    kind: str = "local"  # local | ssh | adb
    host: str | None = None  # ssh: address or ~/.ssh/config alias
    user: str | None = None  # ssh: login user
    port: int | None = None  # ssh: port
    serial: str | None = None  # adb: device serial
    # adb: TFLite's benchmark_model: a path on the device, or a host file that is pushed; None: /data/local/tmp/
    # benchmark_model, where targets/android/setup.sh puts it (devices/android.py)
    benchmark_model: str | None = None
    python: str | None = None  # ssh: the device's Python that runs the agent; None: python3
    key: str | None = None  # ssh: identity file (its path only; the key is never read by edgeprune)
    ssh_config: str | None = None  # ssh: a config file used instead of ~/.ssh/config (ssh -F)


@dataclass(frozen=True)
class PowerSpec(Record):
    """How energy is obtained: a sensor name, or a sourced power figure to estimate from, or neither."""

    sensor: str | None = None
    estimate_w: Fact | None = None
    # Rails to sum when the sensor reports several; empty: the board-input rail where the sensor has one, else
    # every rail (edgeprune/latency/sensors.py decides, and the result says which rails it used).
    rails: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetupCommands(Record):
    """Shell commands run on the device around a measurement: `pin_clocks` before (fix the power mode and clocks),
    `restore` after; `source` is the document the commands come from. Empty: the target offers no such control."""

    pin_clocks: tuple[str, ...] = ()
    restore: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class ThrottleCheck(Record):
    """How the device tells whether it throttled: a `command` that prints the firmware's throttling state, and/or
    `temperature`, a sysfs glob of temperatures in millidegrees Celsius. None: not available on this target."""

    command: str | None = None
    temperature: str | None = None
    source: str = ""


@dataclass(frozen=True)
class TargetProfile(Record):
    name: str
    description: str
    runtime: str
    precision: str = "fp32"
    threads: int | None = None  # None: as many as the process may use, resolved on the device
    connection: Connection = field(default_factory=Connection)
    power: PowerSpec = field(default_factory=PowerSpec)
    hardware: dict[str, Fact] = field(default_factory=dict)
    source_file: str | None = None
    setup: SetupCommands = field(default_factory=SetupCommands)
    throttle: ThrottleCheck = field(default_factory=ThrottleCheck)
    channel_step: Fact | None = None  # channel counts run best as multiples of this (None: no sourced step)
    runtimes: tuple[str, ...] = ()  # every runtime the device can run (`--runtime`); `runtime` is the default

    _volatile = ("source_file",)

    def can_run(self) -> tuple[str, ...]:
        return self.runtimes or (self.runtime,)


@dataclass(frozen=True)
class DeviceInfo(Record):
    """What was observed on the device when it measured."""

    target: str
    hostname: str
    os: str
    arch: str
    cpu: str
    cpu_count: int
    python: str
    runtime: str
    runtime_version: str
    providers: tuple[str, ...] = ()
    cpu_governor: str | None = None
    throttling: str | None = None  # None: the device offers no way to read it
    numpy_version: str | None = None
    clocks: dict[str, Any] = field(default_factory=dict)  # cpufreq policy -> cpus, governor, min_khz, max_khz
    clocks_now_khz: dict[str, Any] = field(default_factory=dict)  # cpufreq policy -> current frequency
    power_mode: str | None = None  # Jetson `nvpmodel -q` output; None elsewhere
    thermal_c: dict[str, float] = field(default_factory=dict)  # "type (thermal_zoneN)" -> degrees C
    sensors: dict[str, Any] = field(default_factory=dict)  # power sensor -> {available, reason}
    runtimes: dict[str, Any] = field(default_factory=dict)  # runtime -> {available, version, reason} on the device

    _volatile = ("clocks_now_khz", "thermal_c")


# --- measurements ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnergyDetail(Record):
    """How a measured energy figure was obtained (edgeprune/latency/energy.py). Energies are per inference of one
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

    @classmethod
    def from_samples(cls, samples_ms: typing.Sequence[float], **meta: Any) -> LatencyStats:
        if len(samples_ms) == 0:
            raise ValueError("no latency samples")
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
        return text


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

    _volatile = ("files",)

    @property
    def path(self) -> Path:
        return Path(self.files[0])


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
                f"output {self.name}: {self.nonfinite_runtime} NaN/Inf value(s) from the runtime, "
                f"{self.nonfinite_reference} from PyTorch"
            )
        cosine = self.cosine_min if self.cosine_of == "worst" else self.cosine_mean
        return (
            f"output {self.name}: max-abs {self.max_abs:.3g} (tol {self.tolerance_max_abs:.3g}), "
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
    criterion: str  # l1 | bn | taylor | apoz
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


@dataclass(frozen=True)
class ProfileReport(Record):
    """End-to-end latency (and energy) of one artifact on one target."""

    model: str
    target: TargetProfile
    device: DeviceInfo
    artifact: Artifact
    latency: LatencyStats
