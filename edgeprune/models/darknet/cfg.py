"""Darknet .cfg files: parse into sections (strictly: unknown sections and options are errors) and write back.

A section keeps its options as the strings Darknet reads, so a cfg written back parses to the same data; the
typed getters name the file and line of a bad value. Whitespace is removed everywhere in a line, as Darknet's
`strip` does ("mask = 3, 4" reads "mask=3,4"); a line whose first character is # or ; is a comment, and so is
the rest of a line after # (Darknet would read it into the value, which is never what the author meant).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edgeprune.errors import ModelError
from edgeprune.fileio import write_text

# Section names as Darknet spells them (src/parser.c string_to_layer_type, case-sensitive) -> the kind built.
KINDS = {
    "net": "net", "network": "net",
    "convolutional": "convolutional", "conv": "convolutional",
    "connected": "connected", "conn": "connected",
    "maxpool": "maxpool", "max": "maxpool",
    "avgpool": "avgpool", "avg": "avgpool",
    "softmax": "softmax", "soft": "softmax",
    "dropout": "dropout",
    "route": "route",
    "shortcut": "shortcut",
    "upsample": "upsample",
    "yolo": "yolo",
}  # fmt: skip
# Darknet layers edgeprune does not build yet: named as such rather than as unknown.
UNSUPPORTED = (
    "Gaussian_yolo", "activation", "batchnorm", "conv_lstm", "cost", "crnn", "crop", "deconv", "deconvolutional",
    "detection", "empty", "gru", "iseg", "l2norm", "local", "local_avg", "local_avgpool", "logistic", "lrn", "lstm",
    "normalization", "region", "reorg", "reorg3d", "rnn", "sam", "scale_channels",
)  # fmt: skip

# Options Darknet reads for every layer; they steer training only.
_TRAINING = {"stopbackward", "dont_update", "burnin_update", "learning_rate", "onlyforward"}
OPTIONS: dict[str, frozenset[str]] = {
    # [net]: the input size plus training and augmentation settings, kept so the cfg can be written back
    "net": frozenset({
        "width", "height", "channels", "letter_box", "batch", "subdivisions", "momentum", "decay", "angle",
        "saturation", "exposure", "hue", "aspect", "learning_rate", "learning_rate_min", "burn_in", "max_batches",
        "policy", "steps", "scales", "seq_scales", "step", "scale", "gamma", "power", "max_crop", "min_crop",
        "center", "flip", "blur", "mixup", "cutmix", "mosaic", "mosaic_bound", "gaussian_noise",
        "label_smooth_eps", "resize_step", "time_steps", "track", "augment_speed", "sequential_subdivisions",
        "try_fix_nan", "loss_scale", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "adam",
        "B1", "B2", "eps", "sgdr_cycle", "sgdr_mult", "ema_alpha", "adversarial_lr", "max_chart_loss",
    }),
    "convolutional": frozenset(
        {"filters", "size", "stride", "pad", "padding", "groups", "batch_normalize", "activation"} | _TRAINING
    ),
    "connected": frozenset({"output", "activation", "batch_normalize"} | _TRAINING),
    "maxpool": frozenset({"size", "stride", "padding"} | _TRAINING),
    "avgpool": frozenset(_TRAINING),
    "softmax": frozenset({"groups", "temperature"} | _TRAINING),
    "dropout": frozenset({"probability"} | _TRAINING),
    "route": frozenset({"layers", "groups", "group_id"} | _TRAINING),
    "shortcut": frozenset({"from", "activation"} | _TRAINING),
    "upsample": frozenset({"stride", "scale"} | _TRAINING),
    "yolo": frozenset({
        "mask", "anchors", "classes", "num", "scale_x_y", "new_coords",
        # loss, assignment and NMS settings: training and post-processing only
        "jitter", "ignore_thresh", "truth_thresh", "iou_thresh", "random", "resize", "max", "max_delta",
        "iou_normalizer", "iou_loss", "cls_normalizer", "obj_normalizer", "nms_kind", "beta_nms",
        "label_smooth_eps", "focal_loss", "counters_per_class",
    } | _TRAINING),
}  # fmt: skip


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class Section:
    """One [name] block: the header as written and its options as strings, in file order.

    Equality compares name and options only, so a section read back from a written cfg equals the original.
    """

    name: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = field(default=0, compare=False)
    option_lines: dict[str, int] = field(default_factory=dict, compare=False)
    path: str = field(default="<cfg>", compare=False)

    @property
    def kind(self) -> str:
        return KINDS[self.name]

    def where(self, key: str | None = None) -> str:
        line = self.option_lines.get(key, self.line) if key else self.line
        return f"{self.path} line {line}" if line else self.path

    def error(self, what: str, key: str | None = None, **hints: str) -> ModelError:
        return ModelError(f"{self.where(key)}: [{self.name}] {what}", **hints)

    def text(self, key: str, default: str | None = None) -> str:
        if key in self.options:
            return self.options[key]
        if default is None:
            raise self.error(f"needs {key}=", fix=f"add a {key}= line to the section")
        return default

    def integer(self, key: str, default: int | None = None) -> int:
        if key not in self.options and default is not None:
            return default
        return self._number(key, self.text(key), int, "an integer")

    def number(self, key: str, default: float | None = None) -> float:
        if key not in self.options and default is not None:
            return default
        return self._number(key, self.text(key), float, "a number")

    def integers(self, key: str) -> list[int]:
        return [self._number(key, item, int, "integers") for item in self._items(key)]

    def numbers(self, key: str) -> list[float]:
        return [self._number(key, item, float, "numbers") for item in self._items(key)]

    def _items(self, key: str) -> list[str]:
        items = self.text(key).split(",")
        if items and items[-1] == "":  # a trailing comma, which Darknet's readers skip as well
            items.pop()
        return items

    def _number(self, key: str, raw: str, kind: type, expected: str):
        try:
            value = kind(raw)
        except ValueError:
            raise self.error(f"{key}={self.options.get(key, raw)} is not {expected}", key) from None
        if kind is int and not -(2**31) <= value < 2**31:
            raise self.error(f"{key}={raw} is outside the 32-bit integers Darknet reads", key)
        return value


def parse_cfg(path: str | Path) -> list[Section]:
    """All sections of a .cfg, [net] first, each option checked against what Darknet (and edgeprune) reads."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(f"cfg file not found: {path}", fix="check the path of the .cfg file") from None
    except UnicodeDecodeError:
        raise ModelError(f"{path} is not a text file", expected="a Darknet .cfg (text)") from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = "".join(raw.split("#", 1)[0].split())
        if not line or line[0] == ";":
            continue
        if line[0] == "[":
            sections.append(_header(line, path, number))
        elif not sections:
            raise ModelError(f"{path} line {number}: option {line!r} before the first [section]")
        else:
            _option(sections[-1], line, number)
    if not sections or sections[0].kind != "net":
        raise ModelError(f"{path} does not start with a [net] section", expected="[net] (or [network]) first")
    if len(sections) == 1:
        raise ModelError(f"{path} has a [net] section but no layers")
    return sections


