"""Quantization-aware training (`build --qat-epochs`) through every backend whose toolchain has it: the runtime's
fake quantization trains like the float model, and the export runs as int8 kernels in that runtime (through the
agent) computing what the trained PyTorch module computes. Elsewhere --qat-epochs is refused before any work, in
one line that names the runtimes that have it (the CLI's refusal is a row of tests/test_bad_input.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.backends._quantization import calibration_images
from edgeprune.backends._registry import backend_names, get_backend
from edgeprune.devices.agent_client import AgentSession
from edgeprune.devices.transport import LocalTransport
from edgeprune.errors import ConfigError
from edgeprune.models import LoadOptions, load_model
from edgeprune.train.data import ImageSamples
from edgeprune.train.finetune import FinetuneRecipe, finetune_classifier

QUANTIZATION_AWARE = [name for name in backend_names() if get_backend(name).quantization_aware]
POST_TRAINING_ONLY = [name for name in backend_names() if not get_backend(name).quantization_aware]


def test_some_runtime_trains_with_fake_quantization():
    assert "openvino" in QUANTIZATION_AWARE  # NNCF; the minimum


@pytest.mark.parametrize("name", QUANTIZATION_AWARE)
def test_fake_quantized_training_exports_the_int8_model_it_trained(name, tmp_path, resnet20_weights, small_cifar):
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    backend = get_backend(name)
    calibration = calibration_images(model, small_cifar, limit=32)
    module = backend.fake_quantized(model, "int8", calibration)
    start = {k: v.clone() for k, v in module.state_dict().items() if k in model.module.state_dict()}
    assert len(start) == len(model.module.state_dict())  # the float weights keep their names beside the quantizers
    samples = ImageSamples.scan(str(small_cifar), model.class_names, model.preprocessing)
    result = finetune_classifier(module, samples, FinetuneRecipe(epochs=1, batch_size=25, lr=0.001),
                                 mean=model.preprocessing.mean, std=model.preprocessing.std)  # fmt: skip
    assert result.epochs_run == 1 and np.isfinite(result.losses[0])
    assert any(not torch.equal(start[k], v) for k, v in module.state_dict().items() if k in start)  # it trained

    artifact = backend.export_fake_quantized(model, module, tmp_path, "int8", calibration_images=32, epochs=1)
    assert artifact.precision == "int8" and artifact.qat_epochs == 1
    assert artifact.quantization.startswith("quantization-aware training (1 epochs; ranges initialised on 32")
    images = calibration[:16]
    with torch.no_grad():
        reference = module.eval()(torch.from_numpy(images)).numpy()
    with AgentSession(LocalTransport()) as agent:
        outputs = agent.run(artifact.path, name, {artifact.inputs[0].name: images}, threads=1)
    runtime = next(iter(outputs.values()))
    cosine = np.sum(runtime * reference, 1) / np.linalg.norm(runtime, axis=1) / np.linalg.norm(reference, axis=1)
    # the runtime computes the fake-quantized network (seen: cosine 0.9998 on 500 CIFAR images for ResNet-20)
    assert cosine.min() > 0.995 and (runtime.argmax(1) == reference.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("runtime", POST_TRAINING_ONLY)
def test_qat_epochs_on_a_runtime_without_it_is_one_line(runtime, tmp_path, resnet20_weights, small_cifar):
    backend = get_backend(runtime)
    with pytest.raises(ConfigError, match="--qat-epochs") as raised:
        backend.check_quantization_aware("int8" if "int8" in backend.precisions else None)
    assert all(name in raised.value.fix for name in QUANTIZATION_AWARE)


def test_qat_refuses_a_detector_before_any_work(tmp_path):
    from edgeprune.backends._registry import with_precision
    from edgeprune.build.quantization_aware import check
    from edgeprune.devices.profiles import load_profile, with_runtime
    from edgeprune.types.build import Budget, BuildOptions
    from tests.conftest import asset

    detector = load_model(str(asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")), LoadOptions())
    target = with_precision(with_runtime(load_profile("host"), "openvino"), "int8")
    options = BuildOptions(model=detector.spec, weights=None, target="host", data=str(tmp_path),
                           budget=Budget("speedup", 1.5), qat_epochs=1)  # fmt: skip
    with pytest.raises(ConfigError, match="classifiers so far"):
        check(detector, target, options)


@pytest.mark.parametrize("name", QUANTIZATION_AWARE)
def test_the_build_exports_a_pruned_model_after_qat_and_verifies_against_its_trained_weights(
    name, tmp_path, resnet20_weights, small_cifar
):
    """The export stage's QAT step on a pruned model saved where a build saves it: the artifact is the trained
    int8 model, and `weights_dir` gives the float weights it was trained from (what verify compares with)."""
    pytest.importorskip("nncf")
    from edgeprune.backends._registry import with_precision
    from edgeprune.build.data import split_data
    from edgeprune.build.quantization_aware import RESULT_FILE, export_quantization_aware
    from edgeprune.build.stages import pruned_dir, weights_dir
    from edgeprune.devices.profiles import load_profile, with_runtime
    from edgeprune.models.saved import load_pruned, save_pruned
    from edgeprune.progress import NoProgress
    from edgeprune.prune.channels import prune_channels
    from edgeprune.types.build import Budget, BuildOptions

    torch.manual_seed(0)
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    pruned = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    plan = prune_channels(pruned, 0.25, "l1", round_to=8)
    out = tmp_path / "build"
    finetuned = pruned_dir(out, "plan", True)
    finetuned.mkdir(parents=True)
    save_pruned(pruned, plan, finetuned)
    assert weights_dir(out, "plan") == finetuned  # no QAT yet: the fine-tuned weights
    splits = split_data(model, str(small_cifar), out / "data")
    target = with_precision(with_runtime(load_profile("host"), name), "int8")
    options = BuildOptions(model=model.spec, weights=str(resnet20_weights), target="host", data=str(small_cifar),
                           budget=Budget("speedup", 1.5), qat_epochs=1, distill=False)  # fmt: skip

    artifact = export_quantization_aware(model, target, options, "plan", splits, splits.finetune, out, NoProgress())
    assert artifact.qat_epochs == 1 and artifact.precision == "int8"
    assert (out / "export" / "plan" / "artifact.json").is_file()
    reference_dir = weights_dir(out, "plan")
    assert reference_dir != finetuned and (reference_dir / RESULT_FILE).is_file()
    reference = load_pruned(reference_dir, named_base=model.spec)
    assert reference.fingerprint == artifact.model_fingerprint  # verify's reference is what was trained and exported
    before = load_pruned(finetuned, named_base=model.spec)
    assert reference.fingerprint != before.fingerprint  # the QAT epoch moved the float weights
    again = export_quantization_aware(model, target, options, "plan", splits, splits.finetune, out, NoProgress())
    assert again == artifact  # a resumed export stage reuses a finished QAT model
