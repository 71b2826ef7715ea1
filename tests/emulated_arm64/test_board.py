"""edgeprune against the emulated Raspberry Pi (board.py) as against a real one: the shipped raspberry-pi-5 profile,
its agent on the board's own Python 3.11 and Debian numpy 1.24, the aarch64 builds of LiteRT and ONNX Runtime.
Every figure timed there must say it was emulated; accuracy must match PyTorch's on the host as on a real Pi.

Under qemu-user a CIFAR ResNet is ~10–40× slower than on this host, so the accuracy checks use subsets
(`--limit`, the same images on both sides, spread over the classes)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from edgeprune.devices.ssh import _agent_sha
from edgeprune.types import Verification
from tests.conftest import CIFAR_WEIGHTS, asset, run_cli
from tests.devices.conftest import ssh_keys, start_sshd, stop_sshd  # noqa: F401  (ssh_keys: a fixture)

# one file: under `--dist loadfile` (CI) the board's tests share one worker and its board. (`--dist loadgroup` with
# an xdist_group mark does not group with pytest 9.2 and pytest-xdist 3.8: tried, the group ran on both workers.)
pytestmark = pytest.mark.emulated_arm64
LABEL = "emulated (qemu-user): not representative of the device"
RESNET56 = CIFAR_WEIGHTS / "resnet56-4bfd9763.th"
# ResNet-56 takes ~1 s per image under qemu-user on a loaded 2-core host (0.5 s quiet), measured: 50 images per fp32
# runtime (its per-sample parity checks every output, not only top-1), 100 for int8 (1 image is 1 point)
FP32_LIMIT, INT8_LIMIT = 50, 100


def _board_cli(board_env, *args, timeout=1800):
    result = run_cli(*args, env=board_env, timeout=timeout)
    assert result.code == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def test_the_board_is_the_agent_image_with_its_own_python_and_nothing_of_the_hosts(board):
    image = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}} {{.Architecture}}",
                            "localhost/edgeprune-agent-arm64"], capture_output=True, text=True, check=True)  # fmt: skip
    image_id, architecture = image.stdout.split()
    assert architecture == "arm64" and board.rootfs.name == f"rootfs-{image_id[:16]}"
    probe = board.ssh(
        "uname -m; python3 -c 'import sys, numpy; print(sys.version.split()[0], numpy.__version__)'; "
        f"test -f ~/.cache/edgeprune/agent-{_agent_sha()}/agent.py && echo agent-preinstalled; "
        "python3 -c 'import torch' 2>/dev/null && echo host-torch-visible; test -e /work && echo host-tree-visible; true"
    )
    lines = probe.stdout.split()
    assert probe.returncode == 0, probe.stderr
    assert lines[:3] == ["aarch64", "3.11.2", "1.24.2"], probe.stdout
    # the image ships the very agent this checkout's transport would upload, and no host key of its own (the board
    # made one for this session)
    assert "agent-preinstalled" in lines, probe.stdout
    assert not list((board.rootfs / "etc" / "ssh").glob("ssh_host_*"))
    assert "host-torch-visible" not in lines and "host-tree-visible" not in lines


# the table's settings, shared by `profile --lut` and `build` so that build finds every cell in the session's cache;
# one thread: ResNet-20 took 0.26 s per inference with 1, 0.22 s with 2 and 0.31 s with 4 under qemu-user on this
# 2-core host (measured, load 5), and the other test worker needs the other core
TABLE = ("--threads", "1", "--step", "16", "--lut-variants", "1", "--lut-calibration", "1", "--runs", "30",
         "--warmup", "3")  # fmt: skip


def test_profile_and_table_on_the_board_say_machine_versions_and_emulation(board_env, resnet20_weights, tmp_path):
    out = tmp_path / "p"
    result = _board_cli(board_env, "profile", "--model", "cifar:resnet20", "--weights", resnet20_weights,
                        "--target", "raspberry-pi-5", "--runtime", "onnxruntime", "--lut", *TABLE, "--out", out)  # fmt: skip
    assert result.stdout.count(LABEL) == 2, result.stdout  # the end-to-end latency and the table
    report = json.loads((out / "profile.json").read_text())
    device, latency = report["device"], report["latency"]
    assert device["arch"] == "aarch64" and device["python"].startswith("3.11") and device["numpy_version"] == "1.24.2"
    assert device["emulation"]["kind"] == "qemu-user" and "x86" in device["emulation"]["evidence"]
    assert latency["emulation"] == LABEL and latency["n"] == 30 and latency["threads"] == 1
    assert device["runtime_version"] == latency["runtime_version"] == "1.28.0"  # the board's wheel, not the host's
    table = json.loads((out / "lut.json").read_text())
    assert table["emulation"] == LABEL and table["entries"] and table["measured_now"] == len(table["entries"])
    assert table["variants"] and all(v["measured"]["emulation"] == LABEL for v in table["variants"])


@pytest.mark.parametrize("runtime", ["tflite", "onnxruntime"])
def test_resnet56_fp32_on_the_boards_runtimes_matches_pytorch(board_env, runtime, cifar_test_dir, tmp_path):
    result = _board_cli(board_env, "verify", "--model", "cifar:resnet56", "--weights", RESNET56,
                        "--target", "raspberry-pi-5", "--runtime", runtime, "--threads", "1", "--data", cifar_test_dir,
                        "--limit", str(FP32_LIMIT), "--out", tmp_path / "v", "--json")  # fmt: skip
    verification = Verification.from_json(result.stdout)
    assert verification.passed and verification.n_samples == FP32_LIMIT
    device = verification.device
    assert device.arch == "aarch64" and device.python.startswith("3.11") and device.emulation["kind"] == "qemu-user"
    top1 = next(m for m in verification.metrics if m.name == "top1")
    assert top1.runtime == top1.reference, top1  # fp32: the same images classified the same


def test_resnet56_int8_tflite_on_arm_kernels_within_one_point(board_env, cifar_test_dir, tmp_path):
    export = run_cli("export", "--model", "cifar:resnet56", "--weights", RESNET56, "--format", "tflite",
                     "--precision", "int8", "--data", cifar_test_dir, "--out", tmp_path / "e", "--json")  # fmt: skip
    assert export.code == 0, export.stderr
    artifact = json.loads(export.stdout)["files"][0]
    result = _board_cli(board_env, "verify", "--model", "cifar:resnet56", "--weights", RESNET56,
                        "--target", "raspberry-pi-5", "--artifact", artifact, "--threads", "1", "--data", cifar_test_dir,
                        "--limit", str(INT8_LIMIT), "--out", tmp_path / "v")  # fmt: skip
    assert "machine aarch64" in result.stdout and LABEL in result.stdout
    verification = Verification.from_json((tmp_path / "v" / "verification.json").read_text())
    top1 = next(m for m in verification.metrics if m.name == "top1")
    assert abs(top1.runtime - top1.reference) <= 0.010 + 1e-9, top1  # 1.0 point; 1 image of 100 is exactly that
    print(f"\nint8 TFLite on the emulated arm64 board: top-1 {top1.runtime:.4f} vs PyTorch {top1.reference:.4f}")


def test_yolo_fastest_map_on_the_board_matches_pytorch(board_env, tmp_path):
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    weights = asset("darknet/yolo-fastest/yolo-fastest-1.1.weights")
    data_yaml = asset("datasets/yaml/coco128.yaml")
    result = _board_cli(board_env, "verify", "--model", cfg, "--weights", weights, "--target", "raspberry-pi-5",
                        "--runtime", "onnxruntime", "--threads", "1", "--data", data_yaml, "--limit", "16", "--out", tmp_path / "v",
                        "--json")  # fmt: skip
    verification = Verification.from_json(result.stdout)
    assert verification.device.arch == "aarch64" and verification.n_samples == 16
    metric = next(m for m in verification.metrics if m.name == "mAP50-95")
    assert abs(metric.runtime - metric.reference) <= 0.005, metric


def test_build_on_the_board_labels_every_figure(board_env, resnet20_weights, small_cifar, tmp_path):
    out = tmp_path / "b"
    result = run_cli("build", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--target",
                     "raspberry-pi-5", "--runtime", "onnxruntime", "--speedup", "1.5", *TABLE, "--data", small_cifar,
                     "--finetune-epochs", "1", "--max-drop", "none", "--out", out, env=board_env, timeout=3000)  # fmt: skip
    assert result.code in (0, 3), result.stderr[-3000:]  # a latency verdict either way; judged on the emulator
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["plan"]["base_latency"]["emulation"] == LABEL
    assert {r["name"] for r in report["results"]} >= {"unpruned", "plan"}
    for model in report["results"]:
        assert model["latency"]["emulation"] == LABEL, model["name"]
        assert model["metric_value"] is not None  # verified on held-out images on the board
    assert f"[{LABEL}: the budget was judged on the emulator]" in result.stdout + result.stderr
    assert LABEL in (out / "report.html").read_text()
    table = json.loads((out / "lut.json").read_text())
    assert table["emulation"] == LABEL


def test_a_farm_measures_on_the_board_and_refuses_a_device_of_another_kind(board, ssh_keys, tmp_path):  # noqa: F811
    """The board in a farm (a real local Ray cluster) beside an x86 loopback device: the farm takes its kind from
    the first device, refuses the other with why, and the board times every cell."""
    pytest.importorskip("ray", reason="farms need Ray: pip install 'edgeprune[farm]'")
    loopback = start_sshd(ssh_keys, tmp_path / "x86")
    try:
        x86 = yaml.safe_load(loopback.profile(tmp_path / "x86.yaml").read_text())["connection"]
        pi = {"kind": "ssh", "host": "127.0.0.1", "port": board.port, "user": "root", "key": str(board.client_key),
              "ssh_config": str(board.ssh_config)}  # fmt: skip
        farm = tmp_path / "farm.yaml"
        farm.write_text(yaml.safe_dump({"target": "raspberry-pi-5", "devices": [
            {"name": "pi", "connection": pi}, {"name": "x86", "connection": x86}]}))  # fmt: skip
        result = run_cli("profile", "--model", "cifar:resnet20", "--runtime", "onnxruntime", "--lut", "--threads", "1",
                         "--step", "32", "--lut-variants", "1", "--lut-calibration", "0", "--runs", "30", "--warmup",
                         "3", "--farm", farm, "--cache", tmp_path / "cache", "--out", tmp_path / "p",
                         timeout=1800)  # fmt: skip
    finally:
        stop_sshd(loopback)
    assert result.code == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
    table = json.loads((tmp_path / "p" / "lut.json").read_text())
    refused = {d["device"]: d["refused"] for d in table["farm"]["devices"] if d["refused"]}
    assert set(refused) == {"x86"} and "not the kind of device pi is" in refused["x86"] and "aarch64" in refused["x86"]
    assert table["entries"] and {e["device"] for e in table["entries"]} == {"pi"}
    assert table["emulation"] == LABEL and "device x86 not used" in result.stderr
