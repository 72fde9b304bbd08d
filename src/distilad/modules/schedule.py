"""Learning-rate schedules shared by the methods."""

from __future__ import annotations

import math

import torch

from distilad.errors import DistiladError

LR_SCHEDULES = ("constant", "cosine")


def check_lr_schedule(name: str) -> None:
    """Raise a clear error for an unknown schedule name."""
    if name not in LR_SCHEDULES:
        raise DistiladError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {name!r}")


def make_lr_schedule(optimizer: torch.optim.Optimizer, name: str, total_steps: int
                     ) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler: ``constant`` keeps the learning rate; ``cosine`` decays it from the
    initial value to 0 over ``total_steps`` optimiser steps (half a cosine period), so the last
    weights are not those of a noisy high-lr step. Call ``.step()`` after each ``optimizer.step()``."""
    check_lr_schedule(name)
    total = max(int(total_steps), 1)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
