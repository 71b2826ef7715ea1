import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeprune.backends._registry import backend_for_format, formats, get_backend
from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.errors import ConfigError, UnknownName
from edgeprune.models import load_model


@pytest.fixture(scope="module")
def resnet18_export(tmp_path_factory):
    model = load_model("torchvision:resnet18")
    out = tmp_path_factory.mktemp("resnet18")
    return model, OnnxRuntimeBackend().export(model, out), out


def test_export_writes_one_self_contained_checked_file(resnet18_export):
    _, artifact, out = resnet18_export
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    onnx.checker.check_model(str(artifact.path), full_check=True)
    assert artifact.opset == next(o.version for o in onnx.load(str(artifact.path)).opset_import if o.domain == "")
    assert artifact.inputs[0].shape == ("batch", 3, 224, 224) and artifact.outputs[0].shape == ("batch", 1000)
    assert "dynamo" in artifact.exporter and artifact.tool_versions["torch"].startswith("2.14")


def test_onnxruntime_matches_pytorch_within_1e_4(resnet18_export):
    model, artifact, _ = resnet18_export
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        reference = model.module(x).numpy()
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - reference).max() <= 1e-4


def test_describe_reuses_the_sidecar_and_checks_input_shapes(resnet18_export, tmp_path):
    model, artifact, out = resnet18_export
    (out / "artifact.json").write_text(artifact.to_json())
    assert OnnxRuntimeBackend().describe(artifact.path, model) == artifact
    (out / "artifact.json").unlink()
    described = OnnxRuntimeBackend().describe(artifact.path, model)
    assert described.sha256 == artifact.sha256 and "unknown" in described.exporter
    with pytest.raises(ConfigError, match=r"takes inputs .*224, 224.* but cifar:resnet20 takes .*32, 32"):
        OnnxRuntimeBackend().describe(artifact.path, load_model("cifar:resnet20"))


def test_describe_rejects_missing_wrong_and_broken_files(tmp_path):
    model = load_model("cifar:resnet20")
    with pytest.raises(ConfigError, match="not found"):
        OnnxRuntimeBackend().describe(tmp_path / "none.onnx", model)
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a onnx file"):
        OnnxRuntimeBackend().describe(tmp_path / "m.tflite", model)
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ConfigError, match="not a valid ONNX model"):
        OnnxRuntimeBackend().describe(tmp_path / "broken.onnx", model)


def test_precision_outside_capabilities_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not support precision int8"):
        OnnxRuntimeBackend().export(load_model("cifar:resnet20"), tmp_path, "int8")


def test_registry_knows_formats_and_suggests():
    assert formats()["onnx"] == "onnxruntime"
    assert isinstance(backend_for_format("onnx"), OnnxRuntimeBackend)
    with pytest.raises(UnknownName, match="did you mean 'onnxruntime'"):
        get_backend("onnxruntim")
