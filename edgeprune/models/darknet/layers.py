"""The torch modules of a Darknet network, one per cfg layer, computing what Darknet computes at inference.

Every block knows its cfg layer `index` and the layers it reads (`inputs`, absolute indices, -1 the image), so
the model's forward and a pruning engine see the same wiring as Darknet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Darknet's activations that edgeprune builds (src/activations.c: leaky has slope 0.1, swish is x * sigmoid(x)).
ACTIVATIONS = {
    "leaky": lambda: nn.LeakyReLU(0.1),
    "linear": nn.Identity,
    "mish": nn.Mish,
    "swish": nn.SiLU,
    "logistic": nn.Sigmoid,
    "relu": nn.ReLU,
}


class Block(nn.Module):
    def __init__(self, index: int, inputs: tuple[int, ...] | None = None):
        super().__init__()
        self.index = index
        self.inputs = (index - 1,) if inputs is None else inputs

    def largest_tensor(self, output: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
        """The largest tensor a forward makes at batch 1, as (what, (C, H, W)): the output unless a layer
        makes a larger one on the way."""
        return "output", output


class Convolutional(Block):
    """conv → batch norm (whose beta is Darknet's bias) or conv bias → activation."""

    def __init__(self, index: int, in_channels: int, filters: int, size: int, stride: int, padding: int,
                 groups: int, batch_normalize: bool, activation: str):  # fmt: skip
        super().__init__(index)
        self.conv = nn.Conv2d(in_channels, filters, size, stride, padding, groups=groups, bias=not batch_normalize)
        # eps 1e-5 inside the square root, as AlexeyAB's Darknet folds batch norm for inference
        self.bn = nn.BatchNorm2d(filters) if batch_normalize else None
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class Connected(Block):
    """Fully connected on the flattened (C, H, W) input; the output is (N, output, 1, 1), as in Darknet."""

    def __init__(self, index: int, in_features: int, output: int, batch_normalize: bool, activation: str):
        super().__init__(index)
        self.linear = nn.Linear(in_features, output, bias=not batch_normalize)
        self.bn = nn.BatchNorm1d(output) if batch_normalize else None
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1))
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)[:, :, None, None]


class MaxPool(Block):
    """Darknet's max pool: `padding` (default size - 1) split as padding // 2 before and the rest after.

    Out-of-range cells are ignored (padded with -inf); the output is (in + padding - size) // stride + 1.
    """

    def __init__(self, index: int, size: int, stride: int, padding: int, in_hw: tuple[int, int]):
        super().__init__(index)
        before = padding // 2
        after = [max(0, ((n + padding - size) // stride) * stride + size - n - before) for n in in_hw]
        self.size, self.stride, self.padding = size, stride, padding
        if after[0] == after[1] == before and before <= size // 2:
            self.pad = None  # symmetric: the pool pads itself
            self.pool = nn.MaxPool2d(size, stride, padding=before)
        else:
            self.pad = (before, after[1], before, after[0])
            self.pool = nn.MaxPool2d(size, stride)
        self.padded_hw = (in_hw[0] + before + after[0], in_hw[1] + before + after[1])

    def largest_tensor(self, output: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
        padded = (output[0], *self.padded_hw)
        bigger = self.pad is not None and padded[1] * padded[2] > output[1] * output[2]
        return ("padded input", padded) if bigger else ("output", output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad, value=float("-inf"))
        return self.pool(x)


class AvgPool(Block):
    """Global average pool to (N, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1)


class Softmax(Block):
    """Softmax over the flattened input in `groups` equal parts; the output is (N, C·H·W, 1, 1)."""

    def __init__(self, index: int, groups: int, temperature: float):
        super().__init__(index)
        self.groups, self.temperature = groups, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).unflatten(1, (self.groups, -1))
        if self.temperature != 1:
            x = x / self.temperature
        return x.softmax(-1).flatten(1)[:, :, None, None]


class Dropout(Block):
    """Identity: Darknet drops only while training."""

    def __init__(self, index: int, probability: float):
        super().__init__(index)
        self.probability = probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Route(Block):
    """Concatenates `layers` along channels; with groups, each input contributes its group_id-th channel group."""

    def __init__(self, index: int, layers: tuple[int, ...], groups: int, group_id: int):
        super().__init__(index, layers)
        self.layers, self.groups, self.group_id = layers, groups, group_id

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.groups > 1:
            xs = tuple(x.chunk(self.groups, 1)[self.group_id] for x in xs)
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)


class Shortcut(Block):
    """The previous layer plus the `sources` layers, then the activation."""

    def __init__(self, index: int, sources: tuple[int, ...], activation: str):
        super().__init__(index, (index - 1, *sources))
        self.sources = sources
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, *others: torch.Tensor) -> torch.Tensor:
        for other in others:
            x = x + other
        return self.act(x)


class Upsample(Block):
    """Nearest-neighbour upsampling by `stride`, times `scale` (AlexeyAB's option, 1 by default)."""

    def __init__(self, index: int, stride: int, scale: float):
        super().__init__(index)
        self.stride, self.scale = stride, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x if self.scale == 1 else x * self.scale


class Yolo(Block):
    """Decodes one detection head as Darknet's yolo layer does at inference, into (N, A·H·W, 5 + C) rows.

    Rows run over (anchor, row, col); columns are cx, cy, w, h in input pixels, then the objectness and the C
    class probabilities, each a sigmoid (class probabilities are not multiplied by the objectness).
    """

    def __init__(self, index: int, anchors: list[tuple[float, float]], classes: int, scale_x_y: float,
                 grid_hw: tuple[int, int], net_hw: tuple[int, int]):  # fmt: skip
        super().__init__(index)
        self.num_anchors, self.classes, self.scale_x_y = len(anchors), classes, scale_x_y
        h, w = grid_hw
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        # grids and anchors follow from the cfg; non-persistent so they stay out of state_dict and .weights
        self.register_buffer("grid", torch.stack((cols, rows), -1).float()[None, None], persistent=False)
        self.register_buffer("anchor_wh", torch.tensor(anchors).view(1, -1, 1, 1, 2), persistent=False)
        self.register_buffer("cell", torch.tensor([net_hw[1] / w, net_hw[0] / h]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.unflatten(1, (self.num_anchors, 5 + self.classes)).permute(0, 1, 3, 4, 2)
        s = self.scale_x_y
        xy = (p[..., :2].sigmoid() * s - 0.5 * (s - 1) + self.grid) * self.cell
        wh = p[..., 2:4].exp() * self.anchor_wh
        return torch.cat((xy, wh, p[..., 4:].sigmoid()), -1).flatten(1, 3)
