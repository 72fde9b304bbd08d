"""Shared training modules: learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

import distilad
from distilad.errors import DistiladError
from distilad.modules.schedule import make_lr_schedule


def _lrs(name: str, total: int, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched = make_lr_schedule(opt, name, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out + [opt.param_groups[0]["lr"]]


def test_cosine_decays_to_zero_by_hand() -> None:
    lrs = _lrs("cosine", 4, 4)
    # 0.2 * (1 + cos(pi * k / 4)) / 2 for k = 0..4
    want = [0.2 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]
    assert lrs == pytest.approx(want)
    assert lrs[2] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.0)
    assert _lrs("constant", 4, 4) == pytest.approx([0.2] * 5)


def test_unknown_schedule_is_a_clear_error() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(DistiladError, match="lr_schedule must be one of constant, cosine"):
        make_lr_schedule(opt, "linear", 10)
    # a detector refuses it when it is made, before any data is read
    with pytest.raises(DistiladError, match="lr_schedule must be one of 'constant', 'cosine'"):
        distilad.create_detector("rd", lr_schedule="step", backbone="efficientnet_lite0",
                                 image_size=32, epochs=1, progress=False, device="cpu")
