"""The frozen teacher: a pretrained CNN that returns multi-scale feature maps."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

_Net = TypeVar("_Net", bound="FrozenNet")


class FrozenNet(nn.Module):
    """What every teacher (:class:`Teacher`, :class:`~distilad.backbones.blocks.BlockTeacher`)
    shares: a name and weights fingerprint (its :attr:`identity`), its own input normalisation
    (``mean``, ``std`` per channel, not saved) and frozen weights, always in eval mode."""

    def __init__(self, name: str, mean: tuple[float, ...], std: tuple[float, ...], weights_id: str):
        super().__init__()
        self.name = name
        self.weights_id = weights_id
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> the network's input scale."""
        return (x - self.mean) / self.std

    def freeze(self: _Net) -> _Net:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self: _Net, mode: bool = True) -> _Net:
        # a teacher always stays in eval mode (BatchNorm statistics are part of its knowledge)
        return super().train(False)

    @property
    def identity(self) -> str:
        """Teacher name + weights fingerprint, for cache keys and saved models."""
        return f"{self.name}@{self.weights_id}"


class Teacher(FrozenNet):
    """A frozen feature extractor with its own input normalisation.

    ``forward(x)`` takes images (B, 3, H, W) in [0, 1] and returns a list of feature maps, one per
    tap, shallow to deep, e.g. ``[(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16)]``.
    Subclasses implement ``features(x_normalised)`` and call :meth:`freeze` last.

    Convolutions run channels-last (weights from :meth:`freeze`, activations from ``forward``):
    on a CPU that is 1.3-1.5x faster at batch 1 and 16 than the default layout for the
    EfficientNet-Lite taps (benchmarks/speed_rd.py); maps come back channels-last, with the
    same shapes and values (to float rounding).
    """

    #: channels and strides of the returned maps, shallow to deep.
    channels: tuple[int, ...]
    strides: tuple[int, ...]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def freeze(self: _Net) -> _Net:
        self.to(memory_format=torch.channels_last)
        return super().freeze()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(self.normalise(x).contiguous(memory_format=torch.channels_last))


def file_fingerprint(path: str | Path) -> str:
    """sha256 of a weights file (first 16 hex digits); files are read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors or a PyTorch file, never unpickling code (weights_only)."""
    from distilad.errors import DistiladError

    path = Path(path)
    if not path.is_file():
        raise DistiladError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # garbage, truncated, or a pickle that is not plain tensors
        first = (str(e).strip().splitlines() or [""])[0]
        raise DistiladError(f"cannot read weights file {path} ({type(e).__name__}: {first})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise DistiladError(f"weights file {path} holds a {type(sd).__name__}, not a state dict")
    return sd


def load_weights_into(model: nn.Module, weights: str | Path, name: str,
                      drop_prefixes: tuple[str, ...] = (),
                      convert: Callable[[dict[str, torch.Tensor], nn.Module],
                                        dict[str, torch.Tensor]] | None = None) -> str:
    """Load the weights file ``weights`` into the timm network ``model`` (called ``name`` in
    messages) and return its fingerprint; ``"random"`` leaves the model's random weights and
    returns ``"random"``. ``convert(state_dict, model)`` maps another layout first; keys starting
    with ``drop_prefixes`` (a classifier head) are left out. DistiladError (one line) when the
    file does not fit the network: tensors of other shapes, or tensors missing."""
    from distilad.errors import DistiladError

    if str(weights) == "random":
        return "random"
    sd = load_state_dict_file(weights)
    if convert is not None:
        sd = convert(sd, model)
    sd = {k: v for k, v in sd.items() if not k.startswith(drop_prefixes)}
    try:
        missing, _ = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shapes of another network; torch's last line names one
        first = (str(e).strip().splitlines() or [""])[-1].strip()
        raise DistiladError(f"{weights}: does not fit {name} ({first})") from e
    if missing:
        raise DistiladError(f"{weights}: does not fit {name} (missing {missing[:3]} ...)")
    return file_fingerprint(weights)
