"""Darknet's YOLOv3 training loss (AlexeyAB darknet, src/yolo_layer.c `forward_yolo_layer`) on the raw outputs of
the convolutions that feed the [yolo] layers.

Darknet differentiates nothing: each yolo layer writes `delta` = target − output into its input's gradient, past
the logistic it applied, and reports Σ delta² as its cost. `YoloLoss` is a scalar whose gradient with respect to
every raw conv output is exactly −delta (the descent direction Darknet applies):

- objectness and class outputs: ½·w·(target − σ(x))² with σ's derivative taken as 1 (straight-through), so
  ∂/∂x = −w·(target − σ(x)), which is also the gradient of binary cross-entropy on the logit;
- boxes, iou_loss=mse: ½·iou_normalizer·(2 − w·h)·Σ(t − out)² over x, y (the scaled sigmoid,
  straight-through) and the raw w, h logits, against Darknet's targets tx = x·W − i, tw = log(w / anchor);
- boxes, iou_loss=iou|giou|diou|ciou: iou_normalizer·(1 − IoU_kind(pred, truth)) on the decoded box (relative to
  the input), with Darknet's chain rule: the centre's derivative is taken w.r.t. the logit directly and w, h get
  Darknet's `dw *= exp(x)`; each truth's box gradient has NaN/inf zeroed and is clipped at max_delta. The
  IoU-kind derivative is autograd's (CIoU with α held constant, as in the paper), where Darknet has hand-written
  ones (src/box.c dx_box_iou).

Every term is 0 when the output equals its target. Targets, per image and [yolo] layer, as AlexeyAB assigns them:
- every prediction has objectness target 0 with weight obj_normalizer, except where its decoded box overlaps some
  truth by IoU > ignore_thresh and one of its class probabilities exceeds 0.25 (`compare_yolo_class`): weight 0;
- each truth goes to the anchor, among all num= anchors, whose shape fits best (IoU of centred boxes), in the
  cell holding its centre, if this layer's mask= holds that anchor; with iou_thresh < 1 also to every other
  anchor of the mask whose shape IoU exceeds iou_thresh. There objectness targets 1, the classes the one-hot of
  the classes assigned there (smoothed by label_smooth_eps), and each truth adds a box term; with iou_thresh < 1
  an anchor's box gradient is divided by its number of classes (`averages_yolo_deltas`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from edgeprune.errors import ConfigError
from edgeprune.models.darknet.build import DarknetModel
from edgeprune.models.darknet.cfg import Section

IOU_LOSSES = ("mse", "iou", "giou", "diou", "ciou")
CLASS_MATCH = 0.25  # compare_yolo_class: a prediction may be ignored only if a class probability exceeds this
# [yolo] options the loss does not read, because they act at inference (NMS) or on the data (checked there).
INFERENCE_OPTIONS = frozenset({"nms_kind", "beta_nms"})
DATA_OPTIONS = frozenset({"jitter", "random", "resize"})


@dataclass(frozen=True)
class YoloHead:
    """One [yolo] layer's assignment and loss settings, with AlexeyAB's defaults for options the cfg leaves out."""

    index: int  # Darknet layer index
    anchors: tuple[tuple[float, float], ...]  # all num= anchors (w, h) in input pixels
    mask: tuple[int, ...]  # the anchors this layer predicts
    classes: int
    grid: tuple[int, int]  # (rows, cols)
    net: tuple[int, int]  # (height, width) of the input
    scale_x_y: float = 1.0
    ignore_thresh: float = 0.5
    iou_thresh: float = 1.0
    iou_normalizer: float = 0.75
    obj_normalizer: float = 1.0
    iou_loss: str = "mse"
    max_delta: float = math.inf
    label_smooth_eps: float = 0.0
    max_boxes: int = 90  # truths per image (max=)


def yolo_heads(model: DarknetModel) -> list[YoloHead]:
    """The loss settings of every [yolo] layer, in cfg order; a ConfigError names an option the loss cannot honour."""
    if not model.yolo_layers:
        raise ConfigError(
            "the Darknet model has no [yolo] layers, so it has no detection loss",
            expected="a detection cfg (YOLOv3/v4-style [yolo] heads)",
        )
    heads = []
    for block in model.yolo_layers:
        section = model.sections[block.index + 1]
        _refuse_unsupported(section)
        anchors = section.numbers("anchors")
        iou_loss = section.text("iou_loss", "mse")
        if iou_loss not in IOU_LOSSES:
            raise _unsupported(section, "iou_loss", expected=", ".join(IOU_LOSSES))
        heads.append(YoloHead(
            index=block.index,
            anchors=tuple(zip(anchors[0::2], anchors[1::2])),
            mask=tuple(section.integers("mask")) if "mask" in section.options else tuple(range(len(anchors) // 2)),
            classes=block.classes,
            grid=(int(block.grid.shape[2]), int(block.grid.shape[3])),
            net=(model.input_shape[1], model.input_shape[2]),
            scale_x_y=block.scale_x_y,
            ignore_thresh=section.number("ignore_thresh", 0.5),
            iou_thresh=section.number("iou_thresh", 1.0),
            iou_normalizer=section.number("iou_normalizer", 0.75),
            obj_normalizer=section.number("obj_normalizer", 1.0),
            iou_loss=iou_loss,
            max_delta=section.number("max_delta", math.inf),
            label_smooth_eps=section.number("label_smooth_eps", 0.0),
            max_boxes=section.integer("max", 90),
        ))  # fmt: skip
    return heads


def _refuse_unsupported(section: Section) -> None:
    if section.number("truth_thresh", 1.0) < 1:
        raise _unsupported(section, "truth_thresh", expected="truth_thresh=1 (off)")
    if section.integer("focal_loss", 0):
        raise _unsupported(section, "focal_loss", expected="focal_loss=0")
    if "counters_per_class" in section.options:
        raise _unsupported(section, "counters_per_class", expected="no per-class weights")
    if section.number("cls_normalizer", 1.0) != 1:
        # AlexeyAB applies cls_normalizer only together with counters_per_class, so any other value would mislead
        raise _unsupported(
            section, "cls_normalizer", expected="cls_normalizer=1 (Darknet ignores it without counters_per_class)"
        )


def _unsupported(section: Section, key: str, expected: str) -> ConfigError:
    return ConfigError(
        f"{section.where(key)}: [{section.name}] {key}={section.options[key]} is not supported by edgeprune's "
        "Darknet YOLO loss",
        expected=expected,
        fix=f"change {key}= in the cfg, or fine-tune with Darknet itself",
    )


class YoloLoss:
    """`loss(raw, truths)`: the summed loss over a batch and its parts (box, obj, cls) as floats.

    `raw[k]` is the (N, A·(5 + C), H, W) input of the k-th [yolo] layer; `truths[b]` an (M, 5) tensor of class,
    cx, cy, w, h relative to the input (0..1), already filtered as Darknet's data loader does.
    """

    def __init__(self, heads: Sequence[YoloHead]):
        self.heads = list(heads)

    def __call__(self, raw: Sequence[torch.Tensor], truths: Sequence[torch.Tensor]):
        if len(raw) != len(self.heads):
            raise ValueError(f"{len(raw)} raw outputs for {len(self.heads)} [yolo] layers")
        total = raw[0].new_zeros(())
        parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
        for head, x in zip(self.heads, raw):
            for name, term in _head_loss(head, x, truths).items():
                total = total + term
                parts[name] += float(term.detach())
        return total, parts


def _head_loss(head: YoloHead, raw: torch.Tensor, truths: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    n, rows, cols = raw.shape[0], raw.shape[2], raw.shape[3]
    a, c = len(head.mask), head.classes
    if raw.shape[1] != a * (5 + c) or (rows, cols) != head.grid:
        expected = f"(N, {a * (5 + c)}, {head.grid[0]}, {head.grid[1]})"
        raise ValueError(f"[yolo] layer {head.index} expects {expected}, got {tuple(raw.shape)}")
    p = raw.float().reshape(n, a, 5 + c, rows, cols).permute(0, 1, 3, 4, 2)  # (N, A, H, W, 5 + C)
    s = head.scale_x_y
    net_h, net_w = head.net
    anchors = torch.tensor(head.anchors, dtype=torch.float32) / torch.tensor([net_w, net_h], dtype=torch.float32)
    mask_anchors = anchors[list(head.mask)]
    with torch.no_grad():
        out = p.sigmoid()
        xy = out[..., :2] * s - 0.5 * (s - 1)
        grid_x = torch.arange(cols, dtype=torch.float32)
        grid_y = torch.arange(rows, dtype=torch.float32)[:, None]
        wh = p[..., 2:4].exp() * mask_anchors.view(1, a, 1, 1, 2)
        boxes = torch.cat(((xy[..., :1] + grid_x[:, None]) / cols, (xy[..., 1:] + grid_y[..., None]) / rows, wh), -1)
        class_match = (out[..., 5:] > CLASS_MATCH).any(-1)

    obj_target = torch.zeros(n, a, rows, cols)
    obj_weight = torch.full((n, a, rows, cols), head.obj_normalizer)
    pairs = []  # per image: (anchor slot, row, col, truth rows) of each (truth, anchor) assignment
    for b, t in enumerate(truths):
        t = t[: head.max_boxes].float()
        if not len(t):
            continue
        with torch.no_grad():
            best = _iou(boxes[b].reshape(-1, 4), t[:, 1:5]).max(1).values.view(a, rows, cols)
            obj_weight[b][(best > head.ignore_thresh) & class_match[b]] = 0
        shape_iou = _shape_iou(t[:, 3:5], anchors)  # (M, num)
        best_n = shape_iou.argmax(1)  # the first best, as Darknet's strict `>`
        i = (t[:, 1] * cols).long().clamp(0, cols - 1)
        j = (t[:, 2] * rows).long().clamp(0, rows - 1)
        for slot, anchor in enumerate(head.mask):
            chosen = best_n == anchor
            if head.iou_thresh < 1:
                chosen |= shape_iou[:, anchor] > head.iou_thresh
            if chosen.any():
                pairs.append((b, slot, j[chosen], i[chosen], t[chosen]))
    if not pairs:
        return {"obj": _squared(p[..., 4], obj_target, obj_weight)}

    pb = torch.cat([torch.full((len(t),), b) for b, _, _, _, t in pairs])
    pa = torch.cat([torch.full((len(t),), slot) for _, slot, _, _, t in pairs])
    pj = torch.cat([j for _, _, j, _, _ in pairs])
    pi = torch.cat([i for _, _, _, i, _ in pairs])
    pt = torch.cat([t for *_, t in pairs])
    obj_target[pb, pa, pj, pi] = 1
    obj_weight[pb, pa, pj, pi] = head.obj_normalizer

    # one class target per assigned anchor: the union of its truths' classes
    key = ((pb * a + pa) * rows + pj) * cols + pi
    keys, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((len(keys),), len(key)).scatter_reduce(0, inverse, torch.arange(len(key)), "amin")
    classes = pt[:, 0].long()
    cls_target = torch.zeros(len(keys), c)
    cls_target[inverse, classes] = 1
    distinct = cls_target.sum(1)  # classes with a positive delta at the anchor
    if head.label_smooth_eps:
        cls_target = cls_target * (1 - head.label_smooth_eps) + 0.5 * head.label_smooth_eps
    cls_logits = p[pb[first], pa[first], pj[first], pi[first], 5:]

    per_pair = distinct[inverse] if head.iou_thresh < 1 else torch.ones(len(key))
    box_logits = p[pb, pa, pj, pi, :4]
    box = _box_loss(head, box_logits, pt[:, 1:5], pi, pj, mask_anchors[pa], per_pair)
    return {
        "box": box,
        "obj": _squared(p[..., 4], obj_target, obj_weight),
        "cls": _squared(cls_logits, cls_target, torch.ones(())),
    }


def _box_loss(head: YoloHead, logits, truth, i, j, anchor, per_pair) -> torch.Tensor:
    """The box terms of each (truth, anchor) pair, each divided by `per_pair` (Darknet's class-count average)."""
    rows, cols = head.grid
    s = head.scale_x_y
    xy_out = logits[:, :2].sigmoid() * s - 0.5 * (s - 1)
    if head.iou_loss == "mse":  # Darknet's old loss: no NaN fix, no clipping
        target = torch.stack((
            truth[:, 0] * cols - i, truth[:, 1] * rows - j,
            torch.log(truth[:, 2] / anchor[:, 0]), torch.log(truth[:, 3] / anchor[:, 1]),
        ), 1)  # fmt: skip
        out = torch.cat((_through(xy_out, logits[:, :2]), logits[:, 2:4]), 1)
        scale = (2 - truth[:, 2] * truth[:, 3]) * head.iou_normalizer / per_pair
        return 0.5 * (scale[:, None] * (target - out) ** 2).sum()
    logits = _DeltaClip.apply(logits, (head.max_delta / per_pair)[:, None])
    centre = torch.stack(((xy_out[:, 0] + i) / cols, (xy_out[:, 1] + j) / rows), 1)
    exp_wh = logits[:, 2:4].exp()
    pred = torch.cat((_through(centre, logits[:, :2]), _through(exp_wh * anchor, exp_wh)), 1)
    return (head.iou_normalizer * (1 - iou_kind(pred, truth, head.iou_loss)) / per_pair).sum()


def _through(value: torch.Tensor, carrier: torch.Tensor) -> torch.Tensor:
    """`value`, with the gradient passed straight to `carrier` (derivative 1), as Darknet's deltas are applied."""
    return value.detach() + (carrier - carrier.detach())


def _squared(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """½·w·(target − σ(x))², whose gradient on x is −w·(target − σ(x)): Darknet's logistic delta."""
    return 0.5 * (weight * (target - _through(logits.sigmoid(), logits)) ** 2).sum()


class _DeltaClip(torch.autograd.Function):
    """Identity whose backward zeroes NaN/inf and clips at ±bound, as Darknet's fix_nan_inf and max_delta."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(bound)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (bound,) = ctx.saved_tensors
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.maximum(torch.minimum(grad, bound), -bound), None


def _corners(box: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return box[..., :2] - box[..., 2:4] / 2, box[..., :2] + box[..., 2:4] / 2


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of (P, 4) and (M, 4) cx, cy, w, h boxes → (P, M)."""
    a1, a2 = _corners(a[:, None])
    b1, b2 = _corners(b[None])
    inter = (torch.minimum(a2, b2) - torch.maximum(a1, b1)).clamp(min=0).prod(-1)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _shape_iou(wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of centred boxes (M, 2) against anchors (T, 2) → (M, T), Darknet's anchor matching."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(wh[:, None, 1], anchors[None, :, 1])
    return inter / (wh[:, None, 0] * wh[:, None, 1] + anchors[None, :, 0] * anchors[None, :, 1] - inter)


def iou_kind(pred: torch.Tensor, truth: torch.Tensor, kind: str, eps: float = 1e-9) -> torch.Tensor:
    """Row-wise IoU, GIoU, DIoU or CIoU of (P, 4) cx, cy, w, h boxes (src/box.c box_iou/giou/diou/ciou)."""
    p1, p2 = _corners(pred)
    t1, t2 = _corners(truth)
    inter = (torch.minimum(p2, t2) - torch.maximum(p1, t1)).clamp(min=0).prod(1)
    union = pred[:, 2] * pred[:, 3] + truth[:, 2] * truth[:, 3] - inter
    iou = inter / (union + eps)
    if kind == "iou":
        return iou
    hull = torch.maximum(p2, t2) - torch.minimum(p1, t1)
    if kind == "giou":
        area = hull.prod(1)
        return iou - (area - union) / (area + eps)
    distance = ((pred[:, :2] - truth[:, :2]) ** 2).sum(1) / ((hull**2).sum(1) + eps)
    if kind == "diou":
        return iou - distance
    aspect = torch.atan(truth[:, 2] / (truth[:, 3] + eps)) - torch.atan(pred[:, 2] / (pred[:, 3] + eps))
    v = (4 / math.pi**2) * aspect**2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - distance - alpha * v
