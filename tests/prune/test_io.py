"""The issue's acceptance models: residual blocks and 30 % of the channels removed, saved, reloaded without pickles
(and, for Darknet, as cfg + weights), each reload computing the pruned model's outputs, and ONNX Runtime matching."""

import json
import os

import numpy as np
import pytest
import torch

from edgeprune.commands import prune_model
from edgeprune.errors import ModelError
from edgeprune.models import LoadOptions, load_model
from edgeprune.models.saved import PLAN_FILE, WEIGHTS_FILE
from edgeprune.types import PrunePlan
from tests.conftest import asset, run_cli
from tests.models.test_ultralytics import _recalibrate_bn as recalibrate_bn
from tests.prune.depth_support import onnxruntime_error, relative_error, run

# spec (or Darknet cfg under ../shared/assets, "+weights" with its real weights), residual blocks to remove
ACCEPTANCE = [
    ("yolov3-tiny.yaml", 0),  # no residual blocks
    ("yolov3.yaml", 2),
    ("yolov8n.yaml", 2),
    ("yolo11n.yaml", 2),
    ("darknet/pjreddie/yolov3.cfg", 2),
    ("darknet/alexeyab/yolov4-tiny.cfg", 0),  # no [shortcut] layers
    ("darknet/yolo-fastest/yolo-fastest-1.1.cfg+weights", 2),
]


def _load(spec: str):
    if spec.startswith("darknet/"):
        cfg, _, weights = spec.partition("+")
        path = asset(cfg)
        return load_model(str(path), LoadOptions(weights=str(path.with_suffix(".weights")) if weights else None))
    model = load_model(spec)
    recalibrate_bn(model.module, model.inputs[0].shape[-1])  # random init: make the outputs depend on the input
    return model


@pytest.mark.parametrize(("spec", "blocks"), ACCEPTANCE)
def test_blocks_and_channels_pruned_saved_and_reloaded_exactly(spec, blocks, tmp_path):
    model = _load(spec)
    x = torch.rand(1, *model.inputs[0].shape[1:], generator=torch.Generator().manual_seed(3))
    original = run(model, x)

    plan = prune_model(model, tmp_path / "pruned", ratio=0.3, criterion="l1", blocks=blocks)

    assert len(plan.removed_blocks) == blocks and plan.channel_history
    assert plan.macs_after < 0.75 * plan.macs_before and plan.params_after < 0.75 * plan.params_before
    pruned = run(model, x)
    assert pruned.shape == original.shape and np.isfinite(pruned).all()
    assert onnxruntime_error(model, tmp_path / "onnx", x) <= 1e-4

    reloaded = load_model(str(tmp_path / "pruned"))
    saved, rebuilt = model.module.state_dict(), reloaded.module.state_dict()
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[k], rebuilt[k]) for k in saved)
    assert np.array_equal(run(reloaded, x), pruned)
    if spec.startswith("darknet/"):  # Darknet users get a cfg + weights that any Darknet reader loads
        darknet = load_model(str(tmp_path / "pruned" / "model.cfg"),
                             LoadOptions(weights=str(tmp_path / "pruned" / "model.weights")))  # fmt: skip
        assert sum(p.numel() for p in darknet.module.parameters()) == plan.params_after
        assert relative_error(run(darknet, x), pruned) <= 1e-5


