"""Training samples for Darknet detectors from YOLO-format data: the image as the model's input and its truths.

Without augmentation an image is preprocessed exactly as for inference (verify/data.py prepare_image). With it,
as AlexeyAB's `load_data_detection` does without mosaic: a random crop whose edges move by up to ±jitter of the
image size (parts outside the image filled with its mean colour; extended to the input's aspect ratio under
letter_box), resized to the input, a horizontal flip, and a random hue shift and saturation/exposure scaling in
HSV. Truths are class, cx, cy, w, h relative to the input, filtered as `fill_truth_detection` does: shuffled (with
augmentation), cut to max= boxes, clipped to the image, and dropped when smaller than one input pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgeprune.errors import DataError
from edgeprune.types import Preprocessing
from edgeprune.verify.data import prepare_image


@dataclass(frozen=True)
class Augmentation:
    jitter: float  # crop edges move by up to this fraction of the image size
    flip: bool
    hue: float  # shift by up to ± this fraction of the colour circle
    saturation: float  # scale by a factor in [1/s, s]
    exposure: float  # scale the value by a factor in [1/e, e]


def training_sample(
    path: Path,
    labels: np.ndarray,
    preprocessing: Preprocessing,
    max_boxes: int,
    augmentation: Augmentation | None,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) float32 input and (K, 5) float32 truths; `labels` are class, cx, cy, w, h relative to the image."""
    height, width = preprocessing.crop
    if augmentation is None:
        prepared = prepare_image(path, preprocessing)
        g = prepared.geometry
        x1, y1, x2, y2 = _corners(labels, g.width, g.height)
        boxes = np.stack(
            [
                (x1 * g.gain_x + g.pad_x) / width,
                (y1 * g.gain_y + g.pad_y) / height,
                (x2 * g.gain_x + g.pad_x) / width,
                (y2 * g.gain_y + g.pad_y) / height,
            ],
            1,
        )
        return prepared.array, _truths(labels[:max_boxes, 0], boxes[:max_boxes], width, height)
    pixels = _decode(path, preprocessing)
    image, boxes, labels = _augment(pixels, labels, preprocessing, augmentation, rng)
    order = rng.permutation(len(labels))[:max_boxes]
    truths = _truths(labels[order, 0], boxes[order], width, height)
    mean = torch.tensor(preprocessing.mean).view(-1, 1, 1)
    std = torch.tensor(preprocessing.std).view(-1, 1, 1)
    return ((image - mean) / std).numpy().astype(np.float32), truths


def _corners(labels: np.ndarray, width: float, height: float):
    cx, cy, w, h = (labels[:, k] for k in range(1, 5))
    return (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height


def _truths(classes: np.ndarray, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Darknet's correct_boxes + fill_truth_detection on x1, y1, x2, y2 boxes relative to the input."""
    boxes = boxes.clip(0, 1)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (w >= 1 / width) & (h >= 1 / height) & (cx > 0) & (cy > 0)
    return np.stack([classes, cx, cy, w, h], 1)[keep].astype(np.float32).reshape(-1, 5)


def _decode(path: Path, preprocessing: Preprocessing) -> torch.Tensor:
    """The image as a float (C, H, W) tensor on the model's 0..1 scale."""
    from PIL import Image

    mode = "L" if preprocessing.channel_order == "L" else "RGB"
    try:
        with Image.open(path) as image:
            array = np.atleast_3d(np.asarray(image.convert(mode)))
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(
            f"cannot read image {path}: PIL cannot decode it ({type(exc).__name__})", fix="remove or replace the file"
        ) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) * preprocessing.scale


def _augment(pixels: torch.Tensor, labels: np.ndarray, preprocessing: Preprocessing, aug: Augmentation,
             rng: np.random.Generator):  # fmt: skip
    channels, oh, ow = pixels.shape
    height, width = preprocessing.crop
    dw, dh = int(ow * aug.jitter), int(oh * aug.jitter)
    pleft, pright = (int(rng.integers(-dw, dw + 1)) for _ in range(2))
    ptop, pbot = (int(rng.integers(-dh, dh + 1)) for _ in range(2))
    if preprocessing.letterbox:  # grow the crop to the input's aspect ratio (AlexeyAB's letter_box training)
        ratio = (ow / oh) / (width / height)
        if ratio > 1:
            extra = round((ow / (width / height) - oh) / 2)
            ptop, pbot = ptop - extra, pbot - extra
        else:
            extra = round((oh * (width / height) - ow) / 2)
            pleft, pright = pleft - extra, pright - extra
    crop_w, crop_h = ow - pleft - pright, oh - ptop - pbot
    flip = aug.flip and bool(rng.integers(0, 2))
    hue = float(rng.uniform(-aug.hue, aug.hue))
    saturation, exposure = _rand_scale(rng, aug.saturation), _rand_scale(rng, aug.exposure)

    canvas = pixels.mean((1, 2)).view(-1, 1, 1).expand(channels, crop_h, crop_w).clone()
    x0, x1 = max(0, pleft), min(ow, pleft + crop_w)
    y0, y1 = max(0, ptop), min(oh, ptop + crop_h)
    if x1 > x0 and y1 > y0:
        canvas[:, y0 - ptop : y1 - ptop, x0 - pleft : x1 - pleft] = pixels[:, y0:y1, x0:x1]
    image = _resize(canvas, height, width, preprocessing)
    if channels == 3 and (hue or saturation != 1 or exposure != 1):
        image = _distort(image, hue, saturation, exposure)
    elif exposure != 1:
        image = (image * exposure).clamp(0, 1)
    x1b, y1b, x2b, y2b = _corners(labels, ow, oh)
    boxes = np.stack([(x1b - pleft) / crop_w, (y1b - ptop) / crop_h, (x2b - pleft) / crop_w, (y2b - ptop) / crop_h], 1)
    if flip:
        image = image.flip(-1)
        boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
    return image, boxes, labels


def _rand_scale(rng: np.random.Generator, s: float) -> float:
    """Darknet's rand_scale: a factor in [1, s], inverted half of the time."""
    scale = float(rng.uniform(min(1.0, s), max(1.0, s)))
    return scale if rng.integers(0, 2) else 1 / scale


def _resize(image: torch.Tensor, height: int, width: int, preprocessing: Preprocessing) -> torch.Tensor:
    if preprocessing.interpolation == "bilinear-align-corners":
        return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=True)[0]
    mode = preprocessing.interpolation
    corners = None if mode == "nearest" else False
    return F.interpolate(
        image[None],
        size=(height, width),
        mode=mode,
        align_corners=corners,
        antialias=preprocessing.antialias and mode != "nearest",
    )[0]


def _distort(rgb: torch.Tensor, hue: float, saturation: float, exposure: float) -> torch.Tensor:
    """Shift hue by `hue` turns and scale saturation and value, clipped to 0..1, in HSV."""
    rgb = rgb.clamp(0, 1)
    r, g, b = rgb
    value, _ = rgb.max(0)
    delta = value - rgb.min(0).values
    safe = delta.clamp(min=1e-12)
    h = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6 + hue) % 1, torch.full_like(h, hue % 1))
    sat = (torch.where(value > 0, delta / value.clamp(min=1e-12), torch.zeros_like(value)) * saturation).clamp(0, 1)
    value = (value * exposure).clamp(0, 1)
    # HSV → RGB: channel n of (5, 3, 1) is V − V·S·clip(min(k, 4 − k), 0, 1) with k = (n + 6·H) mod 6
    k = (torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1) + h * 6) % 6
    return value - value * sat * torch.minimum(k, 4 - k).clamp(0, 1)
