"""OpenVINO and TFLite exports (fp32 / fp16 / int8) of tiny models, run on the real runtimes through the agent and
compared with PyTorch within the tolerances each backend documents; the int8 gate (exit 3 + the sensitive layers);
mixed precision by flag; bad input → exit 2 with one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from edgeprune.backends._quantization import calibration_images, layer_sensitivity
from edgeprune.backends._registry import backend_for_format, formats, with_precision
from edgeprune.commands import export_model
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.profiles import load_profile, with_runtime
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models import LoadOptions, load_model
from edgeprune.verify.parity import compare_output
from tests.backends import tiny_models
from tests.conftest import REPO, run_cli

pytest.importorskip("openvino", reason='pip install "edgeprune[openvino]"')
pytest.importorskip("nncf", reason='pip install "edgeprune[openvino]"')
pytest.importorskip("litert_torch", reason='pip install "edgeprune[tflite]"')
pytest.importorskip("ai_edge_quantizer", reason='pip install "edgeprune[tflite]"')

TINY = "python:tests.backends.tiny_models:tiny"
OUTLIER = "python:tests.backends.tiny_models:outlier"
RUNTIME = {"openvino": "openvino", "tflite": "tflite"}


def _load(spec):
    return load_model(spec, LoadOptions())


@pytest.fixture(scope="module")
def tiny():
    return _load(TINY)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny):
    return tiny_models.labelled_folder(tmp_path_factory.mktemp("tiny_data"), tiny.module)


@pytest.fixture(scope="module")
def images(tiny, tiny_data):
    return calibration_images(tiny, tiny_data)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny, tiny_data):
    """Every format × precision of the tiny model, exported once."""
    out = {}
    for fmt in ("openvino", "tflite"):
        for precision in ("fp32", "fp16", "int8"):
            target = tmp_path_factory.mktemp(f"{fmt}_{precision}")
            data = str(tiny_data) if precision == "int8" else None
            out[fmt, precision] = export_model(tiny, fmt, target, precision, data=data)
    return out


@pytest.mark.parametrize("fmt", ["openvino", "tflite"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_runs_on_its_runtime_within_the_documented_tolerance(exports, tiny, images, fmt, precision):
    artifact = exports[fmt, precision]
    backend = backend_for_format(fmt)
    assert artifact.precision == precision and artifact.path.is_file()
    assert (artifact.calibration_images == len(images)) == (precision == "int8")
    with torch.inference_mode():
        reference = tiny.module(torch.from_numpy(images)).numpy()
    with AgentSession(LocalTransport()) as agent:
        runtime = next(
            iter(agent.run(artifact.path, RUNTIME[fmt], {artifact.inputs[0].name: images}, threads=1).values())
        )
    parity = compare_output("logits", reference, runtime, backend.tolerances(precision))
    assert parity.passed, parity
    # the precision is real: fp32 is near-exact, fp16/int8 are not bit-identical to PyTorch
    if precision == "fp32":
        assert parity.max_abs < 1e-4
    else:
        assert parity.max_abs > 1e-6
    # and the describe path reads the same precision back from the file alone
    (artifact.path.parent / "artifact.json").unlink(missing_ok=True)
    assert backend.describe(artifact.path, tiny).precision == precision


def test_openvino_fp32_keeps_fp32_weights_and_fp16_halves_them(exports):
    fp32, fp16 = exports["openvino", "fp32"], exports["openvino", "fp16"]
    size = lambda a: sum(f.stat().st_size for f in map(type(a.path), a.files) if f.suffix == ".bin")
    assert size(fp16) < 0.6 * size(fp32)


def test_int8_without_data_and_keep_float_without_int8_are_refused(tiny, tmp_path):
    for fmt in ("openvino", "tflite"):
        with pytest.raises(ConfigError, match=f"{fmt} int8 export needs calibration images; .*--data"):
            export_model(tiny, fmt, tmp_path, "int8")
        with pytest.raises(ConfigError, match="--keep-float applies to int8"):
            export_model(tiny, fmt, tmp_path, "fp16", keep_float=1)
    with pytest.raises(ConfigError, match="onnx export does not support precision int8"):
        export_model(tiny, "onnx", tmp_path, "int8")


def test_registry_lists_the_new_formats():
    assert formats() == {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite", "tensorrt": "tensorrt"}


def test_runtime_must_be_declared_by_the_target():
    host = load_profile("host")
    assert with_runtime(host, "tflite").runtime == "tflite" and with_runtime(host, None) is host
    pi = load_profile("raspberry-pi-5")
    assert with_runtime(pi, "onnxruntime").runtime == "onnxruntime"
    with pytest.raises(ConfigError, match="target raspberry-pi-5 does not declare runtime openvino"):
        with_runtime(pi, "openvino")
    with pytest.raises(UnknownName, match="did you mean 'openvino'"):
        with_runtime(host, "openvin")


def test_precision_must_be_one_the_runtime_supports():
    host = load_profile("host")
    assert with_precision(host, None) is host and with_precision(host, "fp32") is host
    assert with_precision(with_runtime(host, "openvino"), "int8").precision == "int8"
    with pytest.raises(ConfigError, match="onnx export does not support precision int8"):
        with_precision(host, "int8")
    pi = load_profile("raspberry-pi-5")
    assert with_precision(pi, "int8").precision == "int8"
    # a default precision the chosen runtime lacks (TensorRT's fp16, run through ONNX Runtime): that runtime's own
    fp16_profile = dataclasses.replace(with_runtime(pi, "onnxruntime"), precision="fp16")
    assert with_precision(fp16_profile, None).precision == "fp32"


# --- int8 gate and mixed precision ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outlier_data(tmp_path_factory):
    return tiny_models.labelled_folder(tmp_path_factory.mktemp("outlier_data"), tiny_models.outlier())


def test_sensitivity_names_the_layer_int8_breaks(outlier_data):
    model = _load(OUTLIER)
    ranked = layer_sensitivity(model, calibration_images(model, outlier_data))
    assert ranked[0].name == "conv2" and ranked[0].error > 10 * ranked[1].error


@pytest.mark.parametrize("fmt", ["openvino", "tflite"])
def test_failing_int8_exits_3_naming_the_sensitive_layer_and_keep_float_fixes_it(outlier_data, tmp_path, fmt):
    int8 = tmp_path / "int8"
    exported = run_cli(
        "export",
        "--model",
        OUTLIER,
        "--format",
        fmt,
        "--precision",
        "int8",
        "--data",
        outlier_data,
        "--out",
        int8,
        cwd=REPO,
    )
    assert exported.code == 0, exported.stderr[-2000:]
    if fmt == "openvino":  # nncf's bars, its INFO lines and torch's CUDA_HOME warning stay out of the command's output
        assert exported.stderr == ""
    artifact = json.loads((int8 / "artifact.json").read_text())["files"][0]
    failed = run_cli(
        "verify",
        "--model",
        OUTLIER,
        "--data",
        outlier_data,
        "--runtime",
        fmt,
        "--artifact",
        artifact,
        "--threads",
        "1",
        "--out",
        tmp_path / "verify",
        cwd=REPO,
    )
    assert failed.code == 3, failed.stderr[-2000:]
    message = failed.stderr.strip().splitlines()[-1]
    assert "top1" in message and "most int8-sensitive layers: conv2 (" in message and "--keep-float" in message
    report = json.loads((tmp_path / "verify" / "verification.json").read_text())
    assert report["sensitive_layers"][0]["layer"] == "conv2" and not report["passed"]

    # by flag, the most sensitive layer stays float: the same check passes
    mixed = tmp_path / "mixed"
    model = _load(OUTLIER)
    artifact = export_model(model, fmt, mixed, "int8", data=str(outlier_data), keep_float=1)
    assert artifact.float_layers == ("conv2",)
    assert json.loads((mixed / "sensitivity.json").read_text())[0]["layer"] == "conv2"
    from edgeprune.commands import verify_artifact

    result = verify_artifact(
        model,
        with_runtime(load_profile("host"), fmt),
        str(outlier_data),
        tmp_path / "v2",
        artifact_path=str(artifact.path),
        threads=1,
    )
    assert result, result.failures()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "openvino", "--precision", "int8"], "openvino int8 export needs calibration images"),
        (["--format", "coreml"], "Invalid value for '--format'"),
        (["--format", "tflite", "--precision", "int4"], "Invalid value for '--precision'"),
    ],
)
def test_bad_export_input_exits_2_with_one_line(args, message, tmp_path):
    result = run_cli("export", "--model", TINY, *args, "--out", tmp_path, cwd=REPO)
    assert result.code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
    if "edgeprune: error" in result.stderr:
        assert len(result.stderr.strip().splitlines()) == 1
