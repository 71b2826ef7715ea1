"""Darknet .weights files: a small header, then float32 (little-endian) parameters layer by layer in cfg order.

Per layer, in Darknet's order (src/parser.c load_convolutional_weights / load_connected_weights):
convolutional: biases (batch norm beta when batch_normalize), [scales, rolling_mean, rolling_variance,] weights;
connected: biases, weights, [scales, rolling_mean, rolling_variance]. Other layers hold none. Darknet reads
a short file with warnings and ignores a long one; here either is an error naming the layer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import ModelError
from edgeprune.fileio import writing
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.build import DarknetModel

_FIX = "use the .weights file trained with this cfg (same layers, filters and classes)"


@dataclass(frozen=True)
class WeightsHeader:
    major: int
    minor: int
    revision: int
    seen: int  # images seen in training

    @property
    def seen_bytes(self) -> int:
        # pjreddie's rule; AlexeyAB's drops the < 1000 tests, which matter only for transposed files
        return 8 if (self.major * 10 + self.minor) >= 2 and self.major < 1000 and self.minor < 1000 else 4

    @property
    def transposed(self) -> bool:
        """Connected-layer weights stored (inputs, outputs), as very old Darknet wrote them."""
        return self.major > 1000 or self.minor > 1000

    @property
    def size(self) -> int:
        return 12 + self.seen_bytes

    def pack(self) -> bytes:
        seen = struct.pack("<Q" if self.seen_bytes == 8 else "<I", self.seen)
        return struct.pack("<3i", self.major, self.minor, self.revision) + seen


DEFAULT_HEADER = WeightsHeader(0, 2, 5, 0)  # what AlexeyAB's Darknet writes today


def read_weights(model: DarknetModel, path: str | Path) -> WeightsHeader:
    """Load a .weights file into `model` (all or nothing) and remember its header on it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"weights file not found: {path}", fix="check the --weights path") from None
    except OSError as exc:
        raise ModelError(f"cannot read weights file {path}: {exc.strerror}") from None
    if len(data) < 16:
        raise ModelError(f"{path} holds {len(data)} bytes, shorter than a Darknet weights header", fix=_FIX)
    major, minor, revision = struct.unpack_from("<3i", data)
    probe = WeightsHeader(major, minor, revision, 0)
    if len(data) < probe.size:
        raise ModelError(f"{path} holds {len(data)} bytes, shorter than its {probe.size}-byte header", fix=_FIX)
    seen = struct.unpack_from("<Q" if probe.seen_bytes == 8 else "<I", data, 12)[0]
    header = WeightsHeader(major, minor, revision, seen)
    payload = memoryview(data)[header.size :]
    available = len(payload) // 4
    plan, offset = [], 0
    for block in model.blocks:
        tensors = _tensors(block)
        needed = sum(t.numel() for t in tensors)
        if offset + needed > available:
            raise ModelError(
                f"{path} ends inside layer {block.index} ({_describe(model, block)}): it needs {needed} floats "
                f"and {available - offset} are left ({len(payload)} bytes after the header)",
                fix=_FIX,
            )
        plan.append((block, tensors, offset))
        offset += needed
    extra = len(payload) - offset * 4
    if extra:
        amount = f"{extra // 4} more floats" if extra % 4 == 0 else f"{extra} more bytes (not whole floats)"
        last = next((block for block, tensors, _ in reversed(plan) if tensors), None)
        raise ModelError(
            f"{path} holds {amount} than the cfg's layers take; the last layer with weights is "
            + (f"layer {last.index} ({_describe(model, last)})" if last else "none"),
            fix=_FIX,
        )
    floats = np.frombuffer(payload, dtype="<f4", count=offset).astype(np.float32)
    with torch.no_grad():
        for block, tensors, start in plan:
            for tensor, source in zip(tensors, _split(floats, start, tensors)):
                tensor.copy_(torch.from_numpy(_layout(block, tensor, source, header)))
    model.weights_header = header
    return header


def write_weights(model: DarknetModel, path: str | Path, header: WeightsHeader | None = None) -> Path:
    """Write the model's parameters in Darknet's layout, with `header` (default: the one read, else 0.2.5)."""
    header = header or model.weights_header or DEFAULT_HEADER
    path = Path(path)
    with writing(path) as tmp, open(tmp, "wb") as f:
        f.write(header.pack())
        for block in model.blocks:
            for tensor in _tensors(block):
                values = tensor.detach().cpu().numpy()
                if header.transposed and isinstance(block, L.Connected) and tensor is block.linear.weight:
                    values = values.T
                f.write(np.ascontiguousarray(values, dtype="<f4").tobytes())
    return path


def _tensors(block: L.Block) -> list[torch.Tensor]:
    """A block's parameters in the order Darknet stores them."""
    if isinstance(block, L.Convolutional):
        if block.bn is None:
            return [block.conv.bias, block.conv.weight]
        bn = block.bn
        return [bn.bias, bn.weight, bn.running_mean, bn.running_var, block.conv.weight]
    if isinstance(block, L.Connected):
        if block.bn is None:
            return [block.linear.bias, block.linear.weight]
        bn = block.bn
        return [bn.bias, block.linear.weight, bn.weight, bn.running_mean, bn.running_var]
    return []


def _split(floats: np.ndarray, start: int, tensors: list[torch.Tensor]):
    for tensor in tensors:
        yield floats[start : start + tensor.numel()]
        start += tensor.numel()


def _layout(block: L.Block, tensor: torch.Tensor, values: np.ndarray, header: WeightsHeader) -> np.ndarray:
    if header.transposed and isinstance(block, L.Connected) and tensor is block.linear.weight:
        return values.reshape(tensor.shape[::-1]).T.copy()
    return values.reshape(tensor.shape)


def _describe(model: DarknetModel, block: L.Block) -> str:
    section = model.sections[block.index + 1]
    return f"[{section.name}] at {section.where()}"