def _header(line: str, path: Path, number: int) -> Section:
    name = line[1:-1] if line.endswith("]") else None
    if name in KINDS:
        return Section(name, line=number, path=str(path))
    if name in UNSUPPORTED:
        raise ModelError(
            f"{path} line {number}: Darknet layer [{name}] is not supported by edgeprune yet",
            expected="[" + "], [".join(sorted(set(KINDS.values()) - {"net"})) + "]",
        )
    raise ModelError(f"{path} line {number}: unknown section {line}{_hint(name or line, KINDS)}")


def _option(section: Section, line: str, number: int) -> None:
    key, sep, value = line.partition("=")
    where = f"{section.path} line {number}"
    if not sep or not key or not value:
        raise ModelError(f"{where}: {line!r} is not an option", expected="key=value")
    if key not in OPTIONS[section.kind]:
        raise ModelError(
            f"{where}: [{section.name}] has unknown or unsupported option {key!r}{_hint(key, OPTIONS[section.kind])}",
            fix="remove it, or check the spelling against Darknet's parser",
        )
    if key in section.options:
        raise ModelError(f"{where}: [{section.name}] sets {key} twice (first on line {section.option_lines[key]})")
    section.options[key] = value
    section.option_lines[key] = number


def write_cfg(sections: Iterable[Section], path: str | Path) -> Path:
    """A cfg that parses back to the same sections (whitespace inside values is dropped, as Darknet reads it)."""
    path = Path(path)
    blocks = []
    for section in sections:
        lines = [f"[{section.name}]"] + [f"{key}={''.join(value.split())}" for key, value in section.options.items()]
        blocks.append("\n".join(lines) + "\n")
    return write_text(path, "\n".join(blocks))
