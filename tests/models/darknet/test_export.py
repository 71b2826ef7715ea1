"""Every real cfg builds, runs at its own net size and exports with a dynamic batch; ONNX Runtime agrees."""

import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.models import LoadOptions
from edgeprune.models.darknet import load
from tests.conftest import asset
from tests.models.darknet.conftest import CFGS

BATCH = 2
# outputs (N, boxes, 85) for the 80-class detectors, (N, 1000) for Darknet-53
OUTPUTS = {"pjreddie/yolov3.cfg": 22743, "pjreddie/yolov3-tiny.cfg": 2535, "pjreddie/yolov3-spp.cfg": 22743,
           "alexeyab/yolov3.cfg": 10647, "alexeyab/yolov4.cfg": 22743, "alexeyab/yolov4-tiny.cfg": 2535,
           "yolo-fastest/yolo-fastest-1.1.cfg": 1500, "yolo-fastest/yolo-fastest-1.1-xl.cfg": 1500}  # fmt: skip


@pytest.fixture(scope="module", params=CFGS)
def exported(request, tmp_path_factory):
    """Built and exported once per cfg; the reference is PyTorch's output on a batch of two."""
    started = time.perf_counter()
    model = load(str(asset(f"darknet/{request.param}")), LoadOptions())
    artifact = OnnxRuntimeBackend().export(model, tmp_path_factory.mktemp("darknet"))
    x = model.example_inputs(BATCH)[0]
    with torch.inference_mode():
        reference = model.module(x).numpy()
    print(f"\n{request.param}: built, exported and run in {time.perf_counter() - started:.1f} s")
    return request.param, model, artifact, x.numpy(), reference


def test_forward_shape_and_dynamic_batch(exported):
    name, model, artifact, _, reference = exported
    expected = (BATCH, OUTPUTS[name], 85) if name in OUTPUTS else (BATCH, 1000)
    assert reference.shape == expected and np.isfinite(reference).all()
    assert artifact.inputs[0].shape == ("batch", *model.inputs[0].shape[1:])
    assert artifact.outputs[0].shape == ("batch", *expected[1:]) and artifact.detection == model.detection


def test_onnxruntime_matches_pytorch(exported):
    name, _, artifact, x, reference = exported
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    # random init: boxes reach hundreds of pixels while probabilities sit near 0.5, so both are checked
    relative = np.abs(got - reference).max() / (reference.max() - reference.min())
    print(f"\n{name}: max-abs / range {relative:.2e}")
    assert relative <= 1e-4
    if reference.ndim == 3:
        assert np.abs(got[..., 4:] - reference[..., 4:]).max() <= 1e-4
