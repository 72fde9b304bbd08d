"""timm Vision Transformers (ViT, DeiT) as block teachers: the transformer blocks are the blocks.

No ViT weights can be downloaded at run time, so they come from a local file the user supplies
(``weights=PATH``: a timm state dict as ``.safetensors`` or a PyTorch file loaded with
``weights_only=True``; timm's own ``checkpoint_filter_fn`` maps other layouts and resamples the
position embedding to ``image_size``). ``weights="random"`` gives random weights, for tests.

``embed`` = patch embedding + class token + position embedding (+ timm's ``norm_pre``): boundary 0,
(B, tokens, dim); ``blocks[i]`` = timm's ``blocks[i]``; ``pool`` = the final norm + timm's pooling
(the CLS token for ViT-B/16, as Transformaly's pretrained feature). Normalisation is the model's
own (``pretrained_cfg``: mean = std = 0.5 for ``vit_base_patch16_384.orig_in21k_ft_in1k``, the
paper's backbone; ImageNet mean / std for DeiT).
"""

from __future__ import annotations

from pathlib import Path

import torch

from distilad.backbones.base import load_weights_into
from distilad.backbones.blocks import BlockTeacher
from distilad.errors import DistiladError


class ViTBlockTeacher(BlockTeacher):
    """Frozen timm ViT / DeiT split into its transformer blocks; pooled feature = CLS (or the
    model's own pooling) after the final norm."""

    def __init__(self, name: str, weights: str | Path | None = None, image_size: int = 224):
        import timm

        if weights is None:
            raise DistiladError(
                f"teacher {name} needs its weights from a local file: weights=PATH (a timm state "
                "dict, .safetensors or .pth; nothing is downloaded); efficientnet_lite0/1/2 work "
                "offline")
        try:
            model = timm.create_model(name, pretrained=False, num_classes=0, img_size=image_size)
        except (RuntimeError, TypeError) as e:  # unknown name, or not a ViT-like model
            raise DistiladError(f"unknown ViT teacher {name!r} ({e})") from e
        if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
            raise DistiladError(f"{name} is not a ViT / DeiT (no patch embedding and blocks)")
        from timm.models.vision_transformer import checkpoint_filter_fn

        wid = load_weights_into(model, weights, name, ("head",), convert=checkpoint_filter_fn)
        cfg = model.pretrained_cfg
        super().__init__(name, tuple(cfg.get("mean", (0.5,) * 3)), tuple(cfg.get("std", (0.5,) * 3)),
                         wid)
        self.model = model
        self.feature_dim = int(model.num_features)
        self.freeze()

    @property
    def blocks(self) -> torch.nn.Module:  # type: ignore[override]
        # the model's own blocks, not registered a second time (saved once, as model.blocks.*)
        return self.model.blocks

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.norm(last), pre_logits=True)
