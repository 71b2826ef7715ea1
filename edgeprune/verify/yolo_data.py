"""Detection data in YOLO format: a data yaml (path, val, names) and one label .txt per image.

Every field the code reads is type-checked, and label lines are checked as ultralytics' verify_image_label checks
them (class within names, coordinates within 0..1), except that a bad line is refused (naming file and line)
rather than dropping its image with a warning. An image without a label file is a background image, as in YOLO.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    unlabelled: int | None = None  # images without a label file (background images); None until checked()

    @classmethod
    def from_yaml(cls, path: str | Path, split: str = "val") -> YoloDataset:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"data yaml not found: {path}")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DataError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(spec, dict) or spec.get("names") is None or spec.get(split) is None:
            raise DataError(f"{path} lacks '{split}' or 'names'", expected="a YOLO data yaml (path, train, val, names)")
        names = _names(spec, path)
        entries = _split_entries(spec, split, path)
        declared_root = spec.get("path")
        if declared_root is not None and not isinstance(declared_root, str):
            raise DataError(
                f"{path}: 'path' is {declared_root!r} ({type(declared_root).__name__})",
                expected="the dataset's directory as a string",
                fix="quote it, e.g. path: 'datasets/coco'",
            )
        root = _dataset_root(path, declared_root)
        images = tuple(image for entry in entries for image in _list_images(root, entry, path))
        if not images:
            raise DataError(
                f"the '{split}' split of {path} has no images", fix=f"check '{split}:' and 'path:' in the yaml"
            )
        return cls(path, root, names, images)

    def subset(self, limit: int | None) -> YoloDataset:
        if limit is None or limit >= len(self.images):
            return self
        picks = np.linspace(0, len(self.images) - 1, limit).round().astype(int)
        return YoloDataset(self.yaml_path, self.root, self.names, tuple(self.images[i] for i in picks))

    def checked(self, classes: int) -> YoloDataset:
        """This dataset, for a model predicting `classes` classes, with every label file of its images read (a bad
        line names its file and line) and its background images counted. Refused when its images hold no box at
        all: both sides would score mAP 0 and a comparison of them would pass without comparing anything."""
        if len(self.names) != classes:
            raise DataError(
                f"{self.yaml_path} has {len(self.names)} classes and the model predicts {classes}",
                fix="use data labelled with the model's classes",
            )
        label_files = [label_path_for(image) for image in self.images]
        missing = sum(not p.is_file() for p in label_files)
        if missing == len(self.images):
            raise DataError(
                f"none of the {len(self.images)} images used from {self.yaml_path} has a label file "
                f"(e.g. {label_files[0]} does not exist)",
                fix="put one .txt per image (class cx cy w h, normalised) in labels/ beside images/, as YOLO does",
            )
        if not sum(len(self.labels(image)) for image in self.images):  # reads (and checks) every file
            raise DataError(
                f"the label files of the {len(self.images)} images used from {self.yaml_path} hold no box",
                fix="use images with labelled objects (or more of them: raise --limit)",
            )
        return replace(self, unlabelled=missing)

    def labels(self, image: Path) -> np.ndarray:
        """(M, 5): class, cx, cy, w, h normalised to 0..1. No label file means no objects (as ultralytics)."""
        label_path = label_path_for(image)
        if not label_path.is_file():
            return np.zeros((0, 5), dtype=np.float64)
        try:
            lines = label_path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                f"cannot read label file {label_path}: {getattr(exc, 'strerror', None) or 'not text'}",
                expected="a text file of lines: class cx cy w h (normalised)",
            ) from None
        rows = [
            _label_row(line, f"{label_path} line {number}", len(self.names))
            for number, line in enumerate(lines, 1)
            if line.strip()
        ]
        return np.array(rows, dtype=np.float64).reshape(-1, 5)


def _label_row(line: str, where: str, classes: int) -> list[float]:
    """class, cx, cy, w, h of one label line: a box, or a segment polygon's bounding box."""
    try:
        values = [float(v) for v in line.split()]
    except ValueError:
        raise DataError(f"{where} is not numbers: {line.strip()[:60]!r}") from None
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        raise DataError(
            f"{where} has {len(values)} values",
            expected="class cx cy w h (normalised), or class x1 y1 x2 y2 … for a segment",
        )
    if not 0 <= values[0] < classes or values[0] != int(values[0]):
        raise DataError(f"{where}: class {values[0]:g} is not one of the {classes} names")
    outside = [v for v in values[1:] if not 0 <= v <= 1]  # NaN fails this too
    if outside:
        raise DataError(
            f"{where}: coordinate {outside[0]:g} is outside 0..1",
            expected="coordinates normalised by the image's width and height",
            fix="divide pixel x by the image width and y by its height",
        )
    if len(values) == 5:
        return values
    xs, ys = values[1::2], values[2::2]
    return [values[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]


def label_path_for(image: Path) -> Path:
    """ultralytics' rule: the last /images/ in the path becomes /labels/, the suffix .txt."""
    parts = image.parts
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        return Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt")
    return image.with_suffix(".txt")


def _names(spec: dict, yaml_path: Path) -> tuple[str, ...]:
    """`names:` as a list, or as a {0: name, 1: name, …} mapping (ultralytics' check_class_names rules)."""
    names = spec["names"]
    expected = "a list of class names, or a mapping {0: name, 1: name, ...}"
    if isinstance(names, dict):
        keys = list(names)
        if any(type(k) is not int for k in keys) or sorted(keys) != list(range(len(keys))):
            raise DataError(
                f"{yaml_path}: 'names' has keys {keys[:6]}", expected=f"{expected} with integer keys 0..n-1"
            )
        names = [names[i] for i in range(len(keys))]
    elif not isinstance(names, list):
        raise DataError(f"{yaml_path}: 'names' is {names!r} ({type(names).__name__})", expected=expected)
    for i, name in enumerate(names):
        if isinstance(name, bool) or not isinstance(name, (str, int, float)):
            raise DataError(
                f"{yaml_path}: class {i} in 'names' is {name!r} ({type(name).__name__})",
                expected="a name",
                fix="quote it (YAML reads yes/no/on/off as booleans)",
            )
    if not names:
        raise DataError(f"{yaml_path}: 'names' is empty", expected=expected)
    nc = spec.get("nc")
    if nc is not None and (type(nc) is not int or nc != len(names)):
        raise DataError(f"{yaml_path}: nc is {nc!r} but 'names' has {len(names)} classes", fix="make them agree")
    return tuple(map(str, names))


def _split_entries(spec: dict, split: str, yaml_path: Path) -> list[str]:
    """The split's image directories or .txt lists: one string, or a list of them."""
    entries = spec[split] if isinstance(spec[split], list) else [spec[split]]
    wrong = [e for e in entries if not isinstance(e, str)]
    if wrong or not entries:
        raise DataError(
            f"{yaml_path}: '{split}' holds {wrong[0] if wrong else spec[split]!r}",
            expected="an image directory or .txt list relative to 'path', or a list of them",
            fix="quote it",
        )
    return entries


def _dataset_root(yaml_path: Path, declared: str | None) -> Path:
    """`path:` as written when absolute; when relative, beside the yaml, then beside the yaml's folder."""
    if not declared:
        return yaml_path.parent
    declared_path = Path(declared)
    candidates = (
        [declared_path]
        if declared_path.is_absolute()
        else [yaml_path.parent / declared_path, yaml_path.parent.parent / declared_path]
    )
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
