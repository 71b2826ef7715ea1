"""The command line as a user runs it: exit codes, one-line errors, JSON on stdout, files under --out."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeprune.models import load_model
from edgeprune.types import Artifact, ProfileReport, Verification
from tests.conftest import asset, run_cli


def test_targets_lists_host():
    result = run_cli("targets", "--json")
    assert result.code == 0
    host = next(p for p in result.json() if p["name"] == "host")
    assert host["runtime"] == "onnxruntime" and host["connection"]["kind"] == "local"


def test_export_resnet18_gives_one_checked_onnx_matching_pytorch(tmp_path):
    result = run_cli("export", "--model", "torchvision:resnet18", "--format", "onnx", "--out", tmp_path, "--json")
    assert result.code == 0, result.stderr
    artifact = Artifact.from_json(result.stdout)  # stdout is only the JSON: no exporter chatter
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json", "model.onnx"]
    onnx.checker.check_model(str(artifact.path), full_check=True)
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.inference_mode():
        reference = load_model("torchvision:resnet18").module(torch.from_numpy(x)).numpy()
    runtime = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(runtime - reference).max() <= 1e-4


def test_verify_resnet56_on_all_10000_cifar_images(tmp_path, cifar_test_dir):
    weights = cifar_test_dir.parents[2] / "weights" / "cifar10_resnet" / "resnet56-4bfd9763.th"
    result = run_cli(
        "verify",
        "--model",
        "cifar:resnet56",
        "--weights",
        weights,
        "--data",
        cifar_test_dir,
        "--target",
        "host",
        "--out",
        tmp_path,
        "--json",
    )
    assert result.code == 0, result.stderr
    verification = Verification.from_json(result.stdout)
    assert verification.n_samples == 10_000 and verification.passed
    top1 = next(m for m in verification.metrics if m.name == "top1")
    assert top1.reference >= 0.82
    assert abs(top1.runtime - top1.reference) <= 0.002
    assert Verification.load(tmp_path / "verification.json") == verification


def test_profile_reports_distribution_and_runtime(tmp_path):
    result = run_cli(
        "profile", "--target", "host", "--model", "torchvision:resnet18", "--runs", "30", "--out", tmp_path, "--json"
    )
    assert result.code == 0, result.stderr
    report = ProfileReport.from_json(result.stdout)
    latency = report.latency
    assert latency.n == 30 and latency.min_ms <= latency.median_ms <= latency.p90_ms <= latency.p99_ms <= latency.max_ms
    assert latency.runtime == "onnxruntime" and latency.runtime_version == ort.__version__
    assert latency.threads == report.device.cpu_count  # host profile: threads null = every usable core
    assert latency.energy == "unavailable" and "no power sensor" in latency.energy_note
    assert (tmp_path / "profile.json").is_file() and (tmp_path / "model.onnx").is_file()


def test_ctrl_c_exits_130_in_one_line_and_keeps_what_was_written(tmp_path):
    """The shell's code for an interrupt (128 + SIGINT), not 2, which says the user's input was wrong."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune.cli", "profile", "--model", "cifar:resnet20",
                             "--runs", "1000000", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (out / "model.onnx").exists():
        time.sleep(0.2)
    time.sleep(2.0)  # into the timed runs
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("edgeprune: interrupted")
    assert (out / "model.onnx").is_file()


def test_failed_verification_exits_3_with_the_report_written(tmp_path, resnet20_weights, cifar_test_dir):
    untrained = tmp_path / "untrained"
    assert run_cli("export", "--model", "cifar:resnet20", "--out", untrained).code == 0
    result = run_cli(
        "verify",
        "--model",
        "cifar:resnet20",
        "--weights",
        resnet20_weights,
        "--data",
        cifar_test_dir,
        "--artifact",
        untrained / "model.onnx",
        "--limit",
        "50",
        "--out",
        tmp_path / "v",
    )
    assert result.code == 3
    assert "verification failed: output 'output': max-abs" in result.stderr and "Traceback" not in result.stderr
    report = Verification.load(tmp_path / "v" / "verification.json")
    assert not report and not report.parity[0].passed


