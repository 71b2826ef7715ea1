"""Android profiling through adb + TFLite's benchmark_model: the command and the parsing as plain functions, the real
adb binary with no phone attached, and the whole path (push, quoting, facts, parsing, profile.json) through the
stand-in adb of test_adb.py, whose "device" shell is this machine's sh, running a stand-in benchmark_model that
prints published benchmark_model output."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeprune.commands import profile_end_to_end
from edgeprune.devices import adb as adb_module
from edgeprune.devices.android import (
    AndroidRun,
    benchmark_command,
    cpu_count_from_possible,
    energy_for_run,
    latency_from_run,
    parse_getprop,
    profile_android,
)
from edgeprune.devices.benchmark_model import parse_benchmark_model_output
from edgeprune.devices.transport import resolve_connection
from edgeprune.errors import ConfigError, DeviceError
from edgeprune.types import Artifact, Connection, Fact, LatencyStats, PowerSpec, ProfileReport, TargetProfile
from tests.devices.test_adb import fake_adb, real_adb  # noqa: F401  (fixtures)
from tests.devices.test_benchmark_model import TI_AM62X, ZEDBOARD

PIXEL_GETPROP = """\
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.model]: [Pixel 8]
[ro.soc.model]: [Tensor G3]
[persist.sys.odd]: [a]: b]
"""


def _android(tmp_path: Path, **connection) -> TargetProfile:
    return TargetProfile(
        name="android",
        description="",
        runtime="tflite",
        threads=4,
        connection=Connection(kind="adb", **connection),
        power=PowerSpec(sensor="odpm"),
    )


def _run(text: str, runs: int = 50) -> AndroidRun:
    return AndroidRun(
        serial="R58M",
        binary="/b",
        graph="/g.tflite",
        argv=("/b",),
        threads=4,
        warmup=3,
        runs=runs,
        result=parse_benchmark_model_output(text),
        output=text,
    )


def test_the_command_asks_for_exactly_the_runs_requested():
    assert benchmark_command(
        "/data/local/tmp/benchmark_model", "/data/local/tmp/edgeprune/m.tflite", threads=4, warmup=10, runs=50
    ) == [
        "/data/local/tmp/benchmark_model",
        "--graph=/data/local/tmp/edgeprune/m.tflite",
        "--num_threads=4",
        "--warmup_runs=10",
        "--num_runs=50",
        "--min_secs=0",
        "--warmup_min_secs=0",
        "--use_xnnpack=true",
    ]
    assert benchmark_command("/b", "/g", threads=1, warmup=0, runs=1, xnnpack=False)[-1] == "--use_xnnpack=false"
    assert not any("xnnpack" in a for a in benchmark_command("/b", "/g", threads=1, warmup=0, runs=1, xnnpack=None))
    with pytest.raises(ConfigError, match="threads >= 1"):
        benchmark_command("/b", "/g", threads=0, warmup=0, runs=1)


def test_phone_facts_parse():
    props = parse_getprop(PIXEL_GETPROP)
    assert props["ro.product.model"] == "Pixel 8" and props["persist.sys.odd"] == "a]: b"
    assert cpu_count_from_possible("0-7\n") == 8 and cpu_count_from_possible("0-3,6") == 5
    assert cpu_count_from_possible("") is None and cpu_count_from_possible("cat: denied") is None


def test_latency_from_a_run_with_percentiles_and_from_an_old_one_without():
    stats = latency_from_run(_run(TI_AM62X), runtime_version="benchmark_model sha256:abc")
    assert (stats.n, stats.warmup, stats.threads, stats.runtime) == (50, 3, 4, "tflite")
    assert stats.mean_ms == pytest.approx(1240.27) and stats.median_ms == pytest.approx(1239.807)
    assert (stats.min_ms, stats.max_ms) == (pytest.approx(1238.588), pytest.approx(1252.566))
    assert stats.cv == pytest.approx(2565 / 1.24027e6) and stats.p90_ms is None and stats.p99_ms is None
    assert (
        stats.method.startswith("measured: benchmark_model on R58M")
        and "per-run samples are not available" in stats.method
        and "count, mean, std, min, max, median" in stats.method
    )
    assert stats.summary().startswith("median 1239.807 ms (n=50, CV 0.2%, tflite benchmark_model sha256:abc")
    assert LatencyStats.from_json(stats.to_json()) == stats

    old = latency_from_run(_run(ZEDBOARD), runtime_version="v")
    assert old.median_ms is None and old.mean_ms == pytest.approx(747.733) and "mean 747.733 ms" in old.summary()
    cut = latency_from_run(_run(ZEDBOARD, runs=80), runtime_version="v")
    assert "50 of 80 runs finished within benchmark_model's 150 s limit" in cut.method
    with pytest.raises(DeviceError, match="printed no statistics line"):
        latency_from_run(_run("Average inference timings in us: Warmup: 1, Init: 2, Inference: 3"), runtime_version="v")


def test_energy_is_never_guessed(tmp_path):
    stats = latency_from_run(_run(TI_AM62X), runtime_version="v")
    old = latency_from_run(_run(ZEDBOARD), runtime_version="v")
    assert energy_for_run(_android(tmp_path), stats).note == "odpm is not sampled while benchmark_model runs over adb"
    estimated = dataclasses.replace(_android(tmp_path), power=PowerSpec(estimate_w=Fact(value=5.0, source="test")))
    figure = energy_for_run(estimated, stats)
    assert figure.energy == "estimated" and figure.energy_mj == pytest.approx(5.0 * 1239.807)
    assert energy_for_run(estimated, old).note.startswith("this benchmark_model build prints no median")


def test_the_binary_comes_from_the_profile_or_the_environment(tmp_path):
    profile = _android(tmp_path, benchmark_model="/data/local/tmp/bm")
    assert resolve_connection(profile, environ={}).benchmark_model == "/data/local/tmp/bm"
    env = {"EDGEPRUNE_BENCHMARK_MODEL": "/vendor/bin/benchmark_model"}
    assert resolve_connection(profile, environ=env).benchmark_model == "/vendor/bin/benchmark_model"


def test_real_adb_without_a_phone(real_adb, tmp_path):  # noqa: F811
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(DeviceError, match=r"no Android device is attached \(`adb devices` lists none\); fix: connect"):
        profile_android(model, _android(tmp_path), runs=30, warmup=1)
    with pytest.raises(ConfigError, match="is not a .tflite"):
        profile_android(tmp_path / "m.onnx", _android(tmp_path), runs=30, warmup=1)


# --- end to end through the stand-in adb ------------------------------------------------------------------------------

FAKE_BENCHMARK_MODEL = """#!{python}
import sys
with open({log!r}, "w") as log:
    log.write("\\n".join(sys.argv[1:]))
