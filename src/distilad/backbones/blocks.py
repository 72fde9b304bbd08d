"""Frozen teachers split into blocks, for methods whose students imitate one block at a time.

A :class:`BlockTeacher` runs ``embed`` (normalisation + stem), then ``blocks[0..n-1]`` in turn,
then ``pool`` (the pretrained feature of the whole image). Boundary ``j`` is the tensor between
blocks: boundary 0 is the input of block 0, boundary ``j`` (1 <= j <= n) the output of block
``j - 1``, which is also the input of block ``j``. ``forward(x, keep)`` returns the pooled feature
and the boundaries asked for, so a student block ``i`` can be fed boundary ``i`` and compared with
boundary ``i + 1``.

``clone_block(i)`` gives a fresh trainable block of block ``i``'s architecture, xavier-initialised
(Transformaly's ``cloned_blocks``), never a copy of the teacher's weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from distilad.backbones.base import FrozenNet


class BlockTeacher(FrozenNet):
    """A frozen network as ``embed -> blocks -> pool``; images in [0, 1], own normalisation."""

    #: width of the pooled pretrained feature.
    feature_dim: int
    #: the blocks, in order; block i maps boundary i to boundary i + 1.
    blocks: nn.ModuleList

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Normalised images (B, 3, H, W) -> boundary 0."""
        raise NotImplementedError

    def pool(self, last: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Boundary n (the last block's output) -> pretrained feature (B, feature_dim)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, keep: Iterable[int] = ()
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Images (B, 3, H, W) in [0, 1] -> (pooled (B, feature_dim), {j: boundary j for j in keep})."""
        keep = set(keep)
        h = self.embed(self.normalise(x))
        out = {0: h} if 0 in keep else {}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i + 1 in keep:
                out[i + 1] = h
        return self.pool(h), out

    def clone_block(self, i: int) -> nn.Module:
        """A trainable block with block ``i``'s architecture and fresh (xavier) weights."""
        block = copy.deepcopy(self.blocks[i])
        fresh_init(block)
        block.requires_grad_(True)
        return block.train()


def fresh_init(module: nn.Module) -> nn.Module:
    """Re-initialise every weight of ``module`` in place, as Transformaly does for its cloned
    blocks: xavier-uniform weights for linear and convolution layers (linear biases N(0, 1e-6),
    as the official ``_init``; convolution biases 0); normalisation and other parametrised layers
    (BatchNorm with its running statistics, LayerNorm, LayerScale) by their own
    ``reset_parameters``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.normal_(m.bias, std=1e-6)
        elif isinstance(m, nn.modules.conv._ConvNd):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif hasattr(m, "reset_parameters"):
            # modules() visits parents before children, so a container's own reset cannot undo
            # the xavier initialisation of its layers
            m.reset_parameters()
    return module


VIT_PREFIXES = ("vit_", "deit")


def create_block_teacher(name: str, weights: str | Path | None = None,
                         image_size: int = 224) -> BlockTeacher:
    """A frozen block teacher: ``efficientnet_lite0/1/2`` (packaged ImageNet weights unless
    ``weights`` is given; stages as blocks) or a timm ViT / DeiT (``vit_*``, ``deit*``; transformer
    blocks as blocks), whose weights must come from a local file (``weights=PATH``;
    ``"random"`` for tests). ``image_size`` sizes a ViT's position embedding."""
    from distilad.errors import DistiladError

    if name.startswith("efficientnet_lite"):
        from distilad.backbones.lite_blocks import LiteBlockTeacher

        return LiteBlockTeacher(name, weights)
    if name.startswith(VIT_PREFIXES):
        from distilad.backbones.vit import ViTBlockTeacher

        return ViTBlockTeacher(name, weights, image_size)
    raise DistiladError(f"unknown block teacher {name!r}: use efficientnet_lite0/1/2 or a timm "
                        "ViT / DeiT name (vit_base_patch16_384, deit_small_patch16_224, ...)")