@pytest.fixture(scope="module")
def truncated_checkpoint(tmp_path_factory, resnet20_weights):
    path = tmp_path_factory.mktemp("bad") / "resnet20-truncated.th"
    path.write_bytes(resnet20_weights.read_bytes()[:100_000])
    return path


@pytest.fixture(scope="module")
def bad_darknet_weights(tmp_path_factory):
    weights = asset("darknet/yolo-fastest/yolo-fastest-1.1.weights").read_bytes()
    root = tmp_path_factory.mktemp("darknet")
    (root / "short.weights").write_bytes(weights[:-1000])
    (root / "long.weights").write_bytes(weights + b"\0" * 40)
    return root


@pytest.fixture(scope="module")
def imageless_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nodata")
    (root / "cat").mkdir()
    (root / "cat" / "notes.txt").write_text("no images here")
    return root


BAD_INPUTS = {
    "nonexistent model path": (
        ["export", "--model", "/nonexistent/model.pt"],
        "model file not found: /nonexistent/model.pt",
    ),
    "truncated checkpoint": (
        ["export", "--model", "cifar:resnet20", "--weights", "{truncated}"],
        "truncated or corrupt",
    ),
    "unknown target": (["profile", "--model", "cifar:resnet20", "--target", "hots"], "did you mean 'host'?"),
    "data dir without images": (["verify", "--model", "cifar:resnet20", "--data", "{imageless}"], "has no images"),
    "unknown torchvision model": (
        ["export", "--model", "torchvision:not_a_model"],
        "unknown torchvision model 'not_a_model'",
    ),
    "hub weights": (["export", "--model", "torchvision:resnet18", "--weights", "DEFAULT"], "never downloads"),
    "too few runs": (["profile", "--model", "cifar:resnet20", "--runs", "5"], "at least 30"),
    "unknown flag value": (
        ["export", "--model", "cifar:resnet20", "--format", "coreml"],
        "Invalid value for '--format'",
    ),
    "darknet weights too short": (
        ["export", "--model", "{fastest_cfg}", "--weights", "{darknet}/short.weights"],
        "ends inside layer 129 ([convolutional]",
    ),
    "darknet weights too long": (
        ["export", "--model", "{fastest_cfg}", "--weights", "{darknet}/long.weights"],
        "10 more floats",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_traceback(
    case, tmp_path, truncated_checkpoint, imageless_dir, bad_darknet_weights
):
    args, expected = BAD_INPUTS[case]
    fastest_cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    args = [
        a.format(
            truncated=truncated_checkpoint,
            imageless=imageless_dir,
            darknet=bad_darknet_weights,
            fastest_cfg=fastest_cfg,
        )
        for a in args
    ]
    result = run_cli(*args, "--out", tmp_path)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert expected in result.stderr
    if not case.startswith("unknown flag"):  # click's own usage errors print a usage line first
        assert len(result.stderr.strip().splitlines()) == 1


def test_help_and_version():
    assert run_cli("--help").code == 0
    version = run_cli("--version")
    assert version.code == 0 and "edgeprune" in version.stdout


def test_json_result_files_round_trip(tmp_path):
    assert run_cli("export", "--model", "cifar:resnet20", "--out", tmp_path).code == 0
    data = json.loads((tmp_path / "artifact.json").read_text())
    assert data["kind"] == "Artifact" and data["model"] == "cifar:resnet20"


def test_detection_verify_on_ultralytics_yaml_reports_map_on_both(tmp_path):
    coco128 = asset("datasets/yaml/coco128.yaml")
    result = run_cli(
        "verify", "--model", "yolov8n.yaml", "--data", coco128, "--limit", "8", "--out", tmp_path, "--json"
    )
    assert result.code == 0, result.stderr
    verification = Verification.from_json(result.stdout)  # ultralytics' stdout logging did not leak into it
    assert [m.name for m in verification.metrics] == ["mAP50-95", "mAP50"]
    assert verification.n_samples == 8 and verification.parity[0].passed
    assert verification.artifact.detection.layout == "ultralytics"


def test_detector_with_a_classification_folder_is_a_data_error(tmp_path, cifar_test_dir):
    result = run_cli("verify", "--model", "yolov8n.yaml", "--data", cifar_test_dir, "--out", tmp_path)
    assert result.code == 2 and "is not a data yaml" in result.stderr
