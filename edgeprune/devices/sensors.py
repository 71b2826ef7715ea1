"""Parsers for the raw power readings the on-device agent returns (targets/agent.py samples, the host parses).

One parser per documented format; tests/devices/test_sensors.py checks each against published output and cites
where it comes from. They are pure: text in, typed values out. Anything that does not fit raises SensorError (a
ValueError) quoting the offending line, never a guess.

Units: watts for power, joules for energy, seconds for the agent's time.perf_counter timestamps.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class SensorError(ValueError):
    """A sensor's output does not have the documented form, or says the reading cannot be used."""


def _quote(line: str, limit: int = 160) -> str:
    line = line.strip()
    return repr(line if len(line) <= limit else line[:limit] + "...")


def _number(text: str, what: str, line: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise SensorError(f"{what} is not a number in {_quote(line)}") from None


# --- NVIDIA Jetson: tegrastats ----------------------------------------------------------------------------------
# A rail is NAME followed by instantaneous/average values, with an "mW" unit from JetPack 5 on ("VDD_IN
# 5012mW/5012mW"), without one before ("POM_5V_IN 3161/3161"); a third value, if printed, is ignored. The lookahead
# keeps "RAM 2217/3956MB" and "IRAM 0/252kB(..." out. Orin prints unconnected INA3221 channels as "NC 0mW/0mW".
_TEGRA_RAIL = re.compile(r"(?<!\S)([A-Za-z][A-Za-z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")


@dataclass(frozen=True)
class TegrastatsReading:
    rails_w: dict[str, float]  # instantaneous power per rail
    average_w: dict[str, float]  # tegrastats' running average since it started


def parse_tegrastats_line(line: str) -> TegrastatsReading:
    """One line of `tegrastats` (JetPack 4, 5 and 6 forms)."""
    rails = {m.group(1): m for m in _TEGRA_RAIL.finditer(line) if m.group(1) != "NC"}
    if not rails:
        if re.search(r"\bRAM \d+/\d+MB", line):
            raise SensorError(
                f"tegrastats line has no power rails (on Jetson Orin tegrastats prints them only "
                f"when run as root): {_quote(line)}"
            )
        raise SensorError(f"not a tegrastats line: {_quote(line)}")
    return TegrastatsReading(
        rails_w={name: int(m.group(2)) / 1000.0 for name, m in rails.items()},
        average_w={name: int(m.group(3)) / 1000.0 for name, m in rails.items()},
    )


# --- NVIDIA Jetson: INA3221 sysfs ---------------------------------------------------------------------------------


def ina3221_rails_w(meta: dict[str, Any], raw: Sequence[str]) -> dict[str, float]:
    """Power per rail from one agent sample of the INA3221 files. JetPack 5+ hwmon: inN_input in mV and currN_input
    in mA (kernel Documentation/hwmon/ina3221.rst); JetPack 4 iio: in_powerN_input in mW."""
    out = {}
    for rail in meta["rails"]:
        name = rail["rail"]
        try:
            if "power_mw" in rail:
                out[name] = _number(raw[rail["power_mw"]], f"{name} power", raw[rail["power_mw"]]) / 1000.0
            else:
                mv = _number(raw[rail["volt_mv"]], f"{name} voltage", raw[rail["volt_mv"]])
                ma = _number(raw[rail["curr_ma"]], f"{name} current", raw[rail["curr_ma"]])
                out[name] = mv * ma / 1e6
        except IndexError:
            raise SensorError(f"INA3221 sample has {len(raw)} values, rail {name} needs more") from None
    return out


# --- Raspberry Pi 5: vcgencmd pmic_read_adc --------------------------------------------------------------------------
_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV]) (current|volt)\((\d+)\)=([-+0-9.eE]+)([AV])\s*$")


@dataclass(frozen=True)
class PmicReading:
    rails_w: dict[str, float]  # volt x current for every rail reported with both
    current_a: dict[str, float]
    volt_v: dict[str, float]
    voltage_only: tuple[str, ...]  # rails with a voltage and no current (EXT5V, BATT): no power from these


