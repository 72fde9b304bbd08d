"""Training in several processes: ``torchrun`` + DistributedDataParallel (rd, transformaly).

    torchrun --nproc_per_node=2 -m distilad.cli fit rd data/mvtec_ad/bottle -o bottle.distilad

Each process is one *rank* of a process group (backend ``nccl`` on CUDA, ``gloo`` on the CPU).
The design keeps the arithmetic of a one-process fit with the same ``batch_size`` and ``seed``:

- every rank draws the same seeded batch order; each batch of ``batch_size`` images (the *global*
  batch) is cut into ``world_size`` consecutive parts whose sizes differ by at most one, and rank
  ``r`` trains on part ``r`` (:func:`shard_batch`);
- each rank's loss (a mean over its part) is weighted by ``world_size * n_part / n_batch``, so
  that DDP's average of the ranks' gradients is the gradient of the global batch's mean loss;
- BatchNorm layers normalise with the statistics of the global batch (:class:`GlobalBatchNorm`,
  two differentiable all-reduces per layer and step). ``torch.nn.SyncBatchNorm`` would be the
  usual choice but DDP accepts it on GPUs only and it does not cover timm's ``BatchNormAct2d``
  (Transformaly's Lite clones), so one implementation serves every device;
- the epoch losses are summed over the ranks, so ``loss_history`` is the one-process figure.

So a multi-process fit equals a one-process fit up to the order of floating-point sums. Every
rank computes the (frozen) teacher's features of the whole training set once; the student's
epochs are what is split. After training, rank 0 alone calibrates, validates and writes the
model; the detectors of the other ranks stay unfitted and they write nothing.

In Python: call ``torch.distributed.init_process_group`` on every rank (or run under
``torchrun`` and use :func:`process_group_from_env`), then ``det.fit(...)`` on every rank.
Not supported (refused with one line): the GAN methods and ``adaptivemix=True``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from distilad.errors import DistiladError

#: methods whose training loop runs under DistributedDataParallel.
SUPPORTED_METHODS = ("rd", "transformaly")


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) unless a process group of more than one
    process is initialised."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    """Whether this process trains as one of several (a process group of 2+ is initialised)."""
    return rank_and_world()[1] > 1


def is_main_process() -> bool:
    """True in a one-process run and on rank 0 of a multi-process one."""
    return rank_and_world()[0] == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by ``torchrun`` (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def env_rank() -> int:
    """``RANK`` as set by ``torchrun`` (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0") or 0)


@contextmanager
def process_group_from_env(device: torch.device) -> Iterator[None]:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1) for
    the duration of the block, with ``nccl`` for a CUDA ``device`` (each rank on
    ``cuda:LOCAL_RANK``) and ``gloo`` for the CPU; nothing outside ``torchrun`` or when a group is
    already initialised."""
    import torch.distributed as dist

    if env_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield
        return
    if not dist.is_available():
        raise DistiladError("this PyTorch build has no torch.distributed: run without torchrun")
    if device.type == "cuda":
        if device.index is not None:
            raise DistiladError(f"under torchrun leave --device at auto or cuda (each process uses "
                                f"cuda:LOCAL_RANK), got {device}")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    elif device.type == "cpu":
        if not dist.is_gloo_available():
            raise DistiladError("this PyTorch build has no gloo backend for multi-process training "
                                "on the CPU: run without torchrun")
        backend = "gloo"
    else:
        raise DistiladError(f"multi-process training runs on CUDA (nccl) or the CPU (gloo), not "
                            f"on {device.type}; pass --device cpu or run without torchrun")
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def check_method(method: str) -> None:
    """Refuse a multi-process fit of a method whose training does not run under DDP."""
    if is_distributed() and method not in SUPPORTED_METHODS:
        raise DistiladError(f"{method} cannot be trained in several processes (torchrun); only "
                            f"{', '.join(SUPPORTED_METHODS)} can: run it as one process")


def refuse(what: str) -> None:
    """Refuse an option that multi-process training does not support (one line)."""
    if is_distributed():
        raise DistiladError(f"{what} is not supported in multi-process training (torchrun) yet; "
                            f"train in one process")


def fit_info() -> dict[str, Any]:
    """What ``fit_info`` records of a multi-process fit; empty for one process."""
    import torch.distributed as dist

    _, world = rank_and_world()
    if world == 1:
        return {}
    return {"distributed": {"processes": world, "backend": str(dist.get_backend())}}


# --- batches and losses ---------------------------------------------------------------------------
def shard_batch(idx: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s part of the global batch ``idx``: ``world`` consecutive parts whose sizes
    differ by at most one (the first ones larger), in order."""
    return torch.tensor_split(idx, world)[rank]


