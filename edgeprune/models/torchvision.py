"""torchvision classification models: random init (seeded) or a local weights file; never a download."""

from __future__ import annotations

from pathlib import Path

from edgeprune.errors import ModelError, UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions, image_input, seeded_init
from edgeprune.models.family import ModelFamily
from edgeprune.models.weights import load_into, read_state_dict
from edgeprune.types import Preprocessing

# depth pruning knows its ResNets; the exact rewrite makes ShuffleNetV2 prunable
FAMILY = ModelFamily("torchvision", depth=("edgeprune.prune.depth_resnet",), rewrites=("shufflenet-v2-shuffle-free",))


def names() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)


def load(name: str, options: LoadOptions) -> LoadedModel:
    from torchvision import models

    if name not in names():
        raise UnknownName("torchvision model", name, names())
    weights_enum = models.get_model_weights(name)
    if options.weights in weights_enum.__members__ and not Path(options.weights).exists():  # e.g. DEFAULT
        url = weights_enum[options.weights].url
        raise ModelError(
            f"--weights {options.weights} asks for pretrained weights from the hub, and edgeprune never downloads",
            fix=f"download {url} on a connected machine and pass --weights <that file>",
        )
    preprocessing = _preprocessing(weights_enum)
    # a ViT's position embedding is sized for its input: built for the published weights' crop (vit_h_14: 518),
    # as torchvision's builder does when it loads them, so that those weights load and the input shape is right
    size = {"image_size": preprocessing.crop[0]} if name.startswith("vit_") else {}
    module = seeded_init(lambda: models.get_model(name, weights=None, **size))
    if options.weights:
        load_into(module, read_state_dict(options.weights, trust_pickle=options.trust_pickle), options.weights)
    categories = weights_enum.DEFAULT.meta.get("categories") if options.weights else None
    return LoadedModel(
        module=module.eval(),
        spec=f"torchvision:{name}",
        task="classification",
        inputs=image_input(*preprocessing.crop),
        preprocessing=preprocessing,
        class_names=tuple(categories) if categories else None,
        weights=options.weights,
        family=FAMILY,
    )


def _preprocessing(weights_enum) -> Preprocessing:
    """The eval transform torchvision publishes with the model's weights (crop, resize, mean/std, interpolation)."""
    transform = weights_enum.DEFAULT.transforms()
    crop = transform.crop_size[0]
    return Preprocessing(
        crop=(crop, crop),
        resize=transform.resize_size[0],
        mean=tuple(transform.mean),
        std=tuple(transform.std),
        interpolation=transform.interpolation.value,
    )
