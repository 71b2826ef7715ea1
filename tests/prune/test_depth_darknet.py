import numpy as np
import pytest
import torch

from edgeprune.models import LoadOptions, load_model
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet import write_cfg, write_weights
from edgeprune.prune.depth import removable_blocks, remove_blocks, replay_blocks
from tests.conftest import asset
from tests.prune.depth_support import onnxruntime_error, run, silence


def _silence_branch(model, name: str) -> None:
    """Zero γ and β of the last batch norm before the [shortcut] `name` (named by its current layer index)."""
    shortcut = model.module.blocks[int(name.removeprefix("layer"))]
    branch = model.module.blocks[shortcut.sources[0] + 1 : shortcut.index]
    silence([b for b in branch if isinstance(b, L.Convolutional)][-1].bn)


@pytest.fixture(scope="module")
def fastest():
    """Yolo-Fastest 1.1 with its trained weights: conv → depthwise conv → conv → dropout → shortcut(from=-5)."""
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    return str(cfg), LoadOptions(weights=str(asset("darknet/yolo-fastest/yolo-fastest-1.1.weights")))


def test_yolo_fastest_blocks_are_ranked_by_the_trained_gammas(fastest):
    model = load_model(*fastest)
    blocks = removable_blocks(model)
    assert len(blocks) == 18 and blocks[0].name == "layer8" and blocks[-1].name == "layer108"
    assert len({b.score for b in blocks}) == 18 and min(b.score for b in blocks) > 0
    convs = [b for b in model.module.blocks[4:8] if isinstance(b, L.Convolutional)]  # layer 8 adds layer 3
    assert blocks[0].params == sum(p.numel() for conv in convs for p in conv.parameters())


def test_yolo_fastest_silenced_blocks_are_removed_exactly_and_saved_as_darknet(fastest, tmp_path):
    model = load_model(*fastest)
    silenced = ["layer16", "layer21", "layer70"]  # 21 reads 16: removing both chains the renumbering
    for name in silenced:
        _silence_branch(model, name)
    x = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(4))
    before = run(model, x)
    assert remove_blocks(model, n=3) == tuple(silenced)
    assert len(model.module.blocks) == 131 - 3 * 5 and model._fingerprint is None
    after = run(model, x)
    assert np.abs(after - before).max() <= 1e-5 * np.ptp(before)
    write_cfg(model.module.cfg_sections(), tmp_path / "pruned.cfg")
    write_weights(model.module, tmp_path / "pruned.weights")
    reloaded = load_model(str(tmp_path / "pruned.cfg"), LoadOptions(weights=str(tmp_path / "pruned.weights")))
    assert np.array_equal(run(reloaded, x), after)


def test_yolo_fastest_names_stay_those_of_the_original_cfg_and_replay(fastest, tmp_path):
    model = load_model(*fastest)
    first = remove_blocks(model, names=["layer29", "layer88"])
    second = remove_blocks(model, n=2)
    remaining = [b.name for b in removable_blocks(model)]
    assert first == ("layer29", "layer88") and not set(first + second) & set(remaining) and len(remaining) == 14
    fresh = load_model(*fastest)
    replay_blocks(fresh, first + second)
    assert fresh.fingerprint == model.fingerprint
    x = torch.rand(2, 3, 320, 320, generator=torch.Generator().manual_seed(5))
    assert onnxruntime_error(model, tmp_path, x) <= 1e-4


def test_yolov3_routes_are_renumbered(tmp_path):
    # alexeyab's yolov3 at 160x160 (the wiring does not depend on the size): its routes read layers 61 and 36
    cfg = asset("darknet/alexeyab/yolov3.cfg").read_text().replace("width=416", "width=160")
    (tmp_path / "yolov3.cfg").write_text(cfg.replace("height=416", "height=160"))
    model = load_model(str(tmp_path / "yolov3.cfg"))
    assert len(removable_blocks(model)) == 23
    removed = ["layer11", "layer36", "layer61"]
    for name in removed:
        _silence_branch(model, name)
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(6))
    before = run(model, x)
    assert remove_blocks(model, n=3) == tuple(removed)
    routes = [s.options["layers"] for s in model.module.cfg_sections() if s.kind == "route"]
    # each removed block takes 3 layers; the shortcuts 36 and 61 stand in for their sources 33 and 58
    assert routes == ["-4", "-1,52", "-4", "-1,30"]
    assert np.abs(run(model, x) - before).max() <= 1e-5 * np.ptp(before)


def test_only_self_contained_linear_shortcut_branches_are_candidates(tmp_path):
    body = "".join(
        f"[convolutional]\nfilters=4\nsize=1\nbatch_normalize={bn}\nactivation=leaky\n\n"
        f"[shortcut]\nfrom=-2\nactivation={act}\n\n"
        for bn, act in ((1, "linear"), (0, "linear"), (1, "leaky"), (1, "linear"))
    )
    # layer 0 feeds the first block; the branch conv of the last block (layer 7) is also read by the route
    net = "[net]\nwidth=8\nheight=8\nchannels=4\n\n[convolutional]\nfilters=4\nsize=1\nactivation=leaky\n\n"
    (tmp_path / "tiny.cfg").write_text(f"{net}{body}[route]\nlayers=-2,-1\n")
    assert [b.name for b in removable_blocks(load_model(str(tmp_path / "tiny.cfg")))] == ["layer2"]


def test_darknet53_backbone_has_23_candidates():
    assert len(removable_blocks(load_model(str(asset("darknet/pjreddie/darknet53.cfg"))))) == 23
