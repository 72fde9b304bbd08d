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


def _trained_bn_student() -> torch.nn.Module:
    """A small RD student whose BatchNorms hold non-trivial statistics and affine terms."""
    from distilad.methods.rd.model import Student

    torch.manual_seed(0)
    student = Student((8, 12, 16), ocbe_blocks=1, decoder_blocks=(1, 2, 1), signed_features=True)
    for m in student.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return student.eval()


def test_fold_batchnorm_keeps_outputs_and_removes_every_batchnorm() -> None:
    from distilad.modules.batchnorm import fold_batchnorm

    student = _trained_bn_student()
    feats = [torch.randn(2, 8, 32, 32), torch.randn(2, 12, 16, 16), torch.randn(2, 16, 8, 8)]
    before = {k: v.clone() for k, v in student.state_dict().items()}
    folded = fold_batchnorm(student)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    assert n_bn > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        for a, b in zip(student(feats), folded(feats), strict=True):
            assert a.abs().max() > 0.1
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for k, v in student.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k]), k


def test_rd_scores_with_a_folded_student_that_follows_weight_changes(tmp_path) -> None:
    from distilad.methods.rd.model import anomaly_map

    det = distilad.create_detector("rd", image_size=64, epochs=1, progress=False, device="cpu")
    det._build()
    det.student.eval()
    x = torch.rand(2, 3, 64, 64)

    def direct() -> torch.Tensor:
        t = det.teacher(x)
        return anomaly_map(t, det.student(t), 64, float(det.params["sigma"]))

    with torch.no_grad():
        first = det.map_tensor(x)
        torch.testing.assert_close(first, direct(), rtol=1e-4, atol=1e-5)
        for p in det.student.parameters():  # a weight change must not be scored stale
            p.mul_(1.5)
        second = det.map_tensor(x)
        torch.testing.assert_close(second, direct(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(first, second, rtol=1e-3)
