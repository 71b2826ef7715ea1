"""`verify` and `profile --artifact FILE` run the file on the runtime it is for, at its precision: what its
artifact.json records, else its file type's runtime. --runtime and --precision only override; a mismatch is a
one-line error naming both."""

import json
import shutil
from pathlib import Path

import pytest

from edgeprune.commands import runtime_of_artifact
from edgeprune.errors import ConfigError
from edgeprune.runtimes import RUNTIMES
from edgeprune.types import ProfileReport, Verification
from tests.conftest import run_cli

EXPORTS = {"onnxruntime": ("onnx", "fp32", "model.onnx"), "openvino": ("openvino", "fp16", "model.xml")}


@pytest.fixture(scope="module")
def exports(tmp_path_factory, resnet20_weights) -> dict[str, Path]:
    """ResNet-20 with its CIFAR-10 weights, exported by `edgeprune export` as ONNX fp32 and OpenVINO IR fp16 (each
    with its artifact.json): runtime -> the model file."""
    root = tmp_path_factory.mktemp("exports")
    files = {}
    for runtime, (fmt, precision, name) in EXPORTS.items():
        result = run_cli("export", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--format", fmt,
                         "--precision", precision, "--out", root / fmt)  # fmt: skip
        assert result.code == 0, result.stderr
        files[runtime] = root / fmt / name
    return files


@pytest.mark.parametrize("runtime", EXPORTS)
def test_verify_runs_an_artifact_on_its_own_runtime_without_runtime_flag(
    runtime, exports, resnet20_weights, cifar_test_dir, tmp_path
):
    result = run_cli("verify", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--data", cifar_test_dir,
                     "--artifact", exports[runtime], "--limit", "20", "--out", tmp_path, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    verification = Verification.from_json(result.stdout)
    assert verification.runtime == runtime and verification.artifact.path == exports[runtime]
    assert "output output" not in result.stdout + result.stderr


def test_profile_takes_runtime_and_precision_from_the_artifact_json(exports, tmp_path):
    result = run_cli("profile", "--model", "cifar:resnet20", "--artifact", exports["openvino"], "--runs", "30",
                     "--warmup", "2", "--out", tmp_path, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    report = ProfileReport.from_json(result.stdout)
    assert report.latency.runtime == "openvino"
    assert report.artifact.precision == "fp16" and report.target.precision == "fp16"  # host's own is fp32


def test_without_artifact_json_the_file_type_names_the_runtime(exports, tmp_path):
    copy = tmp_path / "ir"
    shutil.copytree(exports["openvino"].parent, copy, ignore=shutil.ignore_patterns("artifact.json"))
    assert runtime_of_artifact(copy / "model.xml") == ("openvino", "its file type is .xml")
    result = run_cli("profile", "--model", "cifar:resnet20", "--artifact", copy / "model.xml", "--runs", "30",
                     "--warmup", "2", "--out", tmp_path / "profile", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    assert ProfileReport.from_json(result.stdout).latency.runtime == "openvino"


def test_an_artifact_json_of_another_file_is_not_read_as_this_ones(exports, tmp_path):
    onnx = tmp_path / "model.onnx"
    shutil.copy(exports["onnxruntime"], onnx)
    shutil.copy(exports["openvino"].parent / "artifact.json", tmp_path / "artifact.json")
    assert runtime_of_artifact(onnx)[0] == "onnxruntime"
    assert json.loads((tmp_path / "artifact.json").read_text())["format"] == "openvino"


MISMATCHES = {
    "runtime": (["verify", "--data", ".", "--runtime", "onnxruntime"], ["--runtime onnxruntime", "openvino"]),
    "precision": (["profile", "--precision", "int8"], ["--precision int8", "openvino fp16"]),
}


@pytest.mark.parametrize("case", MISMATCHES)
def test_a_flag_the_artifact_contradicts_is_a_one_line_error(case, exports, tmp_path):
    args, named = MISMATCHES[case]
    result = run_cli(*args, "--model", "cifar:resnet20", "--artifact", exports["openvino"], "--out", tmp_path)
    assert result.code == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert all(name in result.stderr for name in named) and f"drop --{case}" in result.stderr


@pytest.mark.parametrize(
    ("runtime", "suffix"), [(name, suffix) for name, runtime in RUNTIMES.items() for suffix in runtime.suffixes]
)
def test_each_runtimes_file_types_name_it(runtime, suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\0")
    assert runtime_of_artifact(path)[0] == runtime


def test_a_file_type_no_runtime_runs_names_the_known_ones(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    with pytest.raises(ConfigError, match=r"no runtime runs \.bin files.*\.onnx \(onnxruntime\).*\.engine/\.plan"):
        runtime_of_artifact(path)
