"""Darknet models from a .cfg file (and optionally its .weights), e.g. YOLOv3/v4, Yolo-Fastest, Darknet-53.

`load(cfg_path, options)` builds the network the cfg describes; without weights it is randomly initialised,
the same on every load. `write_cfg(model.cfg_sections(), path)` and `write_weights(model, path)` save it back
in Darknet's own formats, e.g. after pruning.
"""

from __future__ import annotations

from edgeprune.errors import ModelError
from edgeprune.models.base import LoadedModel, LoadOptions, image_input, seeded_init
from edgeprune.models.darknet import layers as L
from edgeprune.models.darknet.build import DarknetModel
from edgeprune.models.darknet.cfg import Section, parse_cfg, write_cfg
from edgeprune.models.darknet.parts import write_darknet_files
from edgeprune.models.darknet.weights import DEFAULT_HEADER, WeightsHeader, read_weights, write_weights
from edgeprune.models.family import ModelFamily
from edgeprune.types import DetectionHead, Preprocessing

__all__ = [
    "DEFAULT_HEADER", "FAMILY", "DarknetModel", "Section", "WeightsHeader", "load", "names", "parse_cfg",
    "read_weights", "write_cfg", "write_weights",
]  # fmt: skip

# Darknet's `detector map` thresholds (src/detector.c validate_detector_map: thresh .005, nms .45)
CONF_THRESHOLD = 0.005
IOU_THRESHOLD = 0.45


def yolo_head_inputs(module) -> list:
    """The convolutions a [yolo] layer reads: their output channels are the head's layout, never pruned."""
    if not isinstance(module, DarknetModel):
        return []
    blocks = module.blocks
    return [
        blocks[j].conv for head in module.yolo_layers for j in head.inputs if isinstance(blocks[j], L.Convolutional)
    ]


def yolo_prediction(raw):
    """Darknet's decoded rows (N, A, 4 + 1 + C) as (N, 4 + C, A) with P(class) = objectness × P(class | object)."""
    import numpy as np

    scores = raw[..., 4:5] * raw[..., 5:]
    return np.concatenate([raw[..., :4], scores], axis=-1).swapaxes(1, 2)


FAMILY = ModelFamily(
    "darknet",
    depth=("edgeprune.prune.depth_darknet",),
    rewrites=("darknet-grouped-route-parts",),
    detection_finetuner="edgeprune.train.stages:finetune_darknet_stage",
    extra_files=write_darknet_files,
    kept_layers=yolo_head_inputs,
    detection_prediction=yolo_prediction,
)


def names() -> list[str]:
    return []  # a cfg file names the model, there is no registry


def load(name: str, options: LoadOptions) -> LoadedModel:
    sections = parse_cfg(name)
    module = seeded_init(lambda: DarknetModel(sections))
    channels, height, width = module.input_shape
    if options.input_shape and tuple(options.input_shape[1:]) != module.input_shape:
        raise ModelError(
            f"--input-shape {','.join(map(str, options.input_shape))} does not match {name}, which takes "
            f"{channels}x{height}x{width}",
            fix="leave out --input-shape, or change width=/height= in [net] of the cfg",
        )
    heads = module.yolo_layers
    classes = {head.classes for head in heads}
    if len(classes) > 1:
        raise ModelError(f"{name}: its [yolo] layers disagree on classes= ({sorted(classes)})")
    if options.weights:
        read_weights(module, options.weights)
    net = sections[0]
    return LoadedModel(
        module=module.eval(),
        spec=f"darknet:{name}",
        task="detection" if heads else "classification",
        inputs=image_input(height, width, channels),
        preprocessing=_preprocessing(net, channels, height, width),
        class_names=None,
        weights=options.weights,
        detection=DetectionHead("darknet", classes.pop(), CONF_THRESHOLD, IOU_THRESHOLD) if heads else None,
        family=FAMILY,
    )


def _preprocessing(net: Section, channels: int, height: int, width: int) -> Preprocessing | None:
    """Darknet stretches the image to the net size (unless letter_box=1) with its own resize_image (bilinear,
    align-corners sampling, on 0..1 floats), in RGB (or grey)."""
    if channels not in (1, 3):
        return None  # not an image Darknet reads from a file
    return Preprocessing(
        crop=(height, width),
        resize=None,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        scale=1.0 / 255.0,
        channel_order="RGB" if channels == 3 else "L",
        interpolation="bilinear-align-corners",
        antialias=False,
        letterbox=net.integer("letter_box", 0) == 1,
        pad_value=0.5,
    )
