"""What a device farm (edgeprune/farm) reports with the figures it measured."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprune.types.record import Record


@dataclass(frozen=True)
class DeviceReference(Record):
    """One farm device's timings of the reference cells, and what the farm made of them."""

    device: str
    hostname: str
    reference_ms: tuple[float, ...]  # per reference model: the fastest session's median
    scale: float  # geometric mean over the models of reference_ms over the farm's median: 1.1 = 10 % slower
    refused: str | None = None  # why the farm did not use it (None: used)


@dataclass(frozen=True)
class FarmReport(Record):
    """Which devices measured, how they compare on the same reference cells, and what was lost on the way."""

    name: str
    reference_models: tuple[str, ...]
    devices: tuple[DeviceReference, ...]
    spread: float  # among the devices used: the slowest scale over the fastest, minus 1
    max_spread: float  # the farm file's limit on a device's |scale - 1|
    method: str
    cells_by_device: dict[str, int] = field(default_factory=dict)  # cells measured now, per device
    lost: dict[str, str] = field(default_factory=dict)  # device -> why it left mid-run
    ray_start_seconds: float | None = None  # starting (or joining) the Ray cluster
    job_seconds: float | None = None  # finished jobs' wall time, submission to result, summed over devices
    device_seconds: float | None = None  # of which spent inside the device actors' methods
    ray_share: float | None = None  # 1 - device_seconds / job_seconds: Ray's part of the jobs' wall time

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(d.device for d in self.devices if d.refused is None)

    def summary(self) -> str:
        cells = ", ".join(f"{d} {n} cells" for d, n in sorted(self.cells_by_device.items()))
        text = (f"measured on farm {self.name} ({len(self.used)} of {len(self.devices)} devices: {cells or 'no cells'}; "
                f"reference spread {100 * self.spread:.1f} %)")  # fmt: skip
        refused = [f"{d.device} ({d.refused})" for d in self.devices if d.refused]
        if refused:
            text += "; not used: " + "; ".join(refused)
        if self.lost:
            text += "; lost mid-run: " + "; ".join(f"{d} ({why})" for d, why in self.lost.items())
        return text
