"""Detection data in YOLO format: a data yaml (path, val, names) and one label .txt per image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from edgeprune.errors import DataError
from edgeprune.verify.data import IMAGE_SUFFIXES


@dataclass(frozen=True)
class YoloDataset:
    yaml_path: Path
    root: Path
    names: tuple[str, ...]
    images: tuple[Path, ...]

    @classmethod
    def from_yaml(cls, path: str | Path, split: str = "val") -> YoloDataset:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"data yaml not found: {path}")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(spec, dict) or "names" not in spec or split not in spec:
            raise DataError(f"{path} lacks '{split}' or 'names'", expected="a YOLO data yaml (path, train, val, names)")
        root = _dataset_root(path, spec.get("path"))
        names = spec["names"]
        names = tuple(names[i] for i in sorted(names)) if isinstance(names, dict) else tuple(names)
        entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
        images = tuple(image for entry in entries for image in _list_images(root, str(entry), path))
        if not images:
            raise DataError(f"the '{split}' split of {path} has no images", fix=f"check '{split}:' and 'path:' in the yaml")
        return cls(path, root, names, images)

    def subset(self, limit: int | None) -> YoloDataset:
        if limit is None or limit >= len(self.images):
            return self
        picks = np.linspace(0, len(self.images) - 1, limit).round().astype(int)
        return YoloDataset(self.yaml_path, self.root, self.names, tuple(self.images[i] for i in picks))

    def labels(self, image: Path) -> np.ndarray:
        """(M, 5): class, cx, cy, w, h normalised to 0..1. No label file means no objects (as ultralytics)."""
        label_path = label_path_for(image)
        if not label_path.is_file():
            return np.zeros((0, 5), dtype=np.float64)
        rows = []
        for number, line in enumerate(label_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                values = [float(v) for v in line.split()]
            except ValueError:
                raise DataError(f"{label_path} line {number} is not numbers: {line.strip()[:60]!r}") from None
            if len(values) == 5:
                rows.append(values)
            elif len(values) >= 7 and len(values) % 2 == 1:  # segment polygon → its bounding box
                xs, ys = values[1::2], values[2::2]
                rows.append([values[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)])
            else:
                raise DataError(f"{label_path} line {number} has {len(values)} values",
                                expected="class cx cy w h (normalised), or class x1 y1 x2 y2 … for a segment")
            if not 0 <= rows[-1][0] < len(self.names) or rows[-1][0] != int(rows[-1][0]):
                raise DataError(f"{label_path} line {number}: class {rows[-1][0]:g} is not one of the {len(self.names)} names")
        return np.array(rows, dtype=np.float64).reshape(-1, 5)


def label_path_for(image: Path) -> Path:
    """ultralytics' rule: the last /images/ in the path becomes /labels/, the suffix .txt."""
    parts = image.parts
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
    return image.with_suffix(".txt")


def _dataset_root(yaml_path: Path, declared: str | None) -> Path:
    """`path:` as written when absolute; when relative, beside the yaml, then beside the yaml's folder."""
    if not declared:
        return yaml_path.parent
    declared_path = Path(declared)
    candidates = [declared_path] if declared_path.is_absolute() else [yaml_path.parent / declared_path,
                                                                      yaml_path.parent.parent / declared_path]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(
        f"dataset root '{declared}' of {yaml_path} not found (tried {', '.join(map(str, candidates))})",
        fix="set 'path:' in the yaml to the dataset's absolute directory",
    )


def _list_images(root: Path, entry: str, yaml_path: Path) -> list[Path]:
    location = root / entry
    if location.is_dir():
        return sorted(p for p in location.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if location.is_file() and location.suffix == ".txt":
        lines = [line.strip() for line in location.read_text().splitlines() if line.strip()]
        return [p if p.is_absolute() else (root / p).resolve() for p in map(Path, lines)]
    raise DataError(f"{yaml_path}: '{entry}' is neither an image directory nor a .txt list under {root}")
