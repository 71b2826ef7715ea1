import numpy as np
import pytest

from edgeprune.errors import ConfigError
from edgeprune.types import DetectionHead, Preprocessing
from edgeprune.verify.data import prepare_image
from edgeprune.verify.detection import DetectionScorer, postprocess
from edgeprune.verify.yolo_data import YoloDataset
from tests.conftest import asset

LETTERBOX = Preprocessing(crop=(640, 640), letterbox=True, antialias=False, pad_value=114 / 255)


def _label_boxes_in_input(labels, geometry):
    cx, cy, w, h = (labels[:, i] * s for i, s in zip(range(1, 5), [geometry.width, geometry.height] * 2))
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    return xyxy * np.array([geometry.gain_x, geometry.gain_y] * 2) + np.array([geometry.pad_x, geometry.pad_y] * 2)


@pytest.fixture(scope="module")
def coco128():
    return YoloDataset.from_yaml(asset("datasets/yaml/coco128.yaml")).subset(24)


def _score(coco128, preprocessing, jitter):
    scorer, rng = DetectionScorer(coco128.names), np.random.default_rng(0)
    for image in coco128.images:
        geometry, labels = prepare_image(image, preprocessing).geometry, coco128.labels(image)
        boxes = _label_boxes_in_input(labels, geometry)
        boxes += rng.normal(0, jitter, boxes.shape) * np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        detections = np.concatenate([boxes, rng.uniform(0.3, 1, (len(labels), 1)), labels[:, :1]], axis=1)
        scorer.add(detections, labels, geometry, image.name)
    return scorer.result()


@pytest.mark.parametrize(
    "preprocessing", [LETTERBOX, Preprocessing(crop=(320, 416), antialias=False)], ids=["letterbox", "straight-resize"]
)
def test_ground_truth_as_predictions_scores_the_metric_ceiling(coco128, preprocessing):
    result = _score(coco128, preprocessing, jitter=0.0)
    # ultralytics' 101-point interpolated AP tops out at 0.995
    assert result["mAP50"] == pytest.approx(0.995, abs=1e-3) and result["mAP50-95"] == pytest.approx(0.995, abs=1e-3)


def test_jittered_boxes_lose_map_at_strict_ious_first(coco128):
    result = _score(coco128, LETTERBOX, jitter=0.05)
    assert 0.9 < result["mAP50"] < 0.995 and result["mAP50-95"] < result["mAP50"] - 0.1


def test_darknet_layout_scores_are_objectness_times_class_probability():
    head = DetectionHead("darknet", num_classes=2, conf_threshold=0.1, iou_threshold=0.45)
    raw = np.zeros((1, 3, 7), dtype=np.float32)
    raw[0, 0] = [50, 50, 20, 20, 0.9, 0.8, 0.1]  # kept: 0.72 for class 0
    raw[0, 1] = [52, 50, 20, 20, 0.9, 0.5, 0.1]  # same class, overlaps box 0 → suppressed
    raw[0, 2] = [10, 10, 4, 4, 0.1, 0.9, 0.9]  # 0.09 < conf threshold → dropped
    (kept,) = postprocess(raw, head)
    np.testing.assert_allclose(kept, [[40, 40, 60, 60, 0.72, 0]], rtol=1e-6)


def test_ultralytics_layout_and_class_count_check():
    head = DetectionHead("ultralytics", num_classes=2, conf_threshold=0.25, iou_threshold=0.7)
    raw = np.zeros((1, 6, 2), dtype=np.float32)
    raw[0, :, 0] = [100, 100, 10, 10, 0.1, 0.9]
    (kept,) = postprocess(raw, head)
    np.testing.assert_allclose(kept, [[95, 95, 105, 105, 0.9, 1]], rtol=1e-6)
    with pytest.raises(ConfigError, match="2 class scores, the model declares 3"):
        postprocess(raw, DetectionHead("ultralytics", 3, 0.25, 0.7))


def test_geometry_maps_input_boxes_back_to_the_original_image():
    image = asset("images/ultralytics_assets/bus.jpg")  # 810 × 1080
    geometry = prepare_image(image, LETTERBOX).geometry
    assert (geometry.width, geometry.height) == (810, 1080)
    np.testing.assert_allclose(
        geometry.to_original(np.array([[geometry.pad_x, 0, 640 - geometry.pad_x, 640]])), [[0, 0, 810, 1080]], atol=1
    )