def parse_pmic_read_adc(text: str) -> PmicReading:
    """The Raspberry Pi 5 PMIC ADCs: lines "NAME_A current(N)=xA" and "NAME_V volt(M)=yV". The channel numbers of a
    rail's current and voltage differ, so they pair by NAME."""
    current, volt = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _PMIC_LINE.match(line)
        if not m or (m.group(2) == "A") != (m.group(3) == "current") or m.group(2) != m.group(6):
            raise SensorError(f"not a pmic_read_adc line: {_quote(line)}")
        (current if m.group(2) == "A" else volt)[m.group(1)] = _number(m.group(5), "reading", line)
    if not current:
        raise SensorError(f"pmic_read_adc printed no currents: {_quote(text)}")
    paired = [name for name in current if name in volt]
    return PmicReading(
        rails_w={name: current[name] * volt[name] for name in paired},
        current_a=current,
        volt_v=volt,
        voltage_only=tuple(sorted(set(volt) - set(current))),
    )


# --- Android: ODPM energy_value, battery fuel gauge ---------------------------------------------------------------
_ODPM_CHANNEL = re.compile(r"^CH(\d+)\(T=(\d+)\)\[([^\]]*)\], (\d+)$")


@dataclass(frozen=True)
class OdpmReading:
    timestamp_ms: int  # "t=": when the PMIC accumulators were read
    energy_uws: dict[str, int]  # accumulated energy per rail (schematic name), microwatt-seconds = microjoules
    duration_ms: dict[str, int]  # how long each channel has been accumulating


def parse_odpm_energy_value(text: str) -> OdpmReading:
    """/sys/bus/iio/devices/iio:deviceN/energy_value of the Pixel ODPM driver: "t=<ms>" then one
    "CH<N>(T=<duration ms>)[<schematic name>], <accumulated energy uWs>" per channel."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or not re.fullmatch(r"t=\d+", lines[0]):
        raise SensorError(f"energy_value does not start with t=<ms>: {_quote(lines[0] if lines else text)}")
    energy, duration = {}, {}
    for line in lines[1:]:
        m = _ODPM_CHANNEL.match(line)
        if not m:
            raise SensorError(f"not an ODPM channel line: {_quote(line)}")
        name = m.group(3) or f"CH{m.group(1)}"
        energy[name], duration[name] = int(m.group(4)), int(m.group(2))
    if not energy:
        raise SensorError("energy_value lists no channels")
    return OdpmReading(int(lines[0][2:]), energy, duration)


def battery_power_w(status: str, current_now: str, voltage_now: str) -> float:
    """Power drawn from the battery, from power_supply sysfs: current_now in uA, voltage_now in uV.

    The sign of current_now differs by driver (the kernel documents negative = discharging since 2020, older
    drivers use positive = discharging or report only magnitudes), so the sign is not trusted: the magnitude is
    used, and only while `status` says Discharging, since on a charger the battery current is not the device's
    draw."""
    line = f"status={status!r} current_now={current_now!r} voltage_now={voltage_now!r}"
    ua, uv = _number(current_now, "current_now", line), _number(voltage_now, "voltage_now", line)
    if status.strip() != "Discharging":
        raise SensorError(
            f"battery status is {status.strip()!r}, not 'Discharging': while it charges its current "
            f"is not the device's draw (unplug USB power, e.g. use adb over Wi-Fi)"
        )
    return abs(ua) * 1e-6 * abs(uv) * 1e-6


# --- NVML -----------------------------------------------------------------------------------------------------------


def parse_nvidia_smi_power(line: str) -> tuple[int, float]:
    """One line of `nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits`: (GPU index, watts)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 2 or not parts[0].isdigit():
        raise SensorError(f"not an 'index, power.draw' line: {_quote(line)}")
    if parts[1].startswith("["):  # "[N/A]", "[Not Supported]"
        raise SensorError(f"NVML reports no power for GPU {parts[0]} ({parts[1]}); on a Jetson use ina3221")
    return int(parts[0]), _number(parts[1], "power.draw", line)


