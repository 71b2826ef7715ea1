"""The replies of the on-device agent (targets/agent.py) as records, for the protocol version AGENT_VERSION.

edgeprune/devices/agent_client.py checks every reply against these records once, on arrival; a change to the
agent's replies bumps AGENT_VERSION in targets/agent.py and here together (tests/devices/test_agent_client.py
holds them equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeprune.types.device import emulation_label
from edgeprune.types.record import Record
from edgeprune.types.results import LatencyStats

AGENT_VERSION = 4


@dataclass(frozen=True)
class BenchResult(Record):
    """A `bench` reply: the wall time of each timed run, after `warmup` untimed ones; with a power request also the
    sensor's raw samples (`power`, for edgeprune.devices.energy)."""

    timings_ms: tuple[float, ...]
    threads: int
    warmup: int
    runtime: str
    runtime_version: str
    batch: int = 1
    precision: str | None = None  # the load-time precision hint used, where the runtime takes one
    input_shapes: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] | None = None
    emulation: str | None = None  # "qemu-user": timed by an emulated CPU (targets/agent_device.emulation)

    def latency_stats(self, method: str = "measured", *, pooled_ms: list[float] | None = None, **energy: Any):
        """These runs (or `pooled_ms`: runs of several benches of this model, this one among them) as LatencyStats;
        `energy`: the energy fields, when measured."""
        return LatencyStats.from_samples(
            self.timings_ms if pooled_ms is None else pooled_ms,
            warmup=self.warmup,
            runtime=self.runtime,
            runtime_version=self.runtime_version,
            threads=self.threads,
            batch=self.batch,
            method=method,
            emulation=emulation_label(self.emulation),
            **energy,
        )


@dataclass(frozen=True)
class RunOutputs(Record):
    """A `run` reply: each output's .npy path on the device."""

    outputs: dict[str, str]
    threads: int | None = None


@dataclass(frozen=True)
class EngineBuild(Record):
    """A `build-engine` reply: a TensorRT engine built on the device (targets/agent_trt_builder.py)."""

    engine: str  # its path on the device
    tensorrt_version: str
    build_s: float
    precision: str
    workspace_api: str | None = None
    input_shapes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # {kind, cache (a device path), batches, batch_size} for int8
    layers: list[dict[str, Any]] | None = None  # [{name, type, precision}]; None without an engine inspector
    layers_note: str | None = None
    float_layers: list[str] | None = None
    precision_flag: str | None = None
    sparse_weights: bool = False  # BuilderFlag.SPARSE_WEIGHTS was set (asked for, and TensorRT 8.0+)
