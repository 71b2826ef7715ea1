"""Energy per inference: measured where the target has a sensor, else estimated from a sourced power figure and
labelled `estimated`, else `unavailable` with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.types import TargetProfile


@dataclass(frozen=True)
class EnergyFigure:
    energy: str  # measured | estimated | unavailable
    energy_mj: float | None
    power_w: float | None
    note: str


def energy_for(profile: TargetProfile, median_ms: float, batch: int = 1) -> EnergyFigure:
    """mJ per inference (per sample when batch > 1). Sensor readers arrive with the energy issue; until then a
    target with a sensor still gets no number rather than a guessed one."""
    power = profile.power
    if power.sensor:
        return EnergyFigure("unavailable", None, None, f"reading the {power.sensor} sensor is not implemented yet")
    if power.estimate_w is not None:
        watts = float(power.estimate_w.value)
        return EnergyFigure(
            "estimated",
            watts * median_ms / batch,  # W × ms = mJ
            watts,
            f"{watts} W × median latency; power figure from {power.estimate_w.source}",
        )
    return EnergyFigure("unavailable", None, None, f"target {profile.name} has no power sensor and no sourced power figure")
