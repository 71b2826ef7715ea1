"""Classification data in ImageFolder layout (DIR/<class>/<image>), preprocessed exactly as the model declares."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprune.errors import DataError
from edgeprune.types import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @classmethod
    def scan(
        cls, root: str | Path, class_names: Sequence[str] | None = None, num_outputs: int | None = None
    ) -> ImageFolder:
        """Find the images; labels follow the model's class names when the folders are named after them,
        else sorted folder order (torchvision's ImageFolder convention)."""
        root = Path(root)
        if not root.exists():
            raise DataError(f"data directory not found: {root}")
        if not root.is_dir():
            raise DataError(f"--data {root} is a file", expected="an ImageFolder directory DIR/<class>/<image>")
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = {f.name: sorted(p for p in f.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) for f in folders}
        per_class = {name: images for name, images in per_class.items() if images}
        if not per_class:
            loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            layout = f"{len(loose)} images directly in it and no class folders" if loose else "no images"
            raise DataError(
                f"data directory {root} has {layout}",
                expected="ImageFolder layout DIR/<class>/<image> (jpg, png, ...)",
                fix="put each class's images in a subfolder named after the class",
            )
        names = list(per_class)
        if class_names and set(names) <= set(class_names):
            index = {name: class_names.index(name) for name in names}
        elif num_outputs is not None and len(names) > num_outputs:
            raise DataError(
                f"data directory {root} has {len(names)} classes but the model has {num_outputs} outputs",
                fix="point --data at a dataset with the model's classes",
            )
        else:
            index = {name: i for i, name in enumerate(names)}
        samples = tuple((path, index[name]) for name, images in per_class.items() for path in images)
        return cls(root=root, classes=tuple(names), samples=samples)

    def subset(self, limit: int | None) -> ImageFolder:
        """`limit` samples spread evenly over the sorted list (so every class is represented), or all."""
        if limit is None or limit >= len(self.samples):
            return self
        picks = np.linspace(0, len(self.samples) - 1, limit).round().astype(int)
        return ImageFolder(self.root, self.classes, tuple(self.samples[i] for i in picks))

    def split(self, first_per_class: int) -> tuple[ImageFolder, ImageFolder]:
        """The first `first_per_class` images of each class (sorted by name), and the rest."""
        seen: dict[int, int] = {}
        head, tail = [], []
        for path, label in self.samples:
            seen[label] = seen.get(label, 0) + 1
            (head if seen[label] <= first_per_class else tail).append((path, label))
        return ImageFolder(self.root, self.classes, tuple(head)), ImageFolder(self.root, self.classes, tuple(tail))

    def batches(self, preprocessing: Preprocessing, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            images = np.stack([load_image(path, preprocessing) for path, _ in chunk])
            yield images, np.array([label for _, label in chunk], dtype=np.int64)


@dataclass(frozen=True)
class Geometry:
    """Where the original image sits in the model input: input = original × gain + pad (per axis)."""

    height: int
    width: int
    gain_x: float
    gain_y: float
    pad_x: float
    pad_y: float

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes in model-input pixels → original-image pixels, clipped to the image."""
        out = boxes_xyxy.astype(np.float64).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.gain_x).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.gain_y).clip(0, self.height)
        return out


@dataclass(frozen=True)
class PreparedImage:
    array: np.ndarray
    geometry: Geometry


def load_image(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    """One image as the model's float32 input (C, H, W), or (H, W, C) for NHWC."""
    return prepare_image(path, preprocessing).array


def prepare_image(path: Path, preprocessing: Preprocessing) -> PreparedImage:
    """Decode, resize (shorter side + centre crop, straight, or letterbox), scale, normalise, lay out."""
    import torch
    from torchvision.transforms import functional as TF

    image = _open(path, "L" if preprocessing.channel_order == "L" else "RGB")
    tensor, geometry = (_resize_and_crop if preprocessing.resize is not None else _fit)(image, preprocessing)
    if preprocessing.channel_order == "BGR":
        tensor = tensor.flip(0)
    tensor = TF.normalize(tensor.to(torch.float32), list(preprocessing.mean), list(preprocessing.std))
    array = tensor.numpy()
    return PreparedImage(array.transpose(1, 2, 0).copy() if preprocessing.layout == "NHWC" else array, geometry)


def _open(path: Path, mode: str):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    # PIL raises many types for bad files, and once ultralytics is imported its patched Image.open raises
    # ModuleNotFoundError (pi_heif) for them instead
    except Exception as exc:
        raise DataError(
            f"cannot read image {path}: PIL cannot decode it ({type(exc).__name__})", fix="remove or replace the file"
        ) from None


def _resize_and_crop(image, preprocessing: Preprocessing):
    """Classification eval transform: shorter side to `resize`, centre crop (torchvision's PIL path)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    height, width = preprocessing.crop
    resized = TF.resize(
        image,
        preprocessing.resize,
        interpolation=InterpolationMode(preprocessing.interpolation),
        antialias=preprocessing.antialias,
    )
    cropped = TF.center_crop(resized, [height, width])
    gain_x, gain_y = resized.size[0] / image.size[0], resized.size[1] / image.size[1]
    geometry = Geometry(
        image.size[1], image.size[0], gain_x, gain_y, (width - resized.size[0]) / 2, (height - resized.size[1]) / 2
    )
    return TF.pil_to_tensor(cropped).to(torch.float32) * preprocessing.scale, geometry


def _fit(image, preprocessing: Preprocessing):
    """Straight resize to the input size, or letterbox (aspect kept, centred, padded) as ultralytics does."""
    import torch

    height, width = preprocessing.crop
    orig_w, orig_h = image.size
    if preprocessing.letterbox:
        gain = min(height / orig_h, width / orig_w)
        new_w, new_h = round(orig_w * gain), round(orig_h * gain)
        left, top = round((width - new_w) / 2 - 0.1), round((height - new_h) / 2 - 0.1)
    else:
        new_w, new_h, left, top = width, height, 0, 0
    pixels = torch.from_numpy(np.atleast_3d(np.asarray(image)).copy()).permute(2, 0, 1)
    if (new_w, new_h) != (orig_w, orig_h):
        pixels = _resize(pixels, new_h, new_w, preprocessing)
    else:
        pixels = pixels.to(torch.float32) * preprocessing.scale
    canvas = torch.full((pixels.shape[0], height, width), preprocessing.pad_value, dtype=torch.float32)
    canvas[:, top : top + new_h, left : left + new_w] = pixels
    return canvas, Geometry(orig_h, orig_w, new_w / orig_w, new_h / orig_h, left, top)


def _resize(pixels, height: int, width: int, preprocessing: Preprocessing):
    """uint8 (C, H, W) → float (C, height, width) on the 0..1 scale, with the family's own resize."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if preprocessing.interpolation == "bilinear-align-corners":
        # Darknet's resize_image: converts to float first, then bilinear sampling at c·(W−1)/(w−1)
        scaled = pixels.to(torch.float32)[None] * preprocessing.scale
        return F.interpolate(scaled, size=(height, width), mode="bilinear", align_corners=True)[0]
    if preprocessing.antialias:
        mode = InterpolationMode(preprocessing.interpolation)
        return (
            TF.resize(pixels, [height, width], interpolation=mode, antialias=True).to(torch.float32)
            * preprocessing.scale
        )
    import cv2

    # OpenCV's resize is what ultralytics' letterbox (and OpenCV DNN users) run
    flags = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}
    resized = cv2.resize(
        pixels.permute(1, 2, 0).numpy(), (width, height), interpolation=flags[preprocessing.interpolation]
    )
    return torch.from_numpy(np.atleast_3d(resized)).permute(2, 0, 1).to(torch.float32) * preprocessing.scale
