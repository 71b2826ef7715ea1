"""Energy per inference: measured where the target has a sensor, else estimated from a sourced power figure and
labelled `estimated`, else `unavailable` with the reason.

Measured: the agent samples the sensor over an idle window (after warm-up) and over the timed loop; power is
integrated over the loop (trapezoid between samples, or the difference of an energy counter), divided by the
inferences (runs x batch, so per sample). Net energy subtracts the idle power over the same time; `energy_mj`
reports net when an idle window was measured, gross otherwise, and says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeprune.devices.sensors import PowerTrace, SensorError, trace_from_agent
from edgeprune.types import EnergyDetail, TargetProfile

DEFAULT_INTERVAL_MS = 50.0  # the sampling interval unless the caller asks for another
DEFAULT_IDLE_S = 1.0  # the idle window measured after warm-up, before the timed loop


@dataclass(frozen=True)
class EnergyFigure:
    energy: str  # measured | estimated | unavailable
    energy_mj: float | None
    power_w: float | None
    note: str
    detail: EnergyDetail | None = None


def power_request(profile: TargetProfile, interval_ms: float | None = None, idle_s: float | None = None) -> dict | None:
    """What the agent's `bench` is asked to sample for this target, or None when it has no sensor."""
    if not profile.power.sensor:
        return None
    return {
        "sensor": profile.power.sensor,
        "interval_ms": interval_ms or DEFAULT_INTERVAL_MS,
        "idle_s": DEFAULT_IDLE_S if idle_s is None else idle_s,
    }


def energy_for(
    profile: TargetProfile,
    median_ms: float,
    batch: int = 1,
    *,
    power: dict[str, Any] | None = None,
    runs: int | None = None,
) -> EnergyFigure:
    """mJ per inference (per sample when batch > 1). `power` is the agent's bench result["power"] and `runs` the
    number of timed runs it covers; a target with a sensor gets a measured figure or `unavailable` with the reason,
    never a guess in its place."""
    spec = profile.power
    if spec.sensor:
        if power is None:
            return EnergyFigure(
                "unavailable",
                None,
                None,
                f"no {spec.sensor} samples came back from the device (the agent was not asked for "
                f"power, or is too old to sample it)",
            )
        if not power.get("available", True):
            return EnergyFigure(
                "unavailable",
                None,
                None,
                f"the {spec.sensor} sensor cannot be read on the device: {power.get('reason')}",
            )
        if not runs:
            raise ValueError("measured energy needs the number of timed runs")
        try:
            return measure(power, runs=runs, batch=batch, rails=spec.rails)
        except SensorError as exc:
            return EnergyFigure("unavailable", None, None, f"{spec.sensor} samples unusable: {exc}")
    if spec.estimate_w is not None:
        watts = float(spec.estimate_w.value)
        return EnergyFigure(
            "estimated",
            watts * median_ms / batch,  # W × ms = mJ
            watts,
            f"{watts} W × median latency; power figure from {spec.estimate_w.source}",
        )
    return EnergyFigure(
        "unavailable", None, None, f"target {profile.name} has no power sensor and no sourced power figure"
    )


