"""EfficientNet-Lite0/1/2 as a block teacher: its seven stages are the blocks.

``embed`` = normalisation (mean = std = 0.5) + stem (conv 3x3 stride 2 + BN + ReLU6);
``blocks[i]`` = timm's ``blocks[i]`` (stage i, a sequence of MBConv blocks); ``pool`` = the head
conv (1x1 to 1280 channels) + BN + ReLU6 + global average pooling: the feature the ImageNet
classifier reads, the counterpart of a ViT's final-norm CLS token. For Lite0 at input size S the
boundaries are 32@S/2 (stem), then 16@S/2, 24@S/4, 40@S/8, 80@S/16, 112@S/16, 192@S/32, 320@S/32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distilad.backbones.blocks import BlockTeacher
from distilad.backbones.efficientnet_lite import build_timm_lite


class LiteBlockTeacher(BlockTeacher):
    """Frozen EfficientNet-Lite split into its 7 stages; pooled feature 1280-D."""

    def __init__(self, name: str = "efficientnet_lite0", weights: str | Path | None = None):
        model, wid = build_timm_lite(name, weights)
        super().__init__(name, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), wid)
        self.stem = torch.nn.Sequential(model.conv_stem, model.bn1)
        self.blocks = torch.nn.ModuleList(list(model.blocks))
        self.head = torch.nn.Sequential(model.conv_head, model.bn2)
        self.feature_dim = int(model.num_features)
        # channels-last convolutions (weights here, activations in embed; clones inherit it):
        # about 1.5x faster training of the cloned stages on a CPU than the default layout
        self.to(memory_format=torch.channels_last)
        self.freeze()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x.contiguous(memory_format=torch.channels_last))

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        return self.head(last).mean(dim=(2, 3))
