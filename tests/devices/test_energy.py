import numpy as np
import pytest

from edgeprune.devices.energy import energy_for, measure, power_request
from edgeprune.types import Fact, LatencyStats, PowerSpec, TargetProfile


def _target(power):
    return TargetProfile(name="dev", description="", runtime="onnxruntime", power=power)


def test_estimate_from_a_sourced_power_figure_is_labelled():
    figure = energy_for(_target(PowerSpec(estimate_w=Fact(7.5, "vendor datasheet"))), median_ms=20.0)
    assert figure.energy == "estimated"
    assert figure.energy_mj == pytest.approx(150.0)  # 7.5 W × 20 ms
    assert "vendor datasheet" in figure.note and figure.detail is None


def test_per_sample_energy_for_batches():
    figure = energy_for(_target(PowerSpec(estimate_w=Fact(10, "x"))), median_ms=40.0, batch=4)
    assert figure.energy_mj == pytest.approx(100.0)


def test_no_sensor_no_figure_says_so():
    figure = energy_for(_target(PowerSpec()), median_ms=5.0)
    assert (figure.energy, figure.energy_mj) == ("unavailable", None)
    assert "no power sensor" in figure.note
    assert power_request(_target(PowerSpec())) is None


def test_a_sensor_without_samples_gives_no_guess():
    target = _target(PowerSpec(sensor="ina3221", estimate_w=Fact(5, "x")))
    assert power_request(target) == {"sensor": "ina3221", "interval_ms": 50.0, "idle_s": 1.0}
    figure = energy_for(target, median_ms=5.0)
    assert figure.energy == "unavailable" and "no ina3221 samples" in figure.note
    unreadable = {"sensor": "ina3221", "available": False, "reason": "no INA3221 rails under /sys/..."}
    figure = energy_for(target, median_ms=5.0, power=unreadable, runs=50)
    assert figure.energy == "unavailable" and "cannot be read on the device: no INA3221 rails" in figure.note


def _ina_payload(idle_w, run_w, *, idle=(0.0, 0.9), run=(1.0, 3.0), step=0.1):
    """Agent-shaped samples of a one-rail INA3221 (iio form: mW) at `step` seconds."""
    samples = [[t, [str(idle_w * 1000)]] for t in np.arange(idle[0], idle[1] + 1e-9, step)]
    samples += [[t, [str(run_w * 1000)]] for t in np.arange(run[0], run[1] + 1e-9, step)]
    return {
        "sensor": "ina3221",
        "available": True,
        "kind": "pull",
        "interval_ms": step * 1000,
        "meta": {"variant": "iio", "rails": [{"rail": "POM_5V_IN", "power_mw": 0}]},
        "windows": {"idle": list(idle), "run": list(run)},
        "samples": samples,
        "errors": [],
    }


def test_measured_energy_gross_and_net_of_idle():
    figure = measure(_ina_payload(2.0, 5.0), runs=100, batch=1)
    d = figure.detail
    assert figure.energy == "measured" and d.basis == "net"
    assert d.gross_mj == pytest.approx(100.0)  # 5 W × 2 s / 100 inferences
    assert d.idle_power_w == pytest.approx(2.0)
    assert d.net_mj == pytest.approx(60.0) == figure.energy_mj  # (5 - 2) W × 2 s / 100
    assert (d.rails, d.n_samples_run, d.n_samples_idle) == (("POM_5V_IN",), 21, 10)
    assert d.achieved_interval_ms == pytest.approx(100.0) and d.method == "trapezoid over power samples"
    assert "POM_5V_IN" in figure.note and "net of idle 60.000 mJ" in figure.note


def test_trapezoid_between_samples():
    payload = _ina_payload(0.0, 0.0, idle=(0.0, 0.0), run=(0.0, 1.0), step=1.0)
    payload["samples"] = [[0.0, ["1000"]], [1.0, ["3000"]]]  # 1 W rising linearly to 3 W: 2 J
    payload["windows"] = {"run": [0.0, 1.0]}
    figure = measure(payload, runs=4, batch=2)
    assert figure.detail.gross_mj == pytest.approx(250.0)  # 2 J / 8 samples
    assert figure.detail.basis == "gross" and "energy_mj is gross" in figure.note


def test_energy_counters_with_wraparound():
    zones = [{"zone": "intel-rapl:0", "name": "package-0", "max_energy_range_uj": "1000000"}]  # wraps every 1 J
    t = np.arange(0.0, 3.0001, 0.05)
    watts = np.where(t < 1.0, 2.0, 5.0)
    joules = np.concatenate([[0.0], np.cumsum(watts[:-1] * 0.05)])
    samples = [[ti, [str(int(round(j * 1e6)) % 1000000)]] for ti, j in zip(t, joules)]
    payload = {
        "sensor": "rapl",
        "available": True,
        "interval_ms": 50.0,
        "meta": {"zones": zones},
        "windows": {"idle": [0.0, 1.0], "run": [1.0, 3.0]},
        "samples": samples,
    }
    figure = measure(payload, runs=10, batch=1)
    assert figure.detail.method == "difference of energy counters"
    assert figure.detail.power_w == pytest.approx(5.0)
    assert figure.detail.idle_power_w == pytest.approx(2.0)
    assert figure.energy_mj == pytest.approx(600.0)  # (5 - 2) W × 2 s / 10


def test_unusable_samples_are_unavailable_with_the_reason():
    target = _target(PowerSpec(sensor="tegrastats"))
    payload = {
        "sensor": "tegrastats",
        "available": True,
        "interval_ms": 50.0,
        "meta": {},
        "windows": {"run": [0.0, 1.0]},
        "samples": [[0.1, "tegrastats: Permission denied"]],
    }
    figure = energy_for(target, 1.0, power=payload, runs=50)
    assert figure.energy == "unavailable"
    assert "samples unusable: not a tegrastats line: 'tegrastats: Permission denied'" in figure.note


def test_too_few_samples_in_a_short_loop():
    payload = _ina_payload(2.0, 5.0, run=(1.0, 1.05), step=0.1)
    payload["samples"] = [s for s in payload["samples"] if s[0] < 1.0] + [[1.2, ["5000"]]]
    figure = energy_for(_target(PowerSpec(sensor="ina3221")), 1.0, power=payload, runs=50)
    assert figure.energy == "unavailable" and "--runs" in figure.note


def test_latency_stats_round_trip_with_energy_detail():
    figure = measure(_ina_payload(2.0, 5.0), runs=100)
    stats = LatencyStats.from_samples(
        [1.0, 2.0, 3.0],
        warmup=1,
        runtime="r",
        runtime_version="1",
        threads=1,
        energy=figure.energy,
        energy_mj=figure.energy_mj,
        power_w=figure.power_w,
        energy_note=figure.note,
        energy_detail=figure.detail,
    )
    again = LatencyStats.from_json(stats.to_json())
    assert again == stats and again.energy_detail.rails == ("POM_5V_IN",)
    assert "[net; gross 100.00 mJ at 5.00 W, ina3221]" in stats.summary()
