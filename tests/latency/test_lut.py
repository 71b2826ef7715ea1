import json

from edgeprune.devices.profiles import load_profile
from edgeprune.latency.lut import MAX_ROUNDS, ROUNDS, LutReport, build_lut
from edgeprune.models import load_model
from tests.conftest import run_cli


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
    assert all(0 < e.median_ms < 50 for e in report.entries)
    assert report.mape_percent is not None and report.mape_percent < 100
    assert (tmp_path / "run" / "lut.json").is_file() and (tmp_path / "run" / "profile.json").is_file()

    # a second build on the same device measures no layer again
    again = build_lut(load_model("cifar:resnet20"), load_profile("host"), tmp_path / "again", threads=2, step=16,
                      variants=0, calibration_variants=0, runs=30, cache_dir=cache)  # fmt: skip
    assert again.measured_now == 0 and again.from_cache == len(again.entries) == len(report.entries)
