"""EDE-GAN and P-KDGAN: networks, losses, scores, FLOPs ratios, training and persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import distilad
from distilad import metrics
from distilad.errors import DistiladError
from distilad.methods.edegan.model import EDEGAN, Generator, count_flops
from distilad.methods.pkdgan.detector import distillation_loss
from distilad.modules.gan import latent_score, reconstruction_score


def _digits(shared_data, cls: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n training images of class ``cls`` and a balanced small test set (MNIST)."""
    from distilad.data.novelty import load_split

    xtr, ytr = load_split("mnist", "train", root=shared_data)
    xte, yte = load_split("mnist", "test", root=shared_data)
    normal = xtr[ytr == cls][:n]
    pos = np.where(yte != cls)[0][:100]
    neg = np.where(yte == cls)[0][:100]
    idx = np.concatenate([neg, pos])
    return normal, xte[idx], (yte[idx] != cls).astype(int)


@pytest.mark.parametrize("size,nc", [(32, 1), (32, 3), (64, 3)])
def test_generator_shapes(size: int, nc: int) -> None:
    g = Generator(size, nc, nz=16, width=8)
    x_hat, z, z_hat = g(torch.rand(2, nc, size, size) * 2 - 1)
    assert x_hat.shape == (2, nc, size, size)
    assert z.shape == z_hat.shape == (2, 16, 1, 1)
    assert x_hat.abs().max() <= 1.0


def test_bad_image_size() -> None:
    with pytest.raises(ValueError, match="power-of-two"):
        Generator(28, 1, 16, 8)


def test_scores_by_hand() -> None:
    z = torch.tensor([[1.0, 2.0], [0.0, 0.0]]).view(2, 2, 1, 1)
    zh = torch.tensor([[0.0, 0.0], [0.0, 3.0]]).view(2, 2, 1, 1)
    assert latent_score(z, zh).tolist() == pytest.approx([2.5, 4.5])
    x = torch.zeros(1, 1, 2, 2)
    assert reconstruction_score(x, torch.full((1, 1, 2, 2), 0.5)).tolist() == pytest.approx([0.5])


def test_flops_ratio_by_width() -> None:
    t = count_flops(Generator(32, 1, 100, 64), 32, 1)
    s = count_flops(Generator(32, 1, 16, 2), 32, 1)
    # conv FLOPs grow with width squared: the 64 -> 2 student is >300x cheaper (MNIST target)
    assert t / s > 300
    # the first encoder conv alone: 2 * (16*16 outputs) * 64 ch * (1*4*4) MACs
    first = 2 * 16 * 16 * 64 * 16
    assert t > 3 * first


def test_distillation_loss_by_hand() -> None:
    proj = torch.nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    zs = torch.ones(1, 2, 1, 1)
    s = (torch.zeros(1, 1, 4, 4), zs, zs)
    t = (torch.ones(1, 1, 4, 4), torch.zeros(1, 2, 1, 1), 3 * zs)
    p = {"w_kd_z": 1.0, "w_kd_zhat": 2.0, "w_kd_x": 10.0}
    # 1 * mean((1-0)^2) + 2 * mean((1-3)^2) + 10 * mean(|0-1|) = 1 + 8 + 10
    assert distillation_loss(s, t, proj, p).item() == pytest.approx(19.0)


def test_unknown_schedule() -> None:
    # refused when the detector is made, before any data is read
    with pytest.raises(DistiladError, match="schedule must be one of 'two-step'"):
        distilad.create_detector("pkdgan", schedule="three-step", progress=False)


def test_edegan_learns_digits(shared_data, tmp_path) -> None:
    """A few epochs on 300 MNIST zeros separate other digits (latent score), and save/load keeps
    the scores. (With DCGAN initialisation the latent score is inverted for the first ~100
    updates of so small a net: 8 epochs at batch 16 are ~136 updates.)"""
    normal, test, labels = _digits(shared_data, 0, 300)
    det = distilad.create_detector("edegan", epochs=8, width=16, nz=32, batch_size=16,
                                   progress=False, device="cpu", seed=0)
    det.fit(normal)
    assert det.params["channels"] == 1
    assert det.fit_info["epochs"] == len(det.fit_info["loss_history_g_d"]) == 8
    assert det.fit_info["discriminator_resets"] == 0
    res = det.score(test)
    auc = metrics.auroc(labels, res.image_scores)
    assert auc > 0.8, auc
    assert res.anomaly_maps is None
    assert set(det.alternative_scores) == {"reconstruction"}
    det.save(tmp_path / "m.distilad")
    again = distilad.load_detector(tmp_path / "m.distilad", device="cpu")
    np.testing.assert_allclose(again.score(test).image_scores, res.image_scores, rtol=1e-5)


@pytest.mark.parametrize("schedule", ["two-step", "alone"])
def test_pkdgan_schedules(shared_data, schedule: str) -> None:
    normal, test, labels = _digits(shared_data, 0, 200)
    det = distilad.create_detector("pkdgan", schedule=schedule, width=16, nz=32, student_width=2,
                                   student_nz=8, teacher_epochs=2, step1_epochs=1, step2_epochs=1,
                                   batch_size=32, progress=False, device="cpu")
    det.fit(normal)
    info = det.fit_info
    assert info["flops_ratio"] > 10
    # epochs actually trained, per phase; the student always gets step1 + step2 epochs
    want = ({"teacher": 2, "step1": 1, "step2": 1, "alone": 0} if schedule == "two-step"
            else {"teacher": 0, "step1": 0, "step2": 0, "alone": 2})
    assert info["epochs_trained"] == want
    assert info["epochs"] == sum(want.values())
    assert ("teacher_loss" in info) == (schedule != "alone")
    assert ("step2_loss" in info) == (schedule == "two-step")
    res = det.score(test)
    assert np.isfinite(res.image_scores).all()
    assert ("teacher_latent" in det.alternative_scores) == (schedule != "alone")


