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
    def scan(cls, root: str | Path, class_names: Sequence[str] | None = None, num_outputs: int | None = None) -> ImageFolder:
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

    def batches(self, preprocessing: Preprocessing, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start : start + batch_size]
            images = np.stack([load_image(path, preprocessing) for path, _ in chunk])
            yield images, np.array([label for _, label in chunk], dtype=np.int64)


def load_image(path: Path, preprocessing: Preprocessing) -> np.ndarray:
    """One image as float32 (C, H, W) (or (H, W, C) for NHWC), through torchvision's functional transforms."""
    import torch
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as image:
            image = image.convert(preprocessing.channel_order if preprocessing.channel_order in ("RGB", "L") else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}", fix="remove or replace the file") from None
    mode = InterpolationMode(preprocessing.interpolation)
    height, width = preprocessing.crop
    if preprocessing.resize is not None:
        image = TF.resize(image, preprocessing.resize, interpolation=mode, antialias=True)
    elif image.size != (width, height):
        image = TF.resize(image, [height, width], interpolation=mode, antialias=True)
    image = TF.center_crop(image, [height, width])
    tensor = TF.pil_to_tensor(image).to(torch.float32) * preprocessing.scale
    if preprocessing.channel_order == "BGR":
        tensor = tensor.flip(0)
    tensor = TF.normalize(tensor, list(preprocessing.mean), list(preprocessing.std))
    array = tensor.numpy()
    return array.transpose(1, 2, 0).copy() if preprocessing.layout == "NHWC" else array
