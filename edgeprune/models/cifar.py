"""CIFAR-10 ResNets (He et al. 2016, section 4.2) with option-A zero-pad shortcuts, as in akamaster/pytorch_resnet_cifar10.

Module names match akamaster's, so its published checkpoints (e.g. resnet56-4bfd9763.th) load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeprune.errors import UnknownName
from edgeprune.models.base import LoadedModel, LoadOptions, image_input, seeded_init
from edgeprune.models.family import ModelFamily
from edgeprune.models.weights import load_into, read_state_dict
from edgeprune.types import Preprocessing

DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18, "resnet1202": 200}
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# akamaster trains and evaluates with ImageNet statistics (transforms.Normalize in its trainer.py).
PREPROCESSING = Preprocessing(crop=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
FAMILY = ModelFamily("cifar", depth=("edgeprune.prune.depth_resnet",), rewrites=("cifar-option-a-shortcut-parts",))


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels equally on both sides."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = ZeroPadShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def names() -> list[str]:
    return list(DEPTHS)


def load(name: str, options: LoadOptions) -> LoadedModel:
    if name not in DEPTHS:
        raise UnknownName("CIFAR model", name, DEPTHS, fix="use cifar:resnet20|32|44|56|110")
    module = seeded_init(lambda: CifarResNet(DEPTHS[name]))
    if options.weights:
        load_into(module, read_state_dict(options.weights, trust_pickle=options.trust_pickle), options.weights)
    return LoadedModel(
        module=module.eval(),
        spec=f"cifar:{name}",
        task="classification",
        inputs=image_input(32, 32),
        preprocessing=PREPROCESSING,
        class_names=CLASS_NAMES,
        weights=options.weights,
        family=FAMILY,
    )
