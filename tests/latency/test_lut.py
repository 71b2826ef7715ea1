import json

import pytest

from edgeprune.backends._registry import get_backend, with_precision
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.profiles import load_profile, with_runtime
from edgeprune.devices.transport import LocalTransport
from edgeprune.latency.lut import CELLS, MAX_ROUNDS, ROUNDS, LutReport, build_lut
from edgeprune.latency.table import device_key
from edgeprune.models import load_model
from tests.conftest import run_cli

CALIBRATED_RUNTIMES = [r for r in load_profile("host").can_run() if "int8" in get_backend(r).calibrated]


def test_profile_lut_measures_calibrates_and_reports_the_prediction_error(tmp_path):
    cache = tmp_path / "cache"
    result = run_cli("profile", "--model", "cifar:resnet20", "--target", "host", "--threads", "2", "--runs", "30",
                     "--lut", "--lut-variants", "1", "--lut-calibration", "1", "--step", "16", "--cache", cache, "--out", tmp_path / "run",
                     "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = LutReport.from_dict(json.loads(result.stdout))
    assert report.threads == 2 and report.step == 16 and report.measured_now == len(report.entries) > 20
    assert [v.role for v in report.variants] == ["calibration"] * 2 + ["evaluation"]
    # a 0.6 ms model gets more than the 3 least rounds (see lut.ROUNDS_TIME_S), every model the same number
    rounds = len(report.variants[0].round_medians_ms)
    assert ROUNDS < rounds <= MAX_ROUNDS
    assert all(v.measured.n == 30 * rounds and len(v.round_medians_ms) == rounds and v.measured.threads == 2
               for v in report.variants)  # fmt: skip
    unpruned = report.variants[0]
    assert all(v.macs < unpruned.macs for v in report.variants[1:])  # the variants really are pruned
    assert all(0 <= e.median_ms < 50 and 0 < e.alone_ms < 50 for e in report.entries)
    assert report.mape_percent is not None and report.mape_percent < 100
    assert (tmp_path / "run" / "lut.json").is_file() and (tmp_path / "run" / "profile.json").is_file()

    # a second build on the same device measures no layer again
    again = build_lut(load_model("cifar:resnet20"), load_profile("host"), tmp_path / "again", threads=2, step=16,
                      variants=0, calibration_variants=0, runs=30, cache_dir=cache)  # fmt: skip
    assert again.measured_now == 0 and again.from_cache == len(again.entries) == len(report.entries)


def _small_cnn():
    import torch
    from torch import nn

    from edgeprune.models.base import LoadedModel, image_input

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # fmt: skip
    return LoadedModel(net.eval(), "python:small_cnn", "classification", image_input(16, 16), None)


@pytest.mark.parametrize("runtime", CALIBRATED_RUNTIMES)
def test_an_int8_table_is_timed_on_cells_the_runtime_quantized(runtime, tmp_path):
    # every host runtime with a calibrated (int8) precision: its cells are exported and quantized by that backend,
    # timed in that runtime, and cached apart from the same device's fp32 cells
    target = with_precision(with_runtime(load_profile("host"), runtime), "int8")
    report = build_lut(_small_cnn(), target, tmp_path / "run", threads=1, step=8, variants=1, calibration_variants=1,
                       runs=30, cache_dir=tmp_path / "cache")  # fmt: skip
    assert report.precision == "int8" and report.runtime == runtime and f"{runtime} int8" in report.summary()
    assert "random inputs" in report.method and f"exported by the {runtime} backend" in report.method
    # conv 3→{8,16}; conv {8,16}→{8,16}; linear {8,16}→{8,10}
    assert report.measured_now == len(report.entries) == 10 and report.remeasured_now == 10
    assert all(e.runtime == runtime and 0 <= e.median_ms < 50 and 0 < e.alone_ms < 50 for e in report.entries)
    assert [v.role for v in report.variants] == ["calibration"] * 2 + ["evaluation"]
    with AgentSession(LocalTransport()) as agent:
        device = agent.info(target.name, runtime)
    assert report.device_key == device_key(device, 1, "int8", CELLS) != device_key(device, 1, "fp32", CELLS)
