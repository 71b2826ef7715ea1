"""Darknet YOLO fine-tuning: the loss against AlexeyAB's forward_yolo_layer on hand-built outputs, the training
loop on a tiny cfg and synthetic data, and Yolo-Fastest-1.1 (real weights) on COCO128 before and after pruning."""

import math
import textwrap

import numpy as np
import pytest
import torch

from edgeprune.errors import ConfigError
from edgeprune.models import LoadOptions, load_model
from edgeprune.train.darknet_yolo import DarknetRecipe, darknet_loss, finetune_darknet, yolo_inputs
from edgeprune.train.yolo_loss import YoloLoss, yolo_heads
from tests.conftest import asset

# A 64x64 detector with two [yolo] layers: 8x8 cells for anchors 3,4,5 (layer 4), 16x16 for 0,1,2 (layer 7).
ANCHORS = "4,5, 8,10, 12,20, 20,16, 30,40, 50,48"
TINY = """
[net]
width=64
height=64
channels=3
batch=4
learning_rate=0.002
momentum=0.9
decay=0.0005
policy=steps
steps=1000
scales=.1
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=3,4,5
anchors={anchors}
classes=2
num=6
jitter=.1
{yolo}

[route]
layers=-4

[convolutional]
filters=21
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors={anchors}
classes=2
num=6
jitter=.1
{yolo}
"""
TRUTH = (1, 0.30, 0.55, 0.45, 0.60)  # class 1, 28.8 x 38.4 px: best anchor 4 (30x40), shape IoU 0.92


def tiny_model(tmp_path, yolo: str = "", net: str = ""):
    cfg = TINY.format(anchors=ANCHORS, yolo=textwrap.dedent(yolo).strip())
    cfg = cfg.replace("[net]\n", "[net]\n" + net, 1)
    path = tmp_path / "tiny.cfg"
    path.write_text(cfg)
    return load_model(str(path), LoadOptions())


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def encoded_outputs(model, truth=TRUTH, slot=1, objectness=20.0):
    """Raw [yolo] inputs that say 'nothing' everywhere except `slot` of layer 4 at the truth's cell, which encodes
    the truth exactly (with the given objectness logit)."""
    raw = [torch.full((1, 21, 8, 8), -20.0), torch.full((1, 21, 16, 16), -20.0)]
    cls, cx, cy, w, h = truth
    anchor_w, anchor_h = 30.0, 40.0  # anchor 4, slot 1 of layer 4
    i, j = int(cx * 8), int(cy * 8)
    base = slot * 7
    raw[0][0, base + 0, j, i] = logit(cx * 8 - i)
    raw[0][0, base + 1, j, i] = logit(cy * 8 - j)
    raw[0][0, base + 2, j, i] = math.log(w * 64 / anchor_w)
    raw[0][0, base + 3, j, i] = math.log(h * 64 / anchor_h)
    raw[0][0, base + 4, j, i] = objectness
    raw[0][0, base + 5 + int(cls), j, i] = 20.0
    return raw


@pytest.mark.parametrize("iou_loss", ["mse", "ciou"])
def test_loss_is_zero_for_outputs_that_encode_the_truth_and_high_when_wrong(tmp_path, iou_loss):
    model = tiny_model(tmp_path, yolo=f"iou_loss={iou_loss}\niou_normalizer=0.07")
    heads = yolo_heads(model.module)
    assert [h.mask for h in heads] == [(3, 4, 5), (0, 1, 2)] and heads[0].grid == (8, 8) and heads[1].grid == (16, 16)
    loss_fn = YoloLoss(heads)
    truths = [torch.tensor([TRUTH])]
    exact, parts = loss_fn(encoded_outputs(model.module), truths)
    assert float(exact) < 1e-5, parts
    # the same box predicted by the wrong anchor slot: objectness and class terms of both slots, ~½ each
    wrong_anchor, _ = loss_fn(encoded_outputs(model.module, slot=0), truths)
    assert float(wrong_anchor) > 1.4
    # right anchor, not confident: ½(1 − σ(0))² for the objectness
    unsure, parts = loss_fn(encoded_outputs(model.module, objectness=0.0), truths)
    assert parts["obj"] == pytest.approx(0.125, abs=1e-4)


