"""A Darknet model fine-tuned inside `build` is saved with its family's files: the fine-tuned folder holds
model.cfg + model.weights, which edgeprune's Darknet loader and an independent reader (OpenCV's dnn) load. (The
folder is reloaded as `edgeprune:DIR` before fine-tuning; the family, not the spec, says it is a Darknet model.)"""

import numpy as np
import pytest
import torch

from edgeprune.build.data import DataSplits
from edgeprune.build.recovery import finetune_one
from edgeprune.build.stages import pruned_dir
from edgeprune.commands import prune_model
from edgeprune.models import LoadOptions, load_model
from edgeprune.progress import NoProgress
from edgeprune.types.build import Budget, BuildOptions
from tests.train.test_darknet_yolo import synthetic_data, tiny_model


def test_a_darknet_builds_finetuned_folder_holds_a_cfg_and_weights_that_darknet_readers_load(tmp_path):
    data = synthetic_data(tmp_path, 8)
    out = tmp_path / "build"
    source, finetuned = pruned_dir(out, "plan", False), pruned_dir(out, "plan", True)
    plan = prune_model(tiny_model(tmp_path), source, ratio=0.3, criterion="l1")
    assert plan.params_after < plan.params_before
    options = BuildOptions(model="darknet", weights=None, target="host", data=data, budget=Budget("speedup", 2),
                           finetune_epochs=1, distill=False, device="cpu")  # fmt: skip
    result = finetune_one(tiny_model(tmp_path), out, "plan", options, DataSplits(finetune=data, holdout=data), None,
                          NoProgress())  # fmt: skip
    assert result.epochs_run == 1 and result.validation == ()  # Darknet's trainer has no validation split of ours

    assert {"model.cfg", "model.weights"} <= {p.name for p in finetuned.iterdir()}
    reloaded = load_model(str(finetuned))
    assert reloaded.family.name == "darknet" and reloaded.spec == f"edgeprune:{finetuned}"
    darknet = load_model(str(finetuned / "model.cfg"), LoadOptions(weights=str(finetuned / "model.weights")))
    assert sum(p.numel() for p in darknet.module.parameters()) == plan.params_after
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    unfinetuned = load_model(str(source))
    with torch.inference_mode():
        ours, theirs, before = (m.module(x).numpy() for m in (reloaded, darknet, unfinetuned))
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(ours).max()
    assert not np.allclose(ours, before)  # the fine-tuned weights were written, not the pruned ones

    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no Darknet importer (dropped in OpenCV 5)")
    plain = tmp_path / "opencv.cfg"  # OpenCV's own [yolo] threshold and NMS off (keys only OpenCV reads)
    plain.write_text((finetuned / "model.cfg").read_text().replace("[yolo]", "[yolo]\nthresh=0\nnms_threshold=0"))
    net = cv2.dnn.readNetFromDarknet(str(plain), str(finetuned / "model.weights"))
    net.setInput(x.numpy())
    rows = net.forward(net.getUnconnectedOutLayersNames())
    assert sum(len(r) for r in rows) == ours.shape[1]
    # the same objectness, row order aside (OpenCV folds batch norm with eps 1e-6, Darknet with 1e-5)
    objectness = np.sort(np.concatenate([r[:, 4] for r in rows]))
    assert np.abs(objectness - np.sort(ours[0, :, 4])).max() <= 2e-3