# --- RAPL -------------------------------------------------------------------------------------------------------------


def unwrap_counter(values: Sequence[float], max_range: float) -> np.ndarray:
    """A wrapping counter (RAPL energy_uj wraps to 0 past max_energy_range_uj) made monotonic. Assumes at most one
    wrap between consecutive readings, which holds at sampling intervals far below the wrap time (minutes). A drop
    of less than half the range is read jitter, not a wrap, and counts as no energy."""
    v = np.asarray(values, dtype=np.float64)
    if max_range <= 0:
        raise SensorError(f"max_energy_range_uj must be positive, got {max_range}")
    steps = np.diff(v)
    steps = np.where(steps < -max_range / 2, steps + max_range, np.maximum(steps, 0.0))
    return np.concatenate([v[:1], v[0] + np.cumsum(steps)])


# --- device state ---------------------------------------------------------------------------------------------------
# `vcgencmd get_throttled` bits, from the Raspberry Pi documentation (computers/os.adoc, get_throttled).
THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def parse_get_throttled(text: str) -> tuple[int, tuple[str, ...]]:
    """`vcgencmd get_throttled` ("throttled=0x50005") -> (bits, names of the set bits)."""
    m = re.fullmatch(r"\s*throttled=(0x[0-9a-fA-F]+)\s*", text)
    if not m:
        raise SensorError(f"not get_throttled output: {_quote(text)}")
    bits = int(m.group(1), 16)
    return bits, tuple(name for bit, name in sorted(THROTTLE_BITS.items()) if bits >> bit & 1)


def parse_nvpmodel_query(text: str) -> tuple[str, int | None]:
    """`nvpmodel -q` ("NV Power Mode: MAXN" then the mode number) -> (name, number)."""
    m = re.search(r"NV Power Mode: *(\S+)", text)
    if not m:
        raise SensorError(f"not nvpmodel -q output: {_quote(text)}")
    number = re.search(r"^\s*(\d+)\s*$", text[m.end() :], re.MULTILINE)
    return m.group(1), int(number.group(1)) if number else None


# --- agent payload -> one trace -------------------------------------------------------------------------------------
BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # Jetson's total-input rails (rbonghi/jetson_stats#51; NVIDIA forum)


@dataclass(frozen=True)
class PowerTrace:
    """The chosen rails of one sensor over the sampling, summed: `values` are watts ("power") or cumulative joules
    ("energy", from counters), at `times` (agent perf_counter seconds)."""

    sensor: str
    kind: str
    times: np.ndarray
    values: np.ndarray
    rails: tuple[str, ...]
    rail_rule: str


def select_rails(available: Iterable[str], wanted: Sequence[str], default: str) -> tuple[tuple[str, ...], str]:
    """The rails to sum and why. `default`: "board_input" (VDD_IN/POM_5V_IN where present, else all), "all", or
    "package" (RAPL package-N zones, else all)."""
    names = list(dict.fromkeys(available))
    if wanted:
        missing = [r for r in wanted if r not in names]
        if missing:
            raise SensorError(f"rails {missing} are not reported by the sensor (it reports {names})")
        return tuple(wanted), "rails named by the profile"
    if default == "board_input":
        for rail in BOARD_INPUT_RAILS:
            if rail in names:
                return (rail,), f"board-input rail {rail} (the other rails are inside it)"
        return tuple(names), "sum of all rails (this module has no board-input rail)"
    if default == "package":
        packages = [n for n in names if n.startswith("package")]
        if packages:
            return tuple(packages), "sum of the package zones (psys/dram zones overlap or are not top-level)"
    return tuple(names), "sum of all rails"


