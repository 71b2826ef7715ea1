"""Acceptance: Yolo-Fastest-1.1 (real weights) on COCO128 through `edgeprune verify`, against an independent
pipeline: OpenCV 4.x's own Darknet reader, its own image decoding and resize (cv2.dnn.blobFromImage) and its own
inference. Only the NMS and the mAP code (ultralytics') are shared, since those are not what is being checked."""

import numpy as np
import pytest

from edgeprune.types import DetectionHead, Verification
from edgeprune.verify.data import Geometry
from edgeprune.verify.detection import DetectionScorer, postprocess
from edgeprune.verify.yolo_data import YoloDataset
from tests.conftest import asset, run_cli

cv2 = pytest.importorskip("cv2")
SIZE = 320


def opencv_map(cfg, weights, data_yaml, tmp_path) -> dict[str, float]:
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip("this OpenCV has no Darknet importer (dropped in OpenCV 5)")
    plain = tmp_path / "plain.cfg"  # OpenCV's [yolo] otherwise zeroes scores < 0.2 and runs its own NMS
    plain.write_text(cfg.read_text().replace("[yolo]", "[yolo]\nthresh=0\nnms_threshold=0"))
    net = cv2.dnn.readNetFromDarknet(str(plain), str(weights))
    dataset = YoloDataset.from_yaml(data_yaml)
    head = DetectionHead("darknet", 80, conf_threshold=0.005, iou_threshold=0.45)
    scorer = DetectionScorer(dataset.names)
    for image_path in dataset.images:
        image = cv2.imread(str(image_path))
        net.setInput(cv2.dnn.blobFromImage(image, 1 / 255, (SIZE, SIZE), swapRB=True, crop=False))
        rows = np.concatenate(net.forward(net.getUnconnectedOutLayersNames()))
        objectness = rows[:, 4:5]
        class_probability = np.divide(rows[:, 5:], objectness, out=np.zeros_like(rows[:, 5:]), where=objectness > 0)
        raw = np.concatenate([rows[:, :4] * SIZE, objectness, class_probability], axis=1)[None]
        height, width = image.shape[:2]
        geometry = Geometry(height, width, SIZE / width, SIZE / height, 0, 0)
        scorer.add(postprocess(raw, head)[0], dataset.labels(image_path), geometry, image_path.name)
    return scorer.result()


def test_yolo_fastest_map_on_coco128_matches_onnxruntime_and_an_independent_reference(tmp_path):
    cfg = asset("darknet/yolo-fastest/yolo-fastest-1.1.cfg")
    weights = asset("darknet/yolo-fastest/yolo-fastest-1.1.weights")
    data_yaml = asset("datasets/yaml/coco128.yaml")
    result = run_cli(
        "verify", "--model", cfg, "--weights", weights, "--data", data_yaml, "--out", tmp_path / "v", "--json"
    )
    assert result.code == 0, result.stderr
    verification = Verification.from_json(result.stdout)
    metrics = {m.name: m for m in verification.metrics}
    assert set(metrics) == {"mAP50-95", "mAP50"} and verification.n_samples == 128
    for metric in metrics.values():
        assert abs(metric.runtime - metric.reference) <= 0.002
    reference = opencv_map(cfg, weights, data_yaml, tmp_path)
    print(
        f"\nedgeprune PyTorch {metrics['mAP50-95'].reference:.4f} / ORT {metrics['mAP50-95'].runtime:.4f}, "
        f"OpenCV {reference['mAP50-95']:.4f} (mAP50-95); mAP50 {metrics['mAP50'].reference:.4f} vs {reference['mAP50']:.4f}"
    )
    assert abs(metrics["mAP50-95"].reference - reference["mAP50-95"]) <= 0.01
    assert metrics["mAP50-95"].reference > 0.1  # a trained detector, not noise
