"""Precise BatchNorm statistics.

BatchNorm's running averages (momentum 0.1) follow the weights of the last few dozen steps; with
a high learning rate (RD's 0.005) they lag behind the final weights, and the evaluated model then
normalises with statistics of a network that no longer exists. Recomputing them once over the
training data with the final weights (an exact average) removes that error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn


@torch.no_grad()
def recompute_batchnorm(module: nn.Module, batches: Iterable, forward: Callable | None = None
                        ) -> int:
    """Reset every BatchNorm layer of ``module`` and recompute its running mean / variance as the
    exact average over ``batches`` (each passed to ``forward``, default ``module``), with no
    gradient and no weight change. Returns the number of BatchNorm layers updated."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = exact mean over the batches
    was_training = module.training
    module.train()
    fn = forward or module
    for batch in batches:
        fn(batch)
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    module.train(was_training)
    return len(bns)
