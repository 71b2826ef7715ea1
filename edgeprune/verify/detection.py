"""Detector outputs → boxes (NMS) → mAP50 and mAP50-95, with ultralytics' maintained NMS and metric code.

Matching is done in original-image pixels (COCO's convention). This matters when a family resizes without
keeping the aspect ratio (Darknet), because IoU does not survive a non-uniform scale.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeprune._ultralytics import import_ultralytics
from edgeprune.errors import ConfigError
from edgeprune.models.family import FAMILIES, family_named
from edgeprune.types import DetectionHead
from edgeprune.verify.data import Geometry

# ultralytics' NMS stops after 0.5 s + max_time_img × batch and drops the remaining images with only a warning.
# On a slow CPU with Darknet's low confidence threshold that would truncate results silently, so lift it.
_NMS_SECONDS_PER_IMAGE = 60.0


def postprocess(raw: np.ndarray, head: DetectionHead) -> list[np.ndarray]:
    """Per image, an (n, 6) array of x1, y1, x2, y2 (input pixels), confidence, class, after NMS."""
    import torch

    import_ultralytics()
    from ultralytics.utils.nms import non_max_suppression

    prediction = torch.from_numpy(_decoder(head.layout)(raw))
    if prediction.shape[1] != 4 + head.num_classes:
        raise ConfigError(
            f"detector output has {prediction.shape[1] - 4} class scores, the model declares {head.num_classes}"
        )
    kept = non_max_suppression(
        prediction.float(),
        head.conf_threshold,
        head.iou_threshold,
        multi_label=True,
        agnostic=head.class_agnostic_nms,
        max_det=head.max_det,
        max_time_img=_NMS_SECONDS_PER_IMAGE,
    )
    return [k.numpy() for k in kept]


def _decoder(layout: str):
    """The family that names the head's layout turns its raw output into NMS's (N, 4 + C, A)."""
    decode = family_named(layout).detection_prediction if layout in FAMILIES else None
    if decode is None:
        known = [name for name in FAMILIES if family_named(name).detection_prediction is not None]
        raise ConfigError(f"unknown detection output layout {layout!r}", expected=" | ".join(known))
    return decode


class DetectionScorer:
    """Accumulates matches image by image; `result()` gives ultralytics' mAP50-95, mAP50, precision, recall."""

    def __init__(self, names: tuple[str, ...]):
        import torch

        import_ultralytics()
        from ultralytics.models.yolo.detect import DetectionValidator
        from ultralytics.utils.metrics import DetMetrics

        self.metrics = DetMetrics(names=dict(enumerate(names)))
        # Only the validator's match_predictions is used (greedy matching at IoU 0.50:0.95, as `yolo val`).
        # It writes nothing there, so the folder it insists on goes away at once instead of piling up in /tmp.
        with tempfile.TemporaryDirectory(prefix="edgeprune-val-") as unused:
            self._matcher = DetectionValidator(save_dir=Path(unused), args={"plots": False})
        self._matcher.iouv = torch.linspace(0.5, 0.95, 10)
        self.images = 0

    def add(self, detections: np.ndarray, labels: np.ndarray, geometry: Geometry, name: str) -> None:
        """`detections` (n, 6) in input pixels; `labels` (m, 5) class + normalised cx, cy, w, h."""
        import torch
        from ultralytics.utils.metrics import box_iou

        pred_boxes = geometry.to_original(detections[:, :4])
        gt = labels[:, 1:] * [geometry.width, geometry.height, geometry.width, geometry.height]
        gt_boxes = np.concatenate([gt[:, :2] - gt[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2], axis=1)
        pred_cls, gt_cls = detections[:, 5], labels[:, 0]
        if len(gt_cls) and len(pred_cls):
            iou = box_iou(torch.from_numpy(gt_boxes), torch.from_numpy(pred_boxes))
            tp = (
                self._matcher.match_predictions(torch.from_numpy(pred_cls), torch.from_numpy(gt_cls), iou).cpu().numpy()
            )
        else:
            tp = np.zeros((len(pred_cls), 10), dtype=bool)
        self.metrics.update_stats(
            {
                "tp": tp,
                "conf": detections[:, 4],
                "pred_cls": pred_cls,
                "target_cls": gt_cls,
                "target_img": np.unique(gt_cls),
                "im_name": name,
            }
        )
        self.images += 1

    def result(self) -> dict[str, float]:
        self.metrics.process(plot=False)
        box = self.metrics.box
        return {
            "mAP50-95": float(box.map),
            "mAP50": float(box.map50),
            "precision": float(box.mp),
            "recall": float(box.mr),
        }
