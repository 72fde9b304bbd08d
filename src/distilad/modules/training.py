"""The epoch loop shared by the distillation methods (rd, transformaly): seeded random batches,
a last batch of one skipped, one optimiser step per batch, the mean loss of each epoch. Under
``torchrun`` each process trains on its part of every batch (:mod:`distilad.distributed`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from distilad import distributed


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Start of each training batch over ``n`` samples; a last batch of one is skipped (BatchNorm
    in training mode cannot normalise a single sample)."""
    return [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2]


def train_epochs(model: nn.Module, opt: torch.optim.Optimizer,
                 batch_loss: Callable[[torch.Tensor], torch.Tensor], n: int, batch_size: int,
                 epochs: int, seed: int, desc: str, progress: bool,
                 after_step: Callable[[], object] | None = None, loss_digits: int = 5
                 ) -> list[float]:
    """Train ``model`` for ``epochs`` epochs over samples ``0..n-1``: each epoch a permutation
    drawn from a generator seeded with ``seed``, cut at :func:`batch_starts`; per batch
    ``batch_loss(indices)`` (a scalar tensor) is minimised by one step of ``opt``, then
    ``after_step()`` (e.g. a learning-rate schedule's step). Returns the mean loss per epoch
    (weighted by batch size); the progress bar (stderr, off unless ``progress``) shows the last
    one with ``loss_digits`` decimals.

    In a multi-process fit (``model`` wrapped by :func:`distilad.distributed.wrap`) every rank
    draws the same permutation and ``batch_loss`` gets this rank's part of each batch; its loss
    is weighted so that DDP's gradient average is the whole batch's, a batch with fewer images
    than processes is skipped by all, and the epoch means are over all ranks' images."""
    rank, world = distributed.rank_and_world()
    if world > 1:
        distributed.check_batch_size(batch_size)
    gen = torch.Generator().manual_seed(int(seed))
    starts = batch_starts(n, batch_size)
    history: list[float] = []
    bar = tqdm(range(int(epochs)), desc=desc, unit="epoch", disable=not progress or rank != 0)
    for _ in bar:
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in starts:
            idx = perm[start:start + batch_size]
            weight = 1.0
            if world > 1:
                if len(idx) < world:
                    continue
                part = distributed.shard_batch(idx, rank, world)
                weight, idx = world * len(part) / len(idx), part
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            (loss if world == 1 else loss * weight).backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(idx)
            count += len(idx)
        if world > 1:
            total, count = distributed.all_reduce_sum([total, count])
        history.append(total / max(count, 1))
        bar.set_postfix(loss=f"{history[-1]:.{loss_digits}f}")
    return history
