"""Measured value: how far the model's outputs move on calibration images when one block, or one chunk of one
channel group, is removed. The planner then trades latency against this measured damage instead of a criterion's
score, whose scale differs between layers and says nothing about whole blocks (on ResNet-56, ranking blocks by
BN |γ| did no better than random).

Damage is label-free and compares the pruned model with the unpruned one on the same images: the KL divergence of
the class distributions for classifiers (fine-tuning distils from the same teacher), and the mean squared error of
each output tensor over that tensor's variance otherwise (detectors' raw outputs). Each item is measured alone on a
copy pruned exactly as the plan would prune it (`realize`); the solver then treats the damages as additive.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from edgeprune.models.base import LoadedModel, tensor_outputs
from edgeprune.plan.structure import PlanState, Structure, realize
from edgeprune.progress import NoProgress, Progress
from edgeprune.types import Record

CHUNK_SHARE = 0.25  # share of a group's channels removed to measure it (rounded to its unit)
FLOOR_SHARE = 0.01  # a damage below this share of the median is measurement noise: raised to it


@dataclass(frozen=True)
class Sensitivity(Record):
    """Measured output damage of each block and of each group's first chunk (the lowest-scored channels)."""

    metric: str  # "kl" | "relative-mse"
    images: int
    blocks: dict[str, float]
    groups: dict[str, float]
    chunk: dict[str, int]  # channels removed from each group to measure it

    def summary(self) -> str:
        ranked = sorted(self.blocks.items(), key=lambda kv: kv[1])
        least = ", ".join(f"{name} {value:.3g}" for name, value in ranked[:3])
        return (f"measured {self.metric} damage on {self.images} images: {len(self.blocks)} blocks "
                f"(least: {least or '—'}), {len(self.groups)} channel groups")  # fmt: skip


def measure_sensitivity(loaded: LoadedModel, structure: Structure, criterion: str, batches: Sequence,
                        *, progress: Progress | None = None, **prune_options) -> Sensitivity:  # fmt: skip
    """Damage of removing each block, and CHUNK_SHARE of each prunable group, measured on `batches` (the images of
    each (images, labels) pair). The models run where the images are (a GPU when calibration_batches put them
    there); `loaded` stays on its device."""
    import torch

    progress = progress or NoProgress()
    images = [b[0] if isinstance(b, (tuple, list)) else b for b in batches]
    if not images:
        raise ValueError("measuring sensitivity needs at least one batch of images")
    metric = "kl" if loaded.task == "classification" else "relative-mse"
    reference = _outputs(loaded.module, images)
    chunks = {key: _chunk(g.width, g.unit, g.min_width) for key, g in structure.groups.items()}
    chunks = {key: c for key, c in chunks.items() if c > 0}
    todo = [("block", name) for name in structure.blocks] + [("group", key) for key in chunks]
    found: dict[str, dict[str, float]] = {"block": {}, "group": {}}
    with (
        torch.no_grad(),
        progress.task("measuring what each block and channel group is worth", total=len(todo)) as update,
    ):
        for done, (kind, name) in enumerate(todo, 1):
            state = structure.initial()
            if kind == "block":
                state.removed.add(name)
            else:
                state.kept[name] -= chunks[name]
            found[kind][name] = _damage(metric, reference, _outputs(_pruned(loaded, structure, state, criterion,
                                                                             prune_options), images))  # fmt: skip
            update(done)
    return Sensitivity(metric, int(sum(len(x) for x in images)), found["block"], found["group"], chunks)


def priced(structure: Structure, sensitivity: Sensitivity) -> Structure:
    """`structure` with values in measured damage: a block is worth its damage; a group's channel scores are scaled
    so that its measured chunk is worth the chunk's damage (the scores still order and weigh channels within it)."""
    values = [v for v in (*sensitivity.blocks.values(), *sensitivity.groups.values()) if v > 0]
    floor = FLOOR_SHARE * float(np.median(values)) if values else 1e-12
    groups = dict(structure.groups)
    for key, damage in sensitivity.groups.items():
        group = groups[key]
        chunk_value = group.value_of(group.width, group.width - sensitivity.chunk[key])
        groups[key] = replace(group, scores=group.scores * max(damage, floor) / max(chunk_value, 1e-12))
    blocks = {name: replace(b, value=max(sensitivity.blocks[name], floor)) for name, b in structure.blocks.items()}
    return replace(structure, groups=groups, blocks=blocks)


def _chunk(width: int, unit: int, min_width: int) -> int:
    chunk = max(unit, int(round(width * CHUNK_SHARE / unit)) * unit)
    return min(chunk, (width - min_width) // unit * unit)


def _pruned(loaded: LoadedModel, structure: Structure, state: PlanState, criterion: str, prune_options):
    work = copy.deepcopy(loaded)
    realize(work, structure, state, criterion, **prune_options)
    return work.module.eval()


def _outputs(module, images: Sequence) -> list[list[np.ndarray]]:
    import torch

    home = next((p.device for p in module.parameters()), images[0].device)
    module.to(images[0].device).eval()
    try:
        with torch.no_grad():
            return [[t.detach().float().cpu().numpy() for t in tensor_outputs(module(x))]
                    for x in images]  # fmt: skip
    finally:
        module.to(home)


def _damage(metric: str, reference: list[list[np.ndarray]], pruned: list[list[np.ndarray]]) -> float:
    if metric == "kl":
        total, count = 0.0, 0
        for ref, got in zip(reference, pruned):
            p, q = _log_softmax(ref[0]), _log_softmax(got[0])
            total += float((np.exp(p) * (p - q)).sum())
            count += len(p)
        return total / max(count, 1)
    scores = []
    for position in range(len(reference[0])):
        ref = np.concatenate([r[position].ravel() for r in reference])
        got = np.concatenate([g[position].ravel() for g in pruned])
        scores.append(float(np.mean((got - ref) ** 2) / max(float(np.var(ref)), 1e-12)))
    return float(np.mean(scores))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
