"""Yolo-Fastest with its real weights against an independent Darknet reader: OpenCV's dnn module (4.x).

OpenCV's [yolo] rows are (row, col, anchor) per head: cx, cy, w, h over the net size, objectness, and class
scores already multiplied by the objectness, zeroed below the layer's `thresh` and suppressed by its own NMS;
a copy of the cfg with thresh=0 and nms_threshold=0 (keys only OpenCV reads) turns both off.

OpenCV folds batch norm with eps 1e-6, AlexeyAB's Darknet (which trained Yolo-Fastest) with 1e-5
(src/network.c fuse_conv_batchnorm; pjreddie's adds 1e-6 to the standard deviation instead). That eps is the
whole difference: with OpenCV's eps the outputs agree to float rounding.
"""

import numpy as np
import pytest
import torch

from edgeprune.models import LoadOptions
from edgeprune.models.darknet import load
from tests.conftest import asset

cv2 = pytest.importorskip("cv2")
if not hasattr(cv2.dnn, "readNetFromDarknet"):
    pytest.skip("this OpenCV has no Darknet importer (dropped in OpenCV 5)", allow_module_level=True)

IMAGES = ("images/darknet/dog.jpg", "images/ultralytics_assets/bus.jpg")
SIZE = 320


def blob(image: str) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(asset(image))), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None])


@pytest.fixture(scope="module", params=["yolo-fastest-1.1", "yolo-fastest-1.1-xl"])
def pair(request, tmp_path_factory):
    cfg = asset(f"darknet/yolo-fastest/{request.param}.cfg")
    weights = asset(f"darknet/yolo-fastest/{request.param}.weights")
    plain = tmp_path_factory.mktemp("opencv") / "plain.cfg"
    plain.write_text(cfg.read_text().replace("[yolo]", "[yolo]\nthresh=0\nnms_threshold=0"))
    net = cv2.dnn.readNetFromDarknet(str(plain), str(weights))
    return load(str(cfg), LoadOptions(weights=str(weights))).module, net


def compare(model, net, image: str) -> tuple[float, float]:
    """(max box difference in pixels, max probability difference) over all rows of both heads."""
    x = blob(image)
    net.setInput(x)
    theirs = net.forward(net.getUnconnectedOutLayersNames())
    with torch.inference_mode():
        ours = model(torch.from_numpy(x))[0].numpy()
    box, prob, start = 0.0, 0.0, 0
    for head, rows in zip(model.yolo_layers, theirs, strict=True):
        h, w = head.grid.shape[2:4]
        n = head.num_anchors * h * w
        mine = ours[start : start + n].reshape(head.num_anchors, h, w, -1).transpose(1, 2, 0, 3).reshape(n, -1)
        start += n
        box = max(box, np.abs(mine[:, :4] - rows[:, :4] * SIZE).max())
        scores = np.concatenate([mine[:, 4:5], mine[:, 4:5] * mine[:, 5:]], 1)
        prob = max(prob, np.abs(scores - rows[:, 4:]).max())
    assert start == len(ours)
    return box, prob


@pytest.mark.parametrize("image", IMAGES)
def test_agrees_with_opencv_when_batch_norm_eps_is_opencvs(pair, image):
    model, net = pair
    eps = {m: m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    try:
        for m in eps:
            m.eps = 1e-6
        box, prob = compare(model, net, image)
    finally:
        for m, value in eps.items():
            m.eps = value
    print(f"\nOpenCV's eps, {image}: boxes {box:.2e} px, probabilities {prob:.2e}")
    assert box <= 1e-5 * SIZE and prob <= 1e-5


@pytest.mark.parametrize("image", IMAGES)
def test_agrees_with_opencv_within_the_eps_difference(pair, image):
    model, net = pair
    box, prob = compare(model, net, image)
    print(f"\nDarknet's eps, {image}: boxes {box:.2e} px, probabilities {prob:.2e}")
    assert box <= 1e-3 * SIZE and prob <= 2e-3
    x = torch.from_numpy(blob(image))
    with torch.inference_mode():
        assert model(x)[0, :, 4].max() > 0.5  # the weights see something in both images
