import pytest

from edgeprune.latency.energy import energy_for
from edgeprune.types import Fact, PowerSpec, TargetProfile


def _target(power):
    return TargetProfile(name="dev", description="", runtime="onnxruntime", power=power)


def test_estimate_from_a_sourced_power_figure_is_labelled():
    figure = energy_for(_target(PowerSpec(estimate_w=Fact(7.5, "vendor datasheet"))), median_ms=20.0)
    assert figure.energy == "estimated"
    assert figure.energy_mj == pytest.approx(150.0)  # 7.5 W × 20 ms
    assert "vendor datasheet" in figure.note


def test_per_sample_energy_for_batches():
    figure = energy_for(_target(PowerSpec(estimate_w=Fact(10, "x"))), median_ms=40.0, batch=4)
    assert figure.energy_mj == pytest.approx(100.0)


def test_no_sensor_no_figure_says_so():
    figure = energy_for(_target(PowerSpec()), median_ms=5.0)
    assert (figure.energy, figure.energy_mj) == ("unavailable", None)
    assert "no power sensor" in figure.note


def test_a_sensor_without_a_reader_gives_no_guess():
    figure = energy_for(_target(PowerSpec(sensor="ina3221", estimate_w=Fact(5, "x"))), median_ms=5.0)
    assert figure.energy == "unavailable" and "ina3221" in figure.note
