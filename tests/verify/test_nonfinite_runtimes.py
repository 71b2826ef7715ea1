"""One NaN in a runtime's output fails verification on every runtime, int8 included: the artifact is exported by each
backend's own exporter from the tiny model with one output element overwritten by NaN, and verified against the
unchanged (finite) model."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from edgeprune.backends._quantization import calibration_images
from edgeprune.backends._registry import backend_for_format
from edgeprune.commands import verify_artifact
from edgeprune.devices.profiles import load_profile, with_runtime
from edgeprune.models import LoadOptions, load_model
from tests.backends import tiny_models

pytest.importorskip("openvino", reason='pip install "edgeprune[openvino]"')
pytest.importorskip("litert_torch", reason='pip install "edgeprune[tflite]"')


class OneNaN(nn.Module):
    """The wrapped model with element [0, 3] of its output set to NaN: one value per runtime call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x).clone()
        y[0, 3] = float("nan")
        return y


@pytest.fixture(scope="module")
def tiny():
    return load_model("python:tests.backends.tiny_models:tiny", LoadOptions())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny):
    return tiny_models.labelled_folder(tmp_path_factory.mktemp("tiny_data"), tiny.module)


# TFLite int8 is left out: its int8 output tensor cannot hold a NaN (the quantized output is garbage instead, which
# the cosine tolerance fails on its own)
@pytest.mark.parametrize(
    "fmt, runtime, precision",
    [
        ("onnx", "onnxruntime", "fp32"),
        ("openvino", "openvino", "fp32"),
        ("tflite", "tflite", "fp32"),
        ("openvino", "openvino", "int8"),  # its mean-cosine tolerance alone would pass this output (cosine ≈ 0.998)
    ],
)
def test_one_nan_in_the_runtime_output_fails_verification(tiny, tiny_data, tmp_path, fmt, runtime, precision):
    broken = dataclasses.replace(tiny, module=OneNaN(tiny.module).eval(), _fingerprint=None)
    calibration = calibration_images(tiny, tiny_data) if precision == "int8" else None
    artifact = backend_for_format(fmt).export(broken, tmp_path / "export", precision, calibration=calibration)
    result = verify_artifact(
        tiny,
        with_runtime(load_profile("host"), runtime),
        str(tiny_data),
        tmp_path / "verify",
        artifact_path=str(artifact.path),
        threads=1,
    )
    parity = result.parity[0]
    batch_one = artifact.inputs[0].shape[0] == 1  # TFLite's static batch: one run call, so one NaN, per image
    assert parity.nonfinite_runtime == (result.n_samples if batch_one else 1) and parity.nonfinite_reference == 0
    assert not parity.passed and not result.passed
    assert (
        f"output '{parity.name}': {parity.nonfinite_runtime} NaN/Inf value(s) from the runtime" in result.failures()[0]
    )
