"""Pruned YOLOs in ultralytics: the saved .pt loads in ultralytics.YOLO, and ultralytics' trainer fine-tunes the
pruned architecture (not the one rebuilt from the yaml). A random-init yolov8n, pruned in depth and width, on 16
COCO128 images at 160 px."""

import copy

import pytest
import torch
import yaml

from edgeprune.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.errors import ConfigError, DataError
from edgeprune.models import load_model
from edgeprune.models.ultralytics import save_ultralytics_pt
from edgeprune.prune.channels import prune_channels
from edgeprune.prune.depth import remove_blocks
from edgeprune.prune.rewrites import SplitC2f
from edgeprune.train.ultralytics_trainer import PrunedDetectionTrainer, finetune_ultralytics
from tests.conftest import asset

SIZE = 160
IMAGES = 16


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def pruned_once():
    model = load_model("yolov8n.yaml")
    remove_blocks(model, n=2)
    prune_channels(model, 0.3, "l1")
    return model


@pytest.fixture
def pruned(pruned_once):
    return copy.deepcopy(pruned_once)


@pytest.fixture
def tiny_data(coco16_yaml):
    return coco16_yaml


def _ultralytics_yolo(path):
    from ultralytics import YOLO

    return YOLO(str(path))


def test_saved_pt_loads_in_ultralytics_and_computes_the_same(pruned, tiny_data, tmp_path):
    path = save_ultralytics_pt(pruned, tmp_path / "pruned.pt")
    yolo = _ultralytics_yolo(path)
    model = yolo.model
    assert yolo.task == "detect" and _params(model) == _params(pruned.module) < 0.6 * 3_151_904
    assert any(isinstance(m, SplitC2f) for m in model.modules())
    assert model.yaml == pruned.module.yaml and torch.equal(model.stride, pruned.module.stride)
    assert model.names == dict(enumerate(pruned.class_names)) and model.args["imgsz"] == 640
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours, theirs = pruned.module(x), model(x)[0]  # our head is in export layout: the decoded boxes only
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0)
    assert pruned.module.model[-1].export  # the LoadedModel was not changed by saving
    results = yolo.predict(asset("images/ultralytics_assets/bus.jpg"), imgsz=SIZE, device="cpu", verbose=False)
    assert results[0].orig_shape == (1080, 810)
    metrics = yolo.val(
        data=str(tiny_data),
        imgsz=SIZE,
        batch=8,
        device="cpu",
        workers=0,
        plots=False,
        project=str(tmp_path),
        name="val",
        verbose=False,
    )
    assert 0 <= metrics.box.map50 <= 1 and (tmp_path / "val").is_dir()


def test_half_precision_pt_loads_close(pruned, tmp_path):
    model = _ultralytics_yolo(save_ultralytics_pt(pruned, tmp_path / "half.pt", half=True)).model
    assert next(model.parameters()).dtype == torch.float32  # ultralytics loads every checkpoint as fp32
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ours, theirs = pruned.module(x), model(x)[0]
    assert (theirs - ours).abs().max() <= 2e-3 * ours.abs().max()


def test_finetune_keeps_the_pruned_architecture_and_still_exports(pruned, tiny_data, tmp_path):
    before = {name: p.detach().clone() for name, p in pruned.module.named_parameters()}
    count = _params(pruned.module)
    relative = tiny_data.parent / "relative.yaml"
    result = finetune_ultralytics(pruned, relative, tmp_path / "run", epochs=1, imgsz=SIZE, batch=8)
    assert result and len(result.train_losses) == 1 and result.train_losses[0] > 0
    assert set(result.metrics) >= {"metrics/mAP50(B)", "metrics/mAP50-95(B)"}
    assert result.best.startswith(str(tmp_path)) and result.save_dir == str(tmp_path / "run" / "finetune")
    assert _params(pruned.module) == count and pruned.weights == result.best
    convs = [f"{name}.weight" for name, m in pruned.module.named_modules() if isinstance(m, torch.nn.Conv2d)]
    unchanged = [name for name in convs if torch.equal(pruned.module.get_parameter(name), before[name])]
    assert unchanged == ["model.22.dfl.conv.weight"]  # ultralytics freezes the DFL's fixed projection
    head = pruned.module.model[-1]
    assert head.export and head.dynamic and not pruned.module.training
    assert all(t.dtype == torch.float32 for t in pruned.module.state_dict().values() if t.is_floating_point())
    # what ultralytics wrote is the pruned architecture too
    assert _params(_ultralytics_yolo(result.best).model) == count
    artifact = OnnxRuntimeBackend().export(pruned, tmp_path / "onnx")
    assert artifact.path.is_file()


def test_same_seed_same_weights(pruned_once, tiny_data, tmp_path):
    runs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        model = copy.deepcopy(pruned_once)
        finetune_ultralytics(model, tiny_data, tmp_path / name, epochs=1, imgsz=SIZE, batch=8, seed=seed)
        runs.append(model.module.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])  # the seed reaches the augmentation


def test_users_train_the_pruned_pt_with_the_pruned_trainer(pruned, tiny_data, tmp_path):
    path = save_ultralytics_pt(pruned, tmp_path / "pruned.pt")
    yolo = _ultralytics_yolo(path)
    yolo.train(
        trainer=PrunedDetectionTrainer,
        data=str(tiny_data),
        epochs=1,
        imgsz=SIZE,
        batch=8,
        device="cpu",
        workers=0,
        plots=False,
        project=str(tmp_path),
        name="user",
        verbose=False,
    )
    assert _params(yolo.model) == _params(pruned.module)
    assert (tmp_path / "user" / "weights" / "best.pt").is_file()


def test_training_from_scratch_or_on_other_classes_is_refused(pruned, tiny_data, tmp_path):
    path = save_ultralytics_pt(pruned, tmp_path / "pruned.pt")
    common = {"trainer": PrunedDetectionTrainer, "epochs": 1, "imgsz": SIZE, "device": "cpu", "project": str(tmp_path)}
    with pytest.raises(ConfigError, match="got none"):
        _ultralytics_yolo(path).train(data=str(tiny_data), pretrained=False, name="scratch", **common)
    two_classes = tmp_path / "two.yaml"
    spec = yaml.safe_load(tiny_data.read_text())
    two_classes.write_text(yaml.safe_dump({**spec, "names": ["a", "b"]}))
    with pytest.raises(ConfigError, match="predicts 80 classes and the data has 2"):
        _ultralytics_yolo(path).train(data=str(two_classes), name="two", **common)
    with pytest.raises(DataError, match="2 classes and the model predicts 80"):
        finetune_ultralytics(pruned, two_classes, tmp_path / "ours", epochs=1)


def test_options_are_checked_before_anything_runs(pruned, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="project, resume"):
        finetune_ultralytics(pruned, tiny_data, tmp_path, epochs=1, project="elsewhere", resume=True)
    with pytest.raises(ConfigError, match="epochs=0"):
        finetune_ultralytics(pruned, tiny_data, tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="not an ultralytics detection model"):
        save_ultralytics_pt(load_model("cifar:resnet20"), tmp_path / "r.pt")
    assert not any(tmp_path.iterdir())
