"""Exact module rewrites applied to a copy of the model before ONNX export, to dodge known runtime bugs.

ZeroPad2d → concatenation with zeros. ONNX Runtime 1.31's level-1 optimiser (`Pad_Fusion`) folds a Pad with
value 0 into a following MaxPool's `pads`. MaxPool pads with −∞, so every window that holds only negative
values changes; ultralytics' yolov3-tiny (ZeroPad2d + stride-1 MaxPool after SiLU) moved boxes by 6.9 px. The
same fold is a known bug in onnx-optimizer (onnxsim#290). A Concat cannot be folded, and it computes the same
numbers. ONNX Runtime 1.32.0 no longer folds it (measured, tests/backends/test_export_rewrites.py); the rewrite
stays because an artifact runs on the device's runtime, often an older one (JetPack ships its own build).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ZeroPadByConcat(nn.Module):
    """nn.ZeroPad2d with non-negative padding, computed by concatenating zeros."""

    def __init__(self, padding: tuple[int, int, int, int]):
        super().__init__()
        self.left, self.right, self.top, self.bottom = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.left or self.right:
            x = torch.cat([x.new_zeros((n, c, h, self.left)), x, x.new_zeros((n, c, h, self.right))], dim=3)
            w = w + self.left + self.right
        if self.top or self.bottom:
            x = torch.cat([x.new_zeros((n, c, self.top, w)), x, x.new_zeros((n, c, self.bottom, w))], dim=2)
        return x


def rewrite_for_export(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy with the rewrites applied (or the module itself when none applies), and what was rewritten."""
    targets = [name for name, m in module.named_modules() if isinstance(m, nn.ZeroPad2d) and min(m.padding) >= 0]
    if not targets:
        return module, []
    rewritten = copy.deepcopy(module)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = rewritten.get_submodule(parent_name) if parent_name else rewritten
        original = getattr(parent, child)
        replacement = ZeroPadByConcat(tuple(original.padding))
        for key, value in vars(original).items():  # frameworks' routing attributes (ultralytics' f, i, type)
            if not key.startswith("_") and key not in vars(replacement):
                setattr(replacement, key, value)
        setattr(parent, child, replacement)
    return rewritten, [f"{name}: ZeroPad2d exported as Concat (ORT Pad→MaxPool fusion bug)" for name in targets]
