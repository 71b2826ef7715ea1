"""The TensorRT backend on a machine without TensorRT or a GPU: the model goes to ONNX, the real agent subprocess
(local transport) builds the engine, and the engine, its calibration cache and its metadata come back. TensorRT and
pycuda are stand-ins on the agent's PYTHONPATH (tests/standins/path) that implement only their documented APIs;
what the agent asked of the builder is checked in the stand-in's log. Without them the agent reports TensorRT
missing in one line, which is what a user without TensorRT sees."""

from __future__ import annotations

import json
import math
import os

import pytest

from edgeprune.backends._registry import backend_for_format, get_backend
from edgeprune.backends.tensorrt import TensorrtBackend
from edgeprune.commands import export_model
from edgeprune.errors import ConfigError
from edgeprune.models import LoadOptions, load_model
from tests.backends import tiny_models
from tests.conftest import REPO, run_cli

TINY = "python:tests.backends.tiny_models:tiny"


@pytest.fixture()
def standin_trt(monkeypatch, tmp_path):
    """The agent subprocess imports the stand-in tensorrt and pycuda; returns the path of the builder's log."""
    log = tmp_path / "trt_calls.json"
    paths = [str(REPO), str(REPO / "tests" / "standins" / "path"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("EDGEPRUNE_TRT_STANDIN_LOG", str(log))
    return log


@pytest.fixture(scope="module")
def tiny():
    return load_model(TINY, LoadOptions())


def test_fp16_engine_is_built_by_the_agent_and_described(standin_trt, tiny, tmp_path):
    artifact = export_model(tiny, "tensorrt", tmp_path / "out")  # the format's default precision
    engine = tmp_path / "out" / "model.engine"
    assert artifact.precision == "fp16" and artifact.path == engine
    assert engine.read_bytes() == b"serialized plan"  # what the (stand-in) builder serialized
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.engine")) == ["model.engine"]
    assert artifact.inputs[0].shape[1:] == (3, 16, 16) and artifact.tool_versions["tensorrt"] == "10.3.0"
    assert artifact.exporter.startswith("TensorRT 10.3.0 builder on local") and "onnx" in artifact.exporter.lower()
    calls = json.loads(standin_trt.read_text())
    assert calls["flags"] == ["FP16"] and calls["parsed"].endswith("model.onnx")
    name = artifact.inputs[0].name
    assert calls["profile"] == {name: [[1, 3, 16, 16]] * 3}  # the dynamic batch fixed to 1 for the build
    info = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert info["tensorrt_version"] == "10.3.0" and info["layers"][0]["precision"] == "fp16"
    assert info["device"].startswith("local")
    # the recorded artifact describes the engine; a bare engine cannot be read here
    backend = backend_for_format("tensorrt")
    assert backend.describe(engine, tiny).sha256 == artifact.sha256
    (tmp_path / "out" / "artifact.json").unlink()
    with pytest.raises(ConfigError, match="only TensorRT on the device that built an engine can read its inputs"):
        backend.describe(engine, tiny)


def test_int8_calibrates_on_the_users_images_and_keeps_layers_in_float(standin_trt, tiny, tmp_path):
    data = tiny_models.labelled_folder(tmp_path / "data", tiny.module)
    artifact = export_model(tiny, "tensorrt", tmp_path / "out", "int8", data=str(data), keep_float=1)
    calls = json.loads(standin_trt.read_text())
    assert calls["flags"] == ["INT8", "OBEY"]  # int8, with the kept layer's fp32 constraint obeyed
    n = artifact.calibration_images
    assert n and calls["calibrator_batch_size"] == 8 and calls["batches_fed"] == math.floor(n / 8)
    kept = artifact.float_layers
    sensitivity = json.loads((tmp_path / "out" / "sensitivity.json").read_text())
    assert len(kept) == 1 and kept[0] == sensitivity[0]["layer"]
    info = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert calls["float_layers"] == [info["float_layers"][kept[0]]]  # the ONNX node of that PyTorch layer
    assert (tmp_path / "out" / "calibration.cache").read_bytes() == b"calibration table"
    assert info["calibration"]["kind"] == "npy_file" and info["precision_flag"] == "OBEY_PRECISION_CONSTRAINTS"


def test_tensorrt_is_a_runtime_with_documented_tolerances():
    backend = get_backend("tensorrt")
    assert isinstance(backend, TensorrtBackend) and backend.suffix == ".engine"
    assert backend.tolerances("fp16").why and backend.tolerances("int8").metric == 0.01
    with pytest.raises(ConfigError, match="does not support precision"):
        backend.tolerances("int4")


def test_without_tensorrt_the_export_says_so_in_one_line(tmp_path):
    result = run_cli("export", "--model", TINY, "--format", "tensorrt", "--out", tmp_path / "out", cwd=REPO)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "tensorrt is not installed on this device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("export", "--model", TINY, "--format", "tensorrt", "--target", "jetson-nano", "--out",
                     tmp_path / "out2", cwd=REPO)  # fmt: skip
    assert result.code == 2 and "host" in result.stderr and "Traceback" not in result.stderr
