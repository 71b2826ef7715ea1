"""Records that describe a model's interface and a target device: what a profile YAML and a device probe hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeprune.types.record import Record

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
    # every rail (edgeprune/devices/sensors.py decides, and the result says which rails it used).
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


def emulation_label(kind: str | None) -> str | None:
    """What every latency and energy figure timed on an emulated CPU carries (kind: the agent's, e.g. qemu-user)."""
    return f"emulated ({kind}): not representative of the device" if kind else None


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
    emulation: dict[str, str] | None = None  # {kind, evidence} when the agent runs under emulation (qemu-user)

    @property
    def emulation_label(self) -> str | None:
        """The label every figure measured here carries when the CPU was emulated; None on real hardware."""
        return emulation_label(self.emulation["kind"]) if self.emulation else None

    def describe(self) -> str:
        """One line: where this ran, with versions, and the emulation label when there is one."""
        text = (f"{self.hostname}: machine {self.arch}, {self.cpu}, Python {self.python}, numpy {self.numpy_version}, "
                f"{self.runtime} {self.runtime_version}")  # fmt: skip
        if self.emulation:
            text += f"; {self.emulation_label} ({self.emulation['evidence']})"
        return text

    _volatile = ("clocks_now_khz", "thermal_c")