def test_reloads_in_a_fresh_process_without_trusting_pickles(tmp_path, resnet20_weights):
    pruned_dir, x_file = tmp_path / "pruned", tmp_path / "x.npy"
    result = run_cli("prune", "--model", "cifar:resnet20", "--weights", resnet20_weights, "--ratio", "0.4",
                     "--blocks", "2", "--out", pruned_dir, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    plan = PrunePlan.from_dict(json.loads(result.stdout))
    assert plan.base_model == "cifar:resnet20" and len(plan.removed_blocks) == 2
    assert 1 - plan.macs_after / plan.macs_before > 0.5
    assert sorted(p.name for p in pruned_dir.iterdir()) == sorted([PLAN_FILE, WEIGHTS_FILE])

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(x_file, x)
    script = (
        "import sys, numpy as np, torch; from edgeprune.models import load_model; "
        f"m = load_model({str(pruned_dir)!r}); "
        "np.save(sys.argv[1], m.module(torch.from_numpy(np.load(sys.argv[2]))).detach().numpy())"
    )
    outputs = []
    for k in range(2):  # two fresh interpreters: the reload is deterministic, not only loadable
        import subprocess
        import sys

        out_file = tmp_path / f"out{k}.npy"
        proc = subprocess.run([sys.executable, "-c", script, str(out_file), str(x_file)], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outputs.append(np.load(out_file))
    assert np.array_equal(outputs[0], outputs[1])

    # the same model in this process: the plan replayed on the base model gives the saved model's numbers
    reloaded = load_model(f"edgeprune:{pruned_dir}")
    with torch.inference_mode():
        assert np.array_equal(reloaded.module(torch.from_numpy(x)).numpy(), outputs[0])
    # and it is the pruned model, not the checkpoint it came from
    base = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    with torch.inference_mode():
        assert not np.allclose(base.module(torch.from_numpy(x)).numpy(), outputs[0])


def test_a_damaged_saved_model_is_refused_with_its_path(tmp_path, resnet20_weights):
    model = load_model("cifar:resnet20", LoadOptions(weights=str(resnet20_weights)))
    prune_model(model, tmp_path, ratio=0.3, criterion="l1")
    plan = json.loads((tmp_path / PLAN_FILE).read_text())
    plan["channel_history"] = plan["channel_history"][:-3]  # the tensors no longer fit the replayed widths
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan))
    with pytest.raises(ModelError, match=WEIGHTS_FILE):
        load_model(str(tmp_path))

    result = run_cli("verify", "--model", tmp_path / "missing", "--data", tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr


def test_cli_prunes_a_detector_by_apoz_fine_tunes_it_with_ultralytics_and_ships_a_yolo_pt(tmp_path, coco16_yaml):
    out = tmp_path / "pruned"
    result = run_cli("prune", "--model", "yolov8n.yaml", "--input-shape", "1,3,160,160", "--ratio", "0.3",
                     "--criterion", "apoz", "--blocks", "2", "--data", coco16_yaml, "--finetune-epochs", "1",
                     "--out", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    plan = PrunePlan.from_dict(json.loads(result.stdout))
    assert plan.criterion == "apoz" and len(plan.removed_blocks) == 2
    assert (out / "ultralytics" / "finetune" / "weights" / "best.pt").is_file()
    assert json.loads((out / "finetune_recipe.json").read_text())["epochs"] == 1  # recorded beside the weights

    from ultralytics import YOLO

    reloaded = load_model(str(out))
    assert sum(p.numel() for p in reloaded.module.parameters()) == plan.params_after
    yolo = YOLO(str(out / "model.pt"))  # what an ultralytics user gets: the pruned, fine-tuned network
    assert sum(p.numel() for p in yolo.model.parameters()) == plan.params_after
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs = yolo.model.float().eval()(x)
    theirs = theirs[0] if isinstance(theirs, (tuple, list)) else theirs
    assert relative_error(theirs.numpy(), run(reloaded, x)) <= 1e-5


def test_detectors_refuse_a_criterion_without_a_loss(tmp_path, coco16_yaml):
    result = run_cli("prune", "--model", "yolov8n.yaml", "--ratio", "0.3", "--criterion", "taylor", "--data",
                     coco16_yaml, "--out", tmp_path)  # fmt: skip
    assert result.code == 2 and "needs a loss" in result.stderr and "Traceback" not in result.stderr


# one model of each kind of structure the coverage sweep saves: torchvision MNASNet (its modules check the version
# of what they load, which safetensors does not keep), a residual net, squeeze-excite + hardswish, channel shuffle
# (rewritten before pruning), and attention (a tiny ViT, a python: model: reloaded with --trust-code)
FRESH_RELOAD = ["mnasnet0_5", "resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "tiny_vit"]
TINY_VIT_MODULE = "from tests.conftest import tiny_vit\nedgeprune_input = {'shape': (1, 3, 32, 32)}\n" \
                  "def build():\n    return tiny_vit().module\n"  # fmt: skip


def _prune_and_save(folder: str) -> None:
    """Prune each model of FRESH_RELOAD, save it under `folder`, and save its outputs on a fixed input beside it."""
    from pathlib import Path

    from edgeprune.models.saved import save_pruned
    from edgeprune.prune.channels import prune_channels
    from tests.conftest import tiny_vit

    for name in FRESH_RELOAD:
        if name == "tiny_vit":
            model, size = tiny_vit(), 32
            model.spec = "python:tinyvit_model:build"  # what the reloading process imports
        else:
            model, size = load_model(f"torchvision:{name}"), 64
            recalibrate_bn(model.module, size)  # random init: make the outputs depend on the input
        plan = prune_channels(model, 0.3, "l1")
        assert plan.params_after < plan.params_before
        save_pruned(model, plan, Path(folder) / name)
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        np.save(Path(folder) / f"{name}.x.npy", x.numpy())
        np.save(Path(folder) / f"{name}.expected.npy", run(model, x))


def test_pruned_models_reload_in_a_fresh_process_with_identical_outputs(tmp_path):
    """What the coverage sweep checks for every model, on a few small ones: prune and save in one process, reload
    the folder in another as `--model DIR` does, and get bit-identical outputs. (Both are fresh processes: a
    process that has run other runtimes may compute the last bits differently.)"""
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "tinyvit_model.py").write_text(TINY_VIT_MODULE)
    reload = (
        "import sys, numpy as np, torch; from edgeprune.models import LoadOptions, load_model\n"
        "for name in sys.argv[1:]:\n"
        "    model = load_model(name, LoadOptions(trust_code=True))\n"
        "    with torch.inference_mode():\n"
        "        np.save(f'{name}.out.npy', model.module(torch.from_numpy(np.load(f'{name}.x.npy'))).numpy())\n"
    )
    for script in ("import sys; from tests.prune.test_io import _prune_and_save; _prune_and_save('.')", reload):
        proc = subprocess.run([sys.executable, "-c", script, *FRESH_RELOAD], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    for name in FRESH_RELOAD:
        expected = np.load(tmp_path / f"{name}.expected.npy")
        assert np.ptp(expected) > 0, name
        assert np.array_equal(np.load(tmp_path / f"{name}.out.npy"), expected), name