def test_gan_state_is_saved(tmp_path) -> None:
    gan = EDEGAN(32, 1, 8, 4)
    assert any(k.startswith("discriminator.") for k in gan.state_dict())


def test_pkdgan_teacher_cache_gives_the_same_model(shared_data, tmp_path) -> None:
    """The second schedule loads the pretrained teacher from the cache instead of training it, and
    ends with exactly the scores of a run without the cache; a damaged entry is retrained."""
    normal, test, _ = _digits(shared_data, 1, 96)
    kw = dict(schedule="fixed", width=8, nz=16, student_width=2, student_nz=4, teacher_epochs=1,
              step1_epochs=1, step2_epochs=0, batch_size=32, progress=False, device="cpu", seed=3)
    plain = distilad.create_detector("pkdgan", **kw).fit(normal)
    cache = tmp_path / "teachers"
    first = distilad.create_detector("pkdgan", teacher_cache=str(cache), **kw).fit(normal)
    assert first.fit_info["teacher_from_cache"] is False
    files = list(cache.glob("pkdgan-teacher-*.safetensors"))
    assert len(files) == 1
    second = distilad.create_detector("pkdgan", teacher_cache=str(cache), **kw).fit(normal)
    assert second.fit_info["teacher_from_cache"] is True
    assert second.fit_info["teacher_loss"] == plain.fit_info["teacher_loss"]
    want = plain.score(test).image_scores
    np.testing.assert_allclose(second.score(test).image_scores, want, rtol=1e-5)
    # another seed is another teacher
    distilad.create_detector("pkdgan", teacher_cache=str(cache), **{**kw, "seed": 4}).fit(normal)
    assert len(list(cache.glob("pkdgan-teacher-*.safetensors"))) == 2
    files[0].write_bytes(b"not a safetensors file")
    third = distilad.create_detector("pkdgan", teacher_cache=str(cache), **kw).fit(normal)
    assert third.fit_info["teacher_from_cache"] is False
    np.testing.assert_allclose(third.score(test).image_scores, want, rtol=1e-5)


def test_channels_last_training_matches_and_is_undone(shared_data, tmp_path, monkeypatch) -> None:
    """On the CPU a width >= 8 net at batch >= 32 trains in channels-last order: same losses and
    scores as the default order up to rounding, and the fitted model is back in the default
    order (saving needs contiguous tensors)."""
    import distilad.methods.edegan.detector as edegan_detector
    from distilad.modules.gan import training_memory_format

    cpu = torch.device("cpu")
    assert training_memory_format(cpu, 8, 32) is torch.channels_last
    assert training_memory_format(cpu, 8, 16) is torch.contiguous_format
    assert training_memory_format(cpu, 3, 64) is torch.contiguous_format
    normal, test, _ = _digits(shared_data, 2, 72)
    kw = dict(epochs=1, width=8, nz=8, batch_size=32, progress=False, device="cpu", seed=5)
    fast = distilad.create_detector("edegan", **kw).fit(normal, validation=None)
    assert all(q.is_contiguous() for q in fast.gan.parameters())
    monkeypatch.setattr(edegan_detector, "training_memory_format",
                        lambda *a: torch.contiguous_format)
    plain = distilad.create_detector("edegan", **kw).fit(normal, validation=None)
    np.testing.assert_allclose(fast.fit_info["loss_history_g_d"],
                               plain.fit_info["loss_history_g_d"], rtol=1e-3)
    want = plain.score(test).image_scores
    np.testing.assert_allclose(fast.score(test).image_scores, want, rtol=1e-2, atol=1e-6)
    fast.save(tmp_path / "m.distilad")


def test_validation_curve_by_epoch(shared_data) -> None:
    """validation_curve records one AUROC per epoch and phase; the last point is the model fit
    validates (same images, same score), and without the option nothing is recorded."""
    normal, _, _ = _digits(shared_data, 0, 200)
    others, _, _ = _digits(shared_data, 1, 40)
    kw = dict(width=8, nz=8, batch_size=32, progress=False, device="cpu", seed=0)
    det = distilad.create_detector("edegan", epochs=3, validation_curve=True, **kw)
    det.fit(normal, validation=others)
    curve = det.fit_info["validation_curve"]
    assert [(p["phase"], p["epoch"]) for p in curve] == [("edegan", 1), ("edegan", 2),
                                                          ("edegan", 3)]
    final = det.fit_info["validation"]["metrics"]["image_auroc"]
    assert curve[-1]["latent"] == pytest.approx(final, abs=1e-4)
    assert all(0.0 <= p["reconstruction"] <= 1.0 for p in curve)
    assert not hasattr(det, "_validation_during_fit") or det._validation_during_fit is None
    plain = distilad.create_detector("edegan", epochs=1, **kw).fit(normal, validation=others)
    assert "validation_curve" not in plain.fit_info
    pk = distilad.create_detector("pkdgan", schedule="two-step", student_width=2, student_nz=4,
                                  teacher_epochs=1, step1_epochs=2, step2_epochs=1,
                                  validation_curve=True, **kw)
    pk.fit(normal, validation=others)
    assert [(p["phase"], p["epoch"]) for p in pk.fit_info["validation_curve"]] == [
        ("teacher", 1), ("step 1", 1), ("step 1", 2), ("step 2", 1)]
    assert pk.fit_info["validation_curve"][-1]["latent"] == pytest.approx(
        pk.fit_info["validation"]["metrics"]["image_auroc"], abs=1e-4)
