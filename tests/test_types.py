import json

import numpy as np
import pytest

from edgeprune.errors import ConfigError
from edgeprune.types import (
    SCHEMA_VERSION,
    Artifact,
    Connection,
    DeviceInfo,
    Fact,
    LatencyStats,
    MetricComparison,
    OutputParity,
    PowerSpec,
    Preprocessing,
    ProfileReport,
    TargetProfile,
    TensorSpec,
    Verification,
)

ARTIFACT = Artifact(
    format="onnx",
    precision="fp32",
    files=("/x/model.onnx",),
    inputs=(TensorSpec("input", ("batch", 3, 32, 32)),),
    outputs=(TensorSpec("output", ("batch", 10)),),
    preprocessing=Preprocessing(crop=(32, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2)),
    model="cifar:resnet20",
    model_fingerprint="abc",
    exporter="torch.onnx dynamo",
    opset=20,
    tool_versions={"torch": "2.14"},
    sha256={"model.onnx": "00"},
)
TARGET = TargetProfile(
    name="t",
    description="d",
    runtime="onnxruntime",
    threads=4,
    connection=Connection(kind="ssh", host="10.0.0.2", port=22),
    power=PowerSpec(sensor=None, estimate_w=Fact(5.0, "datasheet p. 3")),
    hardware={"cpu": Fact("Cortex-A76", "vendor page")},
)
STATS = LatencyStats.from_samples(
    [3.0, 1.0, 2.0, 4.0],
    warmup=2,
    runtime="onnxruntime",
    runtime_version="1.31",
    threads=2,
    energy="estimated",
    energy_mj=10.0,
    power_w=5.0,
)
DEVICE = DeviceInfo(
    target="t",
    hostname="h",
    os="Linux",
    arch="x86_64",
    cpu="EPYC",
    cpu_count=2,
    python="3.11",
    runtime="onnxruntime",
    runtime_version="1.31",
    providers=("CPUExecutionProvider",),
)
VERIFICATION = Verification(
    model="cifar:resnet20",
    artifact=ARTIFACT,
    runtime="onnxruntime",
    runtime_version="1.31",
    threads=2,
    target="host",
    data="/d",
    n_samples=10,
    parity=(OutputParity("output", 1e-6, 1e-7, 0.99999, 1e-4, 0.9999, True),),
    metrics=(MetricComparison("top1", 0.9, 0.9, 0.002, True),),
    passed=True,
    latency=STATS,
)
RECORDS = [
    ARTIFACT,
    TARGET,
    STATS,
    DEVICE,
    VERIFICATION,
    ProfileReport(model="m", target=TARGET, device=DEVICE, artifact=ARTIFACT, latency=STATS),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_round_trip_gives_an_equal_record(record, tmp_path):
    text = record.to_json()
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert json.loads(text)["kind"] == type(record).__name__
    assert type(record).from_json(text) == record
    path = record.save(tmp_path / "r.json")
    assert type(record).load(path) == record
    assert type(record).load(path).fingerprint == record.fingerprint


def test_nested_types_are_rebuilt_not_left_as_dicts():
    again = Verification.from_json(VERIFICATION.to_json())
    assert isinstance(again.artifact.inputs[0], TensorSpec)
    assert isinstance(again.artifact.preprocessing, Preprocessing)
    assert isinstance(again.latency, LatencyStats)
    assert isinstance(TargetProfile.from_json(TARGET.to_json()).hardware["cpu"], Fact)


def test_fingerprint_ignores_volatile_paths_but_not_content():
    moved = Artifact.from_dict({**ARTIFACT.to_dict(), "files": ["/elsewhere/model.onnx"]})
    changed = Artifact.from_dict({**ARTIFACT.to_dict(), "opset": 17})
    assert moved.fingerprint == ARTIFACT.fingerprint
    assert changed.fingerprint != ARTIFACT.fingerprint


def test_other_schema_version_or_kind_is_refused_with_a_fix():
    with pytest.raises(ConfigError, match="schema_version 99"):
        Artifact.from_dict({**ARTIFACT.to_dict(), "schema_version": 99})
    with pytest.raises(ConfigError, match="holds a Artifact"):
        Verification.from_json(ARTIFACT.to_json())


def test_latency_stats_match_numpy():
    samples = np.random.default_rng(1).gamma(4.0, 2.0, size=101)
    stats = LatencyStats.from_samples(samples, warmup=5, runtime="r", runtime_version="1", threads=1)
    assert stats.n == 101
    assert stats.median_ms == pytest.approx(np.median(samples))
    assert stats.p90_ms == pytest.approx(np.percentile(samples, 90))
    assert stats.p99_ms == pytest.approx(np.percentile(samples, 99))
    assert (stats.min_ms, stats.max_ms) == (samples.min(), samples.max())
    assert stats.cv == pytest.approx(samples.std() / samples.mean())


def test_verification_is_truthy_only_when_passed():
    failed = Verification.from_dict({**VERIFICATION.to_dict(), "passed": False})
    assert VERIFICATION and not failed


def test_load_names_a_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Artifact.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Artifact.load(tmp_path / "bad.json")