def measure(power: dict[str, Any], *, runs: int, batch: int = 1, rails: tuple[str, ...] = ()) -> EnergyFigure:
    """The measured figure from one agent power result; SensorError when the samples cannot give one."""
    trace = trace_from_agent(power, rails)
    interval_s = float(power.get("interval_ms") or DEFAULT_INTERVAL_MS) / 1000.0
    windows = power.get("windows") or {}
    if not windows.get("run") or None in windows["run"]:
        raise SensorError("the agent reported no timed-loop window for the samples")
    run0, run1 = windows["run"]
    gross_j, n_run, spacing = window_energy(trace, run0, run1, interval_s)
    run_s = run1 - run0
    idle_w, n_idle, idle_s = None, 0, None
    if windows.get("idle") and None not in windows["idle"]:
        idle0, idle1 = windows["idle"]
        if idle1 - idle0 >= 2 * interval_s:  # a shorter window gives an idle power of noise
            idle_j, n_idle, _ = window_energy(trace, idle0, idle1, interval_s)
            idle_s = idle1 - idle0
            idle_w = idle_j / idle_s
    inferences = runs * batch
    gross_mj = gross_j * 1000.0 / inferences
    net_mj = (gross_j - idle_w * run_s) * 1000.0 / inferences if idle_w is not None else None
    detail = EnergyDetail(
        sensor=trace.sensor,
        rails=trace.rails,
        rail_rule=trace.rail_rule,
        method="difference of energy counters" if trace.kind == "energy" else "trapezoid over power samples",
        interval_ms=interval_s * 1000.0,
        achieved_interval_ms=None if spacing is None else spacing * 1000.0,
        n_samples_run=n_run,
        n_samples_idle=n_idle,
        run_s=run_s,
        idle_s=idle_s,
        inferences=inferences,
        gross_mj=gross_mj,
        net_mj=net_mj,
        power_w=gross_j / run_s,
        idle_power_w=idle_w,
        basis="net" if net_mj is not None else "gross",
    )
    return EnergyFigure("measured", net_mj if net_mj is not None else gross_mj, detail.power_w, _note(detail), detail)


def window_energy(trace: PowerTrace, t0: float, t1: float, interval_s: float) -> tuple[float, int, float | None]:
    """(joules over [t0, t1], samples in it, median spacing of those samples). Samples within half an interval of
    the window count as bracketing it; the window must be covered by samples on both sides."""
    if t1 <= t0:
        raise SensorError(f"empty sampling window ({t0:.3f} .. {t1:.3f} s)")
    t, v = trace.times, trace.values
    slack = max(interval_s / 2.0, 1e-3)
    inside = t[(t >= t0 - slack) & (t <= t1 + slack)]
    if len(inside) < 2:
        raise SensorError(
            f"only {len(inside)} {trace.sensor} sample(s) fell in a {t1 - t0:.3f} s window at a {interval_s * 1000:.0f} ms "
            f"interval: run more inferences (--runs) or sample faster"
        )
    if t[0] > t0 + interval_s or t[-1] < t1 - interval_s:
        raise SensorError(
            f"the {trace.sensor} samples ({t[0]:.3f} .. {t[-1]:.3f} s) do not cover the window {t0:.3f} .. {t1:.3f} s"
        )
    spacing = float(np.median(np.diff(inside))) if len(inside) > 1 else None
    if trace.kind == "energy":
        e0, e1 = np.interp([t0, t1], t, v)
        return float(e1 - e0), len(inside), spacing
    grid = np.concatenate([[t0], t[(t > t0) & (t < t1)], [t1]])
    watts = np.interp(grid, t, v)  # holds the first/last sample's power up to a boundary a sample just missed
    return float(np.sum((watts[1:] + watts[:-1]) / 2.0 * np.diff(grid))), len(inside), spacing


def _note(d: EnergyDetail) -> str:
    text = (
        f"measured with {d.sensor} ({'+'.join(d.rails)}: {d.rail_rule}); {d.method}, {d.n_samples_run} samples "
        f"over {d.run_s:.2f} s"
    )
    if d.achieved_interval_ms is not None:
        text += f" every {d.achieved_interval_ms:.0f} ms (asked {d.interval_ms:.0f})"
    text += f"; gross {d.gross_mj:.3f} mJ/inference at {d.power_w:.3f} W over {d.inferences} inferences"
    if d.net_mj is not None:
        text += (
            f"; net of idle {d.net_mj:.3f} mJ/inference (idle {d.idle_power_w:.3f} W from {d.n_samples_idle} "
            f"samples over {d.idle_s:.2f} s)"
        )
        if d.net_mj <= 0:
            text += "; net <= 0: the load's power is within the idle noise, read the gross figure"
    else:
        text += "; no idle window (or one under two sampling intervals), so energy_mj is gross"
    return text
