import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.errors import ModelError, UnknownName
from edgeprune.models import LoadOptions, load_model
from tests.conftest import asset


def _recalibrate_bn(module, size):
    """Random-init YOLOs give the same output for every input until BN statistics come from data."""
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # plain average over the calibration batches
    module.train()
    with torch.no_grad():
        for seed in range(3):
            module(torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed)))
    module.eval()


@pytest.mark.parametrize("yaml_name", ["yolov3-tiny.yaml", "yolov8n.yaml", "yolo11n.yaml"])
def test_packaged_yaml_builds_exports_and_matches_onnxruntime(yaml_name, tmp_path):
    model = load_model(yaml_name)
    assert model.task == "detection" and model.detection.layout == "ultralytics" and model.detection.num_classes == 80
    assert model.preprocessing.letterbox and model.preprocessing.pad_value == pytest.approx(114 / 255)
    _recalibrate_bn(model.module, 320)
    artifact = OnnxRuntimeBackend().export(model, tmp_path)
    assert artifact.inputs[0].shape == ("batch", 3, 640, 640) and artifact.detection == model.detection
    x = torch.rand(3, 3, 640, 640, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        reference = model.module(x).numpy()
    assert reference.shape[:2] == (3, 84)
    assert np.abs(reference[0] - reference[1]).max() > 1e-3  # the outputs depend on the input
    runtime = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    assert np.abs(runtime - reference).max() / np.ptp(reference) <= 1e-4


def test_pt_needs_trust_pickle_and_round_trips(tmp_path):
    model = load_model("yolov8n.yaml")
    torch.save({"model": model.module, "train_args": {"imgsz": 640}}, tmp_path / "y.pt")
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_model(str(tmp_path / "y.pt"))
    loaded = load_model(str(tmp_path / "y.pt"), LoadOptions(trust_pickle=True))
    assert loaded.spec.endswith("y.pt") and loaded.weights == str(tmp_path / "y.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.module.state_dict().values(), model.module.state_dict().values())
    )


def test_yolov5_repository_checkpoint_is_refused_clearly():
    with pytest.raises(ModelError, match="pickled against a package that is not installed \\(models\\)"):
        load_model(str(asset("weights/yolov5/yolov5n.pt")), LoadOptions(trust_pickle=True))


def test_unknown_yaml_suggests_and_missing_pt_never_downloads():
    with pytest.raises(UnknownName, match="did you mean 'yolov8"):
        load_model("yolov8q.yaml")
    with pytest.raises(ModelError, match="never downloads"):
        load_model("/nonexistent/yolov8n.pt", LoadOptions(trust_pickle=True))


def test_non_detection_models_are_refused():
    with pytest.raises(ModelError, match="is a classify model"):
        load_model("yolov8n-cls.yaml")
