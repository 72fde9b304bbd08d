"""Transformaly's student: one freshly initialised clone per teacher block used.

Clone i reads the teacher's input to block i (boundary i) and regresses the teacher's output of
block i (boundary i + 1), on every token / position. The clones are independent of one another:
none sees another clone's output, so each learns its own block's map on normal data only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from distilad.backbones.blocks import BlockTeacher
from distilad.methods.transformaly.density import Gaussian, GaussianScorer, Whitening
from distilad.modules.scoring import ScoringNet


def boundaries_needed(blocks: Sequence[int]) -> tuple[int, ...]:
    """Teacher boundaries a student of ``blocks`` reads or regresses: i and i + 1 for each."""
    return tuple(sorted({j for i in blocks for j in (i, i + 1)}))


class CloneStudent(nn.Module):
    """``clones[k]`` has teacher block ``block_ids[k]``'s architecture and fresh weights."""

    def __init__(self, teacher: BlockTeacher, blocks: Sequence[int]):
        super().__init__()
        self.block_ids = tuple(int(i) for i in blocks)
        self.clones = nn.ModuleList([teacher.clone_block(i) for i in self.block_ids])

    def forward(self, boundaries: Mapping[int, torch.Tensor]) -> list[torch.Tensor]:
        """{j: teacher boundary j} -> one output per clone (the prediction of boundary i + 1)."""
        return [clone(boundaries[i]) for i, clone in zip(self.block_ids, self.clones, strict=True)]


def block_mse(student: Sequence[torch.Tensor], boundaries: Mapping[int, torch.Tensor],
              block_ids: Sequence[int]) -> torch.Tensor:
    """(B, n_blocks): per image and block, the mean over tokens / positions and channels of the
    squared difference between the clone's output and the teacher's block output."""
    cols = [(s - boundaries[i + 1]).pow(2).flatten(1).mean(1)
            for s, i in zip(student, block_ids, strict=True)]
    return torch.stack(cols, dim=1)


def distillation_loss(student: Sequence[torch.Tensor], boundaries: Mapping[int, torch.Tensor],
                      block_ids: Sequence[int]) -> torch.Tensor:
    """Mean over images and blocks of :func:`block_mse`: for blocks of equal shape (a ViT) this is
    the official ``nn.MSELoss`` of the stacked block outputs."""
    return block_mse(student, boundaries, block_ids).mean()


class TransformalyScoringNet(ScoringNet):
    """Transformaly's scoring path in one module (for ONNX export), as ``Transformaly._score``:
    teacher -> (pooled feature, block boundaries) -> clones -> per-block MSE vector; score =
    -(log-likelihood of the whitened pooled feature + log-likelihood of the MSE vector). The
    densities run in float64 (the Gaussians in :class:`GaussianScorer` form). Input (N, 3, S, S)
    in [0, 1]; returns (scores (N,) float64,)."""

    def __init__(self, teacher: BlockTeacher, student: CloneStudent, whitening: Whitening,
                 pretrained_density: Gaussian, ts_density: Gaussian, image_size: int):
        super().__init__(image_size, channels=3, has_maps=False)
        self.teacher = teacher
        self.student = student
        self.keep = boundaries_needed(student.block_ids)
        self.whitening = whitening
        self.pretrained_ll = GaussianScorer(pretrained_density)
        self.ts_ll = GaussianScorer(ts_density)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        pooled, boundaries = self.teacher(x, self.keep)
        mse = block_mse(self.student(boundaries), boundaries, self.student.block_ids)
        return (-(self.pretrained_ll(self.whitening(pooled)) + self.ts_ll(mse)),)