def test_targets_go_to_the_best_anchor_in_the_centre_cell_of_its_layer(tmp_path):
    """Assignment seen through the gradient, which is Darknet's delta with the sign flipped."""
    model = tiny_model(tmp_path, yolo="iou_loss=mse")
    loss_fn = YoloLoss(yolo_heads(model.module))
    raw = [torch.zeros(1, 21, 8, 8, requires_grad=True), torch.zeros(1, 21, 16, 16, requires_grad=True)]
    loss, _ = loss_fn(raw, [torch.tensor([TRUTH])])
    loss.backward()
    coarse = raw[0].grad.view(3, 7, 8, 8)
    fine = raw[1].grad.view(3, 7, 16, 16)
    # boxes and classes have a gradient at exactly one place: anchor 4 = slot 1 of layer 4, cell (row 4, col 2)
    box_and_class = coarse[:, [0, 1, 2, 3, 5, 6]].abs().sum(1)
    assert torch.nonzero(box_and_class).tolist() == [[1, 4, 2]]
    assert fine[:, [0, 1, 2, 3, 5, 6]].abs().sum() == 0
    # delta = target − output: objectness 1 − σ(0) there, 0 − σ(0) elsewhere (outputs at 0 overlap nothing)
    assert coarse[1, 4, 4, 2] == pytest.approx(-0.5)
    assert coarse[0, 4, 4, 2] == pytest.approx(0.5) and fine[2, 4, 9, 5] == pytest.approx(0.5)
    # classes: one-hot of class 1
    assert coarse[1, 5, 4, 2] == pytest.approx(0.5) and coarse[1, 6, 4, 2] == pytest.approx(-0.5)
    # mse box delta: iou_normalizer (0.75 default) · (2 − w·h) · (tx − σ(x)), tx = 0.30·8 − 2 = 0.4
    scale = 0.75 * (2 - 0.45 * 0.60)
    assert coarse[1, 0, 4, 2] == pytest.approx(-scale * (0.4 - 0.5), rel=1e-5)
    assert coarse[1, 2, 4, 2] == pytest.approx(-scale * math.log(0.45 * 64 / 30), rel=1e-5)


def test_iou_thresh_adds_anchors_and_ignore_thresh_spares_good_predictions(tmp_path):
    model = tiny_model(tmp_path, yolo="iou_thresh=0.4\nignore_thresh=0.5\niou_loss=ciou")
    loss_fn = YoloLoss(yolo_heads(model.module))

    def gradients(class_logit: float):
        raw = encoded_outputs(model.module, objectness=0.0)
        # the 16x16 layer's slot 2 (anchor 2, 12x20; shape IoU 0.22: not assigned) at the truth's centre cell
        # predicts the truth's box exactly, with objectness σ(0) and class 1 at `class_logit`
        cls, cx, cy, w, h = TRUTH
        i, j = int(cx * 16), int(cy * 16)
        for channel, value in enumerate(
            [
                logit(cx * 16 - i),
                logit(cy * 16 - j),
                math.log(w * 64 / 12),
                math.log(h * 64 / 20),
                0.0,
                -20.0,
                class_logit,
            ]
        ):
            raw[1][0, 14 + channel, j, i] = value
        raw = [r.requires_grad_() for r in raw]
        loss_fn(raw, [torch.tensor([TRUTH])])[0].backward()
        return raw[0].grad.view(3, 7, 8, 8), raw[1].grad.view(3, 7, 16, 16)[2, 4, j, i]

    coarse, spared = gradients(class_logit=5.0)
    assert spared == 0  # IoU 1 > ignore_thresh and a class probability > 0.25: objectness left alone
    assert gradients(class_logit=-20.0)[1] == pytest.approx(0.5)  # no class above 0.25: pushed to 0 after all
    # shape IoU with anchor 5 (50x48) is 0.46 > iou_thresh, so layer 4's slot 2 is a positive besides slot 1
    assert coarse[1, 4, 4, 2] == pytest.approx(-0.5) and coarse[2, 4, 4, 2] == pytest.approx(-1.0)
    assert coarse[2, :4, 4, 2].abs().sum() > 0 and coarse[2, 6, 4, 2] == pytest.approx(-1.0)
    assert coarse[0, :4].abs().sum() == 0


