"""Precise BatchNorm statistics.

BatchNorm's running averages (momentum 0.1) follow the weights of the last few dozen steps; with
a high learning rate (RD's 0.005) they lag behind the final weights, and the evaluated model then
normalises with statistics of a network that no longer exists. Recomputing them once over the
training data with the final weights (an exact average) removes that error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


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


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` (in eval mode) with every ``BatchNorm2d`` that directly
    follows a ``Conv2d`` / ``ConvTranspose2d`` (the previous child registered in the same parent,
    which is how ``nn.Sequential`` and RD's bottlenecks are written) folded into that
    convolution by PyTorch's ``fuse_conv_bn_eval`` and replaced by ``nn.Identity``. Same outputs
    to float rounding, one pass less over every activation. ``module`` itself is not changed.

    Only for modules whose forward applies each such BatchNorm to that convolution's output
    alone (true of :mod:`distilad.methods.rd.model`; tests/test_modules.py checks it)."""
    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for prev, name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[prev], parent._modules[name]
            if (type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))):
                parent._modules[prev] = fuse_conv_bn_eval(
                    conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                parent._modules[name] = nn.Identity()
    return folded