sys.stderr.write({output!r})
"""


@pytest.fixture
def phone(fake_adb):  # noqa: F811
    binary = fake_adb / "benchmark_model"
    binary.write_text(
        FAKE_BENCHMARK_MODEL.format(python=sys.executable, log=str(fake_adb / "argv.txt"), output=TI_AM62X)
    )
    binary.chmod(0o755)
    model = fake_adb / "my model.tflite"  # a space, on purpose: every word is quoted for the device shell
    model.write_bytes(b"tflite")
    return SimpleNamespace(root=fake_adb, binary=binary, model=model)


def test_profile_end_to_end_on_a_phone(phone):
    target = _android(phone.root, serial="R58M", benchmark_model=str(phone.binary))
    artifact = Artifact(
        format="tflite",
        precision="fp32",
        files=(str(phone.model),),
        inputs=(),
        outputs=(),
        preprocessing=None,
        model="tiny",
        model_fingerprint="f",
        exporter="litert-torch",
    )
    report = profile_end_to_end(
        SimpleNamespace(spec="tiny"), artifact, target, phone.root, runs=50, warmup=3, threads=2
    )
    pushed = f"{adb_module.DEVICE_DIR}/my model.tflite"
    assert (phone.root / "argv.txt").read_text().splitlines() == [
        f"--graph={pushed}",
        "--num_threads=2",
        "--warmup_runs=3",
        "--num_runs=50",
        "--min_secs=0",
        "--warmup_min_secs=0",
        "--use_xnnpack=true",
    ]
    assert Path(pushed).read_bytes() == b"tflite"
    latency = report.latency
    assert latency.n == 50 and latency.median_ms == pytest.approx(1239.807) and latency.energy == "unavailable"
    assert latency.runtime_version.startswith("benchmark_model sha256:") and latency.threads == 2
    assert report.device.runtime == "tflite" and report.device.os.startswith("Android")
    assert ProfileReport.load(phone.root / "profile.json") == report
    saved = json.loads((phone.root / "profile.json").read_text())
    assert saved["latency"]["p90_ms"] is None


def test_a_host_binary_is_pushed_and_a_missing_one_is_named(phone):
    _, latency, run = profile_android(
        phone.model,
        _android(phone.root, serial="R58M", benchmark_model=str(phone.binary)),
        runs=50,
        warmup=1,
        threads=1,
    )
    assert run.binary == f"{adb_module.DEVICE_DIR}/benchmark_model" and Path(run.binary).stat().st_mode & 0o111
    assert latency.n == 50 and run.threads == 1
    with pytest.raises(
        DeviceError, match=r"no executable benchmark_model at /data/local/tmp/nope on adb R58M; fix: get"
    ):
        profile_android(
            phone.model, _android(phone.root, serial="R58M", benchmark_model="/data/local/tmp/nope"), runs=50, warmup=1
        )
    with pytest.raises(ConfigError, match="neither a file on this machine nor an absolute path on the device"):
        profile_android(
            phone.model, _android(phone.root, serial="R58M", benchmark_model="relative/bm"), runs=50, warmup=1
        )