@pytest.mark.parametrize(("yolo", "net", "option"), [
    ("focal_loss=1", "", "focal_loss"),
    ("truth_thresh=0.7", "", "truth_thresh"),
    ("cls_normalizer=2", "", "cls_normalizer"),
    ("random=1", "", "random"),
    ("", "mosaic=1\n", "mosaic"),
    ("", "adam=1\n", "adam"),
])  # fmt: skip
def test_unsupported_options_are_refused_by_name(tmp_path, yolo, net, option):
    model = tiny_model(tmp_path, yolo=yolo, net=net)
    data = synthetic_data(tmp_path, 2)
    with pytest.raises(ConfigError, match=option):
        finetune_darknet(model, data, DarknetRecipe(epochs=1))


def test_policy_other_than_steps_is_refused(tmp_path):
    model = tiny_model(tmp_path)
    model.module.sections[0].options["policy"] = "poly"
    with pytest.raises(ConfigError, match="policy=poly"):
        finetune_darknet(model, synthetic_data(tmp_path, 2), DarknetRecipe(epochs=1))


def synthetic_data(tmp_path, n: int) -> str:
    """`n` images of coloured rectangles on grey, class 0 red and class 1 blue, with a data yaml."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images, labels = tmp_path / "data" / "images" / "train", tmp_path / "data" / "labels" / "train"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        pixels = np.full((96, 128, 3), 128, np.uint8)
        rows = []
        for _ in range(2):
            cls = int(rng.integers(0, 2))
            w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
            x, y = int(rng.integers(0, 128 - w)), int(rng.integers(0, 96 - h))
            pixels[y : y + h, x : x + w] = (220, 30, 30) if cls == 0 else (30, 30, 220)
            rows.append(f"{cls} {(x + w / 2) / 128} {(y + h / 2) / 96} {w / 128} {h / 96}")
        Image.fromarray(pixels).save(images / f"{k:03d}.png")
        (labels / f"{k:03d}.txt").write_text("\n".join(rows) + "\n")
    yaml = tmp_path / "data.yaml"
    yaml.write_text(f"path: {tmp_path / 'data'}\ntrain: images/train\nval: images/train\nnames: [red, blue]\n")
    return str(yaml)


def test_finetuning_a_tiny_detector_is_deterministic_and_learns(tmp_path):
    data = synthetic_data(tmp_path, 8)
    recipe = DarknetRecipe(epochs=6, seed=3)  # [net]: batch 4, lr 0.002, cfg augmentation (jitter, flip, HSV)
    runs = []
    for _ in range(2):
        model = tiny_model(tmp_path)
        before = darknet_loss(model, data)["total"]
        losses = finetune_darknet(model, data, recipe)
        runs.append((losses, model.module.state_dict()))
    (losses, weights), (again, weights_again) = runs
    assert losses == again
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)
    assert not model.module.training
    assert losses[-1] < 0.5 * losses[0]
    assert darknet_loss(model, data)["total"] < 0.5 * before


def test_raw_outputs_are_captured_without_changing_the_inference_output(tmp_path):
    model = tiny_model(tmp_path)
    x = torch.rand(2, 3, 64, 64)
    plain = model.module(x)
    with yolo_inputs(model.module) as raw:
        hooked = model.module(x)
    assert torch.equal(plain, hooked)
    assert [tuple(r.shape) for r in raw] == [(2, 21, 8, 8), (2, 21, 16, 16)]
    model.module(x)
    assert len(raw) == 2  # the hooks are gone


# ----------------------------------------------------------------------------------------------- real assets

N_IMAGES = 16


def yolo_fastest():
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    weights = asset("darknet/yolo-fastest/yolo-fastest-1.1.weights")
    return load_model(str(cfg), LoadOptions(weights=str(weights)))


def coco_map(loaded, data_yaml) -> dict[str, float]:
    """mAP as `edgeprune verify` scores it (verify/scoring.py DetectionScoring), on the PyTorch model."""
    from edgeprune.verify.scoring import DetectionScoring

    scoring = DetectionScoring(loaded, data_yaml, N_IMAGES)
    loaded.module.eval()
    with torch.inference_mode():
        for batch in scoring.batches(8):
            out = loaded.module(torch.from_numpy(batch.images)).numpy()
            scoring.add(out, out, batch)
    return {c.name: c.reference for c in scoring.comparisons(0.0)}


def test_yolo_fastest_finetuning_lowers_its_loss_on_coco128():
    data = str(asset("datasets/yaml/coco128.yaml"))
    model = yolo_fastest()
    before = darknet_loss(model, data, limit=N_IMAGES)
    # the cfg's lr 0.001, momentum 0.949, decay 5e-4, BN rolling rate 0.01; no burn-in (4000 steps in the cfg)
    recipe = DarknetRecipe(epochs=1, batch_size=8, burn_in=0, limit=N_IMAGES, augment=False, recalibrate_bn=0)
    losses = finetune_darknet(model, data, recipe)
    after = darknet_loss(model, data, limit=N_IMAGES)
    print(f"\nYolo-Fastest-1.1 loss/image on {N_IMAGES} COCO128 images: {before} -> {after} (training {losses})")
    assert after["total"] < 0.97 * before["total"]


def test_pruned_yolo_fastest_recovers_with_finetuning():
    from edgeprune.prune.channels import prune_channels

    data = str(asset("datasets/yaml/coco128.yaml"))
    model = yolo_fastest()
    prune_channels(model, 0.3, "l1")
    pruned_loss, pruned_map = darknet_loss(model, data, limit=N_IMAGES)["total"], coco_map(model, data)
    recipe = DarknetRecipe(epochs=3, batch_size=8, burn_in=0, limit=N_IMAGES, augment=False)
    losses = finetune_darknet(model, data, recipe)
    loss, tuned_map = darknet_loss(model, data, limit=N_IMAGES)["total"], coco_map(model, data)
    print(
        f"\npruned 30% l1: loss/image {pruned_loss:.2f} -> {loss:.2f} (training {losses}), "
        f"mAP50 {pruned_map['mAP50']:.4f} -> {tuned_map['mAP50']:.4f}, "
        f"mAP50-95 {pruned_map['mAP50-95']:.4f} -> {tuned_map['mAP50-95']:.4f}"
    )
    # Recovery is asserted on the loss, which moves far beyond its run-to-run spread. Measured (issue 15), loss/image
    # after pruning 33.72; after these 3 epochs 14.48-15.98 (ratio 0.43-0.47) over seeds 0-2 at 1 and 2 threads;
    # with lr 1e-9 (batch-norm recalibration only) 32.46 (0.96); with 0 epochs unchanged (1.0). mAP on 16 images
    # is noise at this budget, so it is printed, not asserted: mAP50 0.003-0.037 over the same runs around the
    # pruned model's 0.021 (mAP50-95 0.0005-0.0099 around 0.0064; a strict "better than pruned" failed by 0.00003).
    assert loss < 0.7 * pruned_loss