def _sum_rails(
    per_rail: dict[str, tuple[list[float], list[float]]], rails: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Rails sampled at their own times summed on the union of the times (linear interpolation in between)."""
    grid = np.unique(np.concatenate([np.asarray(per_rail[r][0], dtype=np.float64) for r in rails]))
    total = np.zeros_like(grid)
    for r in rails:
        t, v = (np.asarray(x, dtype=np.float64) for x in per_rail[r])
        order = np.argsort(t)
        total += np.interp(grid, t[order], v[order])
    return grid, total


def _aligned(samples: Sequence[tuple[float, dict[str, float]]]) -> dict[str, tuple[list[float], list[float]]]:
    per_rail: dict[str, tuple[list[float], list[float]]] = {}
    for t, rails in samples:
        for name, value in rails.items():
            per_rail.setdefault(name, ([], []))
            per_rail[name][0].append(t)
            per_rail[name][1].append(value)
    return per_rail


def trace_from_agent(power: dict[str, Any], rails: Sequence[str] = ()) -> PowerTrace:
    """Parse the samples of one agent `bench` power result (see targets/agent.py PowerSampler.stop)."""
    sensor, meta = power["sensor"], power.get("meta") or {}
    samples = sorted(power.get("samples") or [], key=lambda sample: sample[0])
    if not samples:
        errors = "; ".join(str(e[1]) for e in power.get("errors") or [])
        raise SensorError(f"the {sensor} sensor gave no samples" + (f" ({errors})" if errors else ""))
    kind, default = "power", "all"
    if sensor == "tegrastats":
        parsed = [(t, parse_tegrastats_line(raw).rails_w) for t, raw in samples]
        default = "board_input"
    elif sensor == "ina3221":
        parsed = [(t, ina3221_rails_w(meta, raw)) for t, raw in samples]
        default = "board_input"
    elif sensor == "pmic_read_adc":
        parsed = [(t, parse_pmic_read_adc(raw).rails_w) for t, raw in samples]
    elif sensor == "battery":
        parsed = [(t, {"battery": battery_power_w(*raw)}) for t, raw in samples]
    elif sensor == "nvml":
        if meta.get("source") == "pynvml":
            parsed = [(t, {f"gpu{i}": mw / 1000.0 for i, mw in enumerate(raw)}) for t, raw in samples]
        else:
            parsed = []
            for t, raw in samples:
                index, watts = parse_nvidia_smi_power(raw)
                parsed.append((t, {f"gpu{index}": watts}))
    elif sensor == "odpm":
        kind = "energy"
        parsed = []
        for t, texts in samples:
            rails_j: dict[str, float] = {}
            for device, text in enumerate(texts):
                for name, uws in parse_odpm_energy_value(text).energy_uws.items():
                    rails_j[name if name not in rails_j else f"{name}#{device}"] = uws * 1e-6
            parsed.append((t, rails_j))
    elif sensor == "rapl":
        kind, default = "energy", "package"
        zones = meta["zones"]
        names = [z["name"] or z["zone"] for z in zones]
        counts = np.array([[_number(v, "energy_uj", v) for v in raw] for _, raw in samples], dtype=np.float64)
        if counts.shape[1:] != (len(zones),):
            raise SensorError(f"RAPL samples have {counts.shape[1:]} values for {len(zones)} zones")
        joules = (
            np.stack(
                [
                    unwrap_counter(
                        counts[:, i],
                        _number(z["max_energy_range_uj"], "max_energy_range_uj", str(z["max_energy_range_uj"])),
                    )
                    for i, z in enumerate(zones)
                ],
                axis=1,
            )
            * 1e-6
        )
        parsed = [(t, dict(zip(names, row))) for (t, _), row in zip(samples, joules)]
    else:
        raise SensorError(f"no parser for sensor {sensor!r}")
    per_rail = _aligned(parsed)
    chosen, rule = select_rails(per_rail, rails, default)
    if sensor == "nvml":
        rule += " (NVML board power; many GPUs report it as a moving average over up to 1 s)"
    if sensor == "pmic_read_adc":
        rule += " (PMIC output rails only: USB, HAT and other 5 V loads are not metered)"
    if sensor == "odpm":
        rule += " (the ODPM channels configured on this phone, not the whole device)"
    times, values = _sum_rails(per_rail, chosen)
    return PowerTrace(sensor=sensor, kind=kind, times=times, values=values, rails=chosen, rail_rule=rule)
