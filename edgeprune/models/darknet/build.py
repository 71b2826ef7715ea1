"""A torch module from parsed cfg sections: `model.blocks[i]` is Darknet's layer i (the i-th section after [net]).

Shapes are followed through the network while building, so a wrong cfg fails here, naming its line, rather
than inside a forward pass. Each layer is first built on the meta device (sizes, no memory) and refused, naming
its line, when its parameters and its output cannot fit in the memory this machine has available; only then is
it allocated, so an absurd filters= or width= is one line instead of an allocator failure or the OOM killer.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.cfg import Section

Shape = tuple[int, int, int]  # (channels, height, width) of one layer's output
FLOAT_BYTES = 4  # parameters and activations are float32


@dataclass(frozen=True)
class MemoryLimit:
    """The memory a model built here may take, and where that figure comes from."""

    bytes: int
    source: str

    @classmethod
    def of_this_machine(cls) -> MemoryLimit | None:
        """The kernel's estimate of memory available without swapping, or the cgroup's remaining room when that
        is smaller (a container sees the host's MemAvailable); None where neither can be read."""
        limits = []
        try:
            meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
            limits.append(cls(int(meminfo["MemAvailable"].split()[0]) * 1024, "MemAvailable in /proc/meminfo"))
        except (OSError, KeyError, ValueError):
            try:
                limits.append(cls(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical pages"))
            except (OSError, ValueError, AttributeError):
                pass
        for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2, then v1
                                       ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # fmt: skip
            try:
                room = int((_CGROUP / limit_file).read_text()) - int((_CGROUP / usage_file).read_text())
            except (OSError, ValueError):  # absent, or "max" (no limit)
                continue
            limits.append(cls(max(room, 0), f"the cgroup's room ({_CGROUP / limit_file} minus usage)"))
            break
        return min(limits, key=lambda limit: limit.bytes, default=None)


_CGROUP = Path("/sys/fs/cgroup")


class DarknetModel(nn.Module):
    """The network of a cfg. Detection cfgs return (N, boxes, 5 + C) from all [yolo] layers in cfg order,
    classification cfgs the last layer's output flattened to (N, features) (after [softmax]: probabilities)."""

    def __init__(self, sections: list[Section], memory: MemoryLimit | None = None):
        """`memory`: what the layers may take (default: what this machine has available now)."""
        super().__init__()
        self.sections = list(sections)
        net = sections[0]
        self.input_shape: Shape = (_positive(net, "channels"), _positive(net, "height"), _positive(net, "width"))
        memory = memory or MemoryLimit.of_this_machine()
        if memory:
            _require_memory(net, None, 0, ("input", self.input_shape), memory)
        blocks: list[L.Block] = []
        shapes: list[Shape] = []
        parameters = 0  # of the layers built so far
        for index, section in enumerate(sections[1:]):
            build = _BUILDERS[section.kind]
            if memory and section.kind in _ALLOCATING:
                with torch.device("meta"):  # sizes only: the parameters are allocated once they are known to fit
                    planned, shape = build(section, index, shapes, self.input_shape)
                _require_memory(section, index, parameters + _values(planned), planned.largest_tensor(shape), memory)
            block, shape = build(section, index, shapes, self.input_shape)
            parameters += _values(block)
            if memory:  # before any forward makes its activations
                _require_memory(section, index, parameters, block.largest_tensor(shape), memory)
            blocks.append(block)
            shapes.append(shape)
        self.blocks = nn.ModuleList(blocks)
        self.output_shapes = shapes  # (C, H, W) per layer as built from the cfg
        self._check_yolo_outputs_unused()
        # outputs a later layer reads beyond its direct predecessor, kept during forward
        self._saved = frozenset(j for b in blocks for j in b.inputs if j >= 0 and j != b.index - 1)
        self.weights_header = None  # set by read_weights; write_weights writes it back

    @property
    def yolo_layers(self) -> list[L.Yolo]:
        return [b for b in self.blocks if isinstance(b, L.Yolo)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved: dict[int, torch.Tensor] = {}
        heads = []
        for block in self.blocks:
            x = block(*(x if j == block.index - 1 else saved[j] for j in block.inputs))
            if block.index in self._saved:
                saved[block.index] = x
            if isinstance(block, L.Yolo):
                heads.append(x)
        return torch.cat(heads, 1) if heads else x.flatten(1)

    def cfg_sections(self) -> list[Section]:
        """The sections with filters, groups and outputs as the modules have them now (e.g. after pruning)."""
        sections = copy.deepcopy(self.sections)
        for block, section in zip(self.blocks, sections[1:]):
            if isinstance(block, L.Convolutional):
                section.options["filters"] = str(block.conv.out_channels)
                if block.conv.groups != section.integer("groups", 1):
                    section.options["groups"] = str(block.conv.groups)
            elif isinstance(block, L.Connected):
                section.options["output"] = str(block.linear.out_features)
        return sections

    def _check_yolo_outputs_unused(self) -> None:
        yolo = {b.index for b in self.yolo_layers}
        for block, section in zip(self.blocks, self.sections[1:]):
            read = sorted(yolo.intersection(block.inputs))
            if read:
                raise section.error(
                    f"(layer {block.index}) reads the output of [yolo] layer {read[0]}, which edgeprune turns "
                    "into decoded boxes",
                    expected="layers after a [yolo] to read earlier layers (e.g. [route] layers=-4)",
                )


# Layers whose construction allocates memory that grows with their options (other layers' buffers are no larger
# than their input, already checked). Only these are built on the meta device first: composite ops on meta
# (torch.stack in [yolo]) import torch._dynamo, which costs seconds.
_ALLOCATING = frozenset({"convolutional", "connected"})


def _values(block: nn.Module) -> int:
    """float32 values a block holds: its parameters and buffers."""
    return sum(t.numel() for t in (*block.parameters(), *block.buffers()))


def _require_memory(section: Section, index: int | None, parameters: int, tensor: tuple[str, Shape],
                    memory: MemoryLimit) -> None:  # fmt: skip
    """Refuse a layer (index None: the input) when the parameters up to it and its largest tensor at batch 1 cannot
    fit in `memory` (a lower bound of what building and running it takes), naming the line of its largest size
    option."""
    what, (c, h, w) = tensor
    need = (parameters + c * h * w) * FLOAT_BYTES
    if need <= memory.bytes:
        return
    sizes = ("width", "height", "channels") if index is None else ("filters", "size", "output", "stride")
    given = [key for key in sizes if key in section.options]
    key = max(given, key=lambda k: section.integer(k)) if given else None
    parts = ([f"{parameters:,} parameters up to it"] if parameters else []) + [f"a {c}x{h}x{w} {what}"]
    raise section.error(
        f"{'input' if index is None else f'(layer {index})'} needs {_gib(need)} at batch 1 in float32 "
        f"({' and '.join(parts)}), more than the {_gib(memory.bytes)} this machine has available ({memory.source})",
        key,
        fix="use smaller filters=/size=/output= or [net] width=/height=, or a machine with more memory",
    )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def _positive(section: Section, key: str, default: int | None = None) -> int:
    value = section.integer(key, default)
    if value <= 0:
        raise section.error(f"{key}={value} must be positive", key)
    return value


def _choice(section: Section, key: str, default: str, choices) -> str:
    value = section.text(key, default)
    if value not in choices:
        raise section.error(f"{key}={value} is not supported", key, expected=", ".join(sorted(choices)))
    return value


def _source(section: Section, key: str, index: int, raw: int) -> int:
    """A layer reference as Darknet resolves it: negative counts back from this layer."""
    layer = index + raw if raw < 0 else raw
    if not 0 <= layer < index:
        raise section.error(
            f"(layer {index}) {key}={section.text(key)} refers to layer {layer}",
            key,
            expected=f"earlier layers only, 0..{index - 1} or -1..-{index}",
        )
    return layer


def _input(index: int, shapes: list[Shape], net: Shape) -> Shape:
    return shapes[index - 1] if index else net


def _convolutional(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    filters = _positive(section, "filters", 1)
    size = _positive(section, "size", 1)
    stride = _positive(section, "stride", 1)
    groups = _positive(section, "groups", 1)
    padding = size // 2 if section.integer("pad", 0) else section.integer("padding", 0)
    if padding < 0:
        raise section.error(f"padding={padding} is negative", "padding")
    if c % groups or filters % groups:
        raise section.error(
            f"(layer {index}) groups={groups} does not divide its {c} input channels and filters={filters}", "groups"
        )
    out_h, out_w = ((n + 2 * padding - size) // stride + 1 for n in (h, w))
    if out_h <= 0 or out_w <= 0:
        raise section.error(f"(layer {index}) size={size} does not fit its {h}x{w} input", "size")
    block = L.Convolutional(
        index, c, filters, size, stride, padding, groups, bool(section.integer("batch_normalize", 0)),
        _choice(section, "activation", "logistic", L.ACTIVATIONS),
    )  # fmt: skip
    return block, (filters, out_h, out_w)


def _connected(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    output = _positive(section, "output", 1)
    block = L.Connected(
        index, c * h * w, output, bool(section.integer("batch_normalize", 0)),
        _choice(section, "activation", "logistic", L.ACTIVATIONS),
    )  # fmt: skip
    return block, (output, 1, 1)


def _maxpool(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    stride = _positive(section, "stride", 1)
    size = _positive(section, "size", stride)
    padding = section.integer("padding", size - 1)
    out_h, out_w = ((n + padding - size) // stride + 1 for n in (h, w))
    if padding < 0 or out_h <= 0 or out_w <= 0:
        raise section.error(f"(layer {index}) size={size} padding={padding} does not fit its {h}x{w} input")
    return L.MaxPool(index, size, stride, padding, (h, w)), (c, out_h, out_w)


def _avgpool(section: Section, index: int, shapes: list[Shape], net: Shape):
    return L.AvgPool(index), (_input(index, shapes, net)[0], 1, 1)


def _softmax(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    groups = _positive(section, "groups", 1)
    if (c * h * w) % groups:
        raise section.error(f"(layer {index}) groups={groups} does not divide its {c * h * w} inputs", "groups")
    temperature = section.number("temperature", 1.0)
    if not temperature > 0:
        raise section.error(f"temperature={temperature:g} must be positive", "temperature")
    return L.Softmax(index, groups, temperature), (c * h * w, 1, 1)


def _dropout(section: Section, index: int, shapes: list[Shape], net: Shape):
    probability = section.number("probability", 0.2)
    if not 0 <= probability < 1:
        raise section.error(
            f"probability={probability:g} is not a probability of dropping",
            "probability",
            expected="0 <= probability < 1",
        )
    return L.Dropout(index, probability), _input(index, shapes, net)


def _route(section: Section, index: int, shapes: list[Shape], net: Shape):
    sources = tuple(_source(section, "layers", index, raw) for raw in section.integers("layers"))
    if not sources:
        raise section.error("needs layers=", "layers")
    groups = _positive(section, "groups", 1)
    group_id = section.integer("group_id", 0)
    if not 0 <= group_id < groups:
        raise section.error(f"group_id={group_id} is not one of the {groups} groups", "group_id")
    _, h, w = shapes[sources[0]]
    channels = 0
    for layer in sources:
        c, lh, lw = shapes[layer]
        if (lh, lw) != (h, w):
            raise section.error(f"(layer {index}) joins layers of different sizes ({h}x{w} and {lh}x{lw})", "layers")
        if c % groups:
            raise section.error(f"(layer {index}) groups={groups} does not divide layer {layer}'s {c} channels")
        channels += c // groups
    return L.Route(index, sources, groups, group_id), (channels, h, w)


def _shortcut(section: Section, index: int, shapes: list[Shape], net: Shape):
    shape = _input(index, shapes, net)
    if index == 0:
        raise section.error("cannot be the first layer: it adds to the previous one")
    sources = tuple(_source(section, "from", index, raw) for raw in section.integers("from"))
    if not sources:
        raise section.error("needs from=", "from")
    for layer in sources:
        if shapes[layer] != shape:
            raise section.error(
                f"(layer {index}) adds layer {layer} of shape {shapes[layer]} to the previous layer's {shape}; "
                "edgeprune supports equal shapes only",
                "from",
            )
    return L.Shortcut(index, sources, _choice(section, "activation", "linear", L.ACTIVATIONS)), shape


def _upsample(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    stride = section.integer("stride", 2)
    if stride <= 0:
        raise section.error(f"stride={stride}: downsampling upsample layers are not supported", "stride")
    return L.Upsample(index, stride, section.number("scale", 1.0)), (c, h * stride, w * stride)


def _yolo(section: Section, index: int, shapes: list[Shape], net: Shape):
    c, h, w = _input(index, shapes, net)
    if section.integer("new_coords", 0):
        raise section.error(
            "new_coords=1 (scaled-YOLOv4 box coding) is not supported yet", "new_coords",
            fix="use a cfg without new_coords, or wait for edgeprune to decode it",
        )  # fmt: skip
    classes = _positive(section, "classes", 20)
    num = _positive(section, "num", 1)
    anchors = section.numbers("anchors")
    if len(anchors) != 2 * num:
        raise section.error(f"has {len(anchors)} anchor numbers for num={num}", "anchors", expected=f"{2 * num}")
    mask = section.integers("mask") if "mask" in section.options else list(range(num))
    for m in mask:
        if not 0 <= m < num:
            raise section.error(f"mask index {m} is not one of the num={num} anchors", "mask")
    if c != len(mask) * (5 + classes):
        raise section.error(
            f"(layer {index}) reads {c} channels, but {len(mask)} anchors x (5 + classes={classes}) need "
            f"{len(mask) * (5 + classes)}",
            fix="set filters= of the layer before it to len(mask) * (classes + 5)",
        )
    chosen = [(anchors[2 * m], anchors[2 * m + 1]) for m in mask]
    block = L.Yolo(index, chosen, classes, section.number("scale_x_y", 1.0), (h, w), net[1:])
    return block, (c, h, w)


def _net(section: Section, index: int, shapes: list[Shape], net: Shape):
    raise section.error(f"(layer {index}) appears again; only the first section may be [net]")


_BUILDERS: dict[str, Callable] = {
    "net": _net,
    "convolutional": _convolutional,
    "connected": _connected,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "softmax": _softmax,
    "dropout": _dropout,
    "route": _route,
    "shortcut": _shortcut,
    "upsample": _upsample,
    "yolo": _yolo,
}