def check_batch_size(batch_size: int) -> None:
    """Every rank needs at least one image of every full batch."""
    _, world = rank_and_world()
    if batch_size < world:
        raise DistiladError(f"batch_size {batch_size} is smaller than the number of processes "
                            f"({world}): each process trains on its part of every batch; use "
                            f"batch_size >= {world} or fewer processes")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """``values`` summed over the ranks (float64), in every rank; unchanged in one process."""
    import torch.distributed as dist

    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


# --- the student under DDP ------------------------------------------------------------------------
def wrap(module: nn.Module) -> nn.Module:
    """``module`` for training: itself in one process; in several, its BatchNorm layers replaced
    (in place) by :class:`GlobalBatchNorm` sharing their tensors, wrapped in
    DistributedDataParallel. Call the returned module in the loss; :func:`unwrap` after training."""
    if not is_distributed():
        return module
    _replace_batchnorm(module)
    return nn.parallel.DistributedDataParallel(module)


def unwrap(module: nn.Module) -> None:
    """Put back the BatchNorm layers :func:`wrap` replaced (same tensors, original classes)."""
    for parent, name, child in list(_children(module)):
        if isinstance(child, GlobalBatchNorm):
            setattr(parent, name, child.original)


def _children(module: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    for parent in module.modules():
        for name, child in parent.named_children():
            yield parent, name, child


def _replace_batchnorm(module: nn.Module) -> None:
    for parent, name, child in list(_children(module)):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            if type(child) not in _KNOWN_BATCHNORMS and type(child).__name__ != "BatchNormAct2d":
                raise DistiladError(f"multi-process training cannot keep {type(child).__name__} "
                                    f"layers on global batch statistics; train in one process")
            setattr(parent, name, GlobalBatchNorm(child))


_KNOWN_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm layer (``nn.BatchNorm1d/2d/3d`` or timm's ``BatchNormAct2d``) whose
    training-mode statistics are those of the global batch of all ranks.

    Built from ``original``, whose weight, bias and running statistics it shares (updated in
    place as BatchNorm does: momentum, unbiased running variance); the activation of a
    ``BatchNormAct2d`` follows the normalisation. Mean and variance come from two all-reduces
    (sum and count, then the centred sum of squares: the two-pass formula, as exact as one
    process's); their backward sums the gradients of the statistics over the ranks, as one
    process's BatchNorm backward does."""

    def __init__(self, original: nn.modules.batchnorm._BatchNorm):
        super().__init__(original.num_features, original.eps, original.momentum, original.affine,
                         original.track_running_stats)
        self.weight, self.bias = original.weight, original.bias
        self.running_mean, self.running_var = original.running_mean, original.running_var
        self.num_batches_tracked = original.num_batches_tracked
        # outside the module tree: parameters are not listed twice; unwrap puts it back
        self.__dict__["original"] = original
        self.after = nn.Sequential(original.drop, original.act) if hasattr(original, "act") \
            else nn.Identity()
        self.train(original.training)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        self.original._check_input_dim(input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            self.original.train(self.training)
            return self.original(x)
        all_reduce = _AllReduceSum.apply
        self._check_input_dim(x)
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        count_local = x.new_tensor([x.numel() // x.shape[1]])
        summed = all_reduce(torch.cat([x.sum(dims), count_local]))
        count = summed[-1].detach()
        mean = summed[:-1] / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                          else self.momentum)
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        return self.after(y)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's input is the sum of the
    ranks' output gradients (each rank's output feeds its own loss)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = grad.clone()
        dist.all_reduce(out)
        return out
