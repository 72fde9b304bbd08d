"""AdaptiveMix: the mixing rule, its detached target, both losses at their minimum for an affine
network, gradients only through f(x_mix), seeding; its plug-in in the GAN step and the GAN
detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import distilad
from distilad.errors import DistiladError
from distilad.methods.edegan.model import EDEGAN
from distilad.modules.adaptivemix import AdaptiveMix, cosine_shrinkage, l2_normalise
from distilad.modules.gan import gan_losses, gan_step

W = {"w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0}


def _mixer(seed: int = 0, **kw) -> AdaptiveMix:
    return AdaptiveMix.seeded(seed, **kw)


def test_lambda_is_beta_distributed_in_unit_interval() -> None:
    lam = _mixer(per_sample=True).draw_lambda(20000).numpy()
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    # Beta(1, 1) = uniform: mean 1/2, variance 1/12
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / 12, abs=0.003)
    # Beta(0.2, 0.2) piles up near 0 and 1 (variance 1/(4 (2a+1)) = 0.179)
    peaked = _mixer(alpha=0.2, per_sample=True).draw_lambda(20000).numpy()
    assert peaked.var() == pytest.approx(0.25 / 1.4, abs=0.01)
    # per batch (the official code): one value for the whole batch, a new one each batch
    m = _mixer()
    a, b = m.draw_lambda(8), m.draw_lambda(8)
    assert (a == a[0]).all() and (b == b[0]).all() and a[0] != b[0]


def test_mix_is_a_convex_combination_with_a_permutation() -> None:
    x = torch.randn(16, 3, 4, 4)
    for per_sample in (False, True):
        m = _mixer(1, per_sample=per_sample).mix(x)
        assert sorted(m.perm.tolist()) == list(range(16))
        lam = m.lam.view(-1, 1, 1, 1)
        torch.testing.assert_close(m.x, lam * x + (1 - lam) * x[m.perm])
    again = _mixer(1, per_sample=True).mix(x)
    torch.testing.assert_close(again.x, m.x)  # same seed, same draws
    other = _mixer(2, per_sample=True).mix(x)
    assert not torch.equal(other.perm, m.perm)


def test_target_is_detached_and_noisy_by_sigma() -> None:
    f = torch.randn(4000, 8, requires_grad=True)
    m = _mixer(3).mix(torch.zeros(4000, 1))
    z = _mixer(3, sigma=0.05).target(f * 2, m)  # f * 2 carries a graph
    assert not z.requires_grad and z.grad_fn is None
    lam = m.lam.view(-1, 1)
    clean = (lam * f * 2 + (1 - lam) * (f * 2)[m.perm]).detach()
    assert (z - clean).std().item() == pytest.approx(0.05, rel=0.05)
    torch.testing.assert_close(_mixer(3, sigma=0.0).target(f, m),
                               (lam * f + (1 - lam) * f[m.perm]).detach())


class _Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)).view(-1, 5, 1)


def test_losses_are_at_their_minimum_for_an_affine_network() -> None:
    torch.manual_seed(0)
    f = _Affine()
    x = torch.randn(32, 3, 4)
    for per_sample in (False, True):
        m = _mixer(4, sigma=0.0, per_sample=per_sample)
        assert m.cosine_loss(f, x, f(x)).item() == pytest.approx(-1.0, abs=1e-5)
        assert m.mse_loss(f, x, f(x)).item() == pytest.approx(0.0, abs=1e-10)
    # a nonlinear network is not at the minimum, nor is the affine one with noise
    relu = nn.Sequential(_Affine(), nn.ReLU(), nn.Flatten(), nn.Linear(5, 5))
    assert _mixer(4, sigma=0.0).cosine_loss(relu, x, relu(x)).item() > -0.999
    assert _mixer(4, sigma=0.05).mse_loss(f, x, f(x)).item() > 1e-4


def test_gradients_reach_the_network_only_through_the_mixed_features() -> None:
    torch.manual_seed(1)
    f = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 4))
    x = torch.randn(10, 3, 4)
    with_graph = _mixer(5).cosine_loss(f, x, f(x))  # f(x) with its graph
    g1 = torch.autograd.grad(with_graph, list(f.parameters()))
    without = _mixer(5).cosine_loss(f, x, f(x).detach())
    g2 = torch.autograd.grad(without, list(f.parameters()))
    for a, b in zip(g1, g2, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b)
    # and the MSE form against a teacher: gradients into the student only
    teacher = nn.Linear(12, 4)
    loss = _mixer(6).mse_loss(f, x, l2_normalise(teacher(x.flatten(1))))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad.abs().max() > 0 for p in f.parameters())


def test_cosine_shrinkage_by_hand() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # cos = 1/sqrt(2) and -1: mean -(0.7071 - 1) / 2
    assert cosine_shrinkage(a, b).item() == pytest.approx(-(2**-0.5 - 1) / 2)


def test_gan_losses_add_the_terms_to_both_sides() -> None:
    """The GANomaly parts are unchanged; D gets w/2 (s_real + s_fake), G gets w s_fake, the
    terms reach the generator through the mixed reconstructions and stay finite."""
    torch.manual_seed(2)
    gan = EDEGAN(16, 1, 8, 4).train()
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    torch.manual_seed(3)
    off = gan_losses(gan, x, **W)
    torch.manual_seed(3)
    on = gan_losses(gan, x, **W, adaptivemix=_mixer(7, weight=2.0))
    assert off.shrinkage is None and off.generator is off.ganomaly_g
    assert on.ganomaly_g.item() == pytest.approx(off.generator.item(), rel=1e-6)
    assert on.ganomaly_d.item() == pytest.approx(off.discriminator.item(), rel=1e-6)
    s_real, s_fake = on.shrinkage
    assert -1.0 <= s_real.item() <= 1.0 and -1.0 <= s_fake.item() <= 1.0
    assert on.generator.item() == pytest.approx(on.ganomaly_g.item() + 2 * s_fake.item(),
                                                rel=1e-6)
    assert on.discriminator.item() == pytest.approx(
        on.ganomaly_d.item() + s_real.item() + s_fake.item(), rel=1e-6)
    g_params = list(gan.generator.parameters())
    grads = torch.autograd.grad(s_fake, g_params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in grads)
    assert torch.autograd.grad(s_real, g_params, allow_unused=True)[0] is None


def test_gan_step_with_adaptivemix_changes_the_update_and_reports_similarities() -> None:
    torch.manual_seed(4)
    a = EDEGAN(16, 1, 8, 4).train()
    b = EDEGAN(16, 1, 8, 4).train()
    b.load_state_dict(a.state_dict())
    x = torch.rand(8, 1, 16, 16) * 2 - 1

    def opts(g):
        return (torch.optim.SGD(g.generator.parameters(), lr=0.1),
                torch.optim.SGD(g.discriminator.parameters(), lr=0.1))

    torch.manual_seed(5)
    ra = gan_step(a, *opts(a), x, W)
    torch.manual_seed(5)
    rb = gan_step(b, *opts(b), x, W, adaptivemix=_mixer(8))
    assert ra.similarity is None
    assert len(rb.similarity) == 2 and all(-1 <= s <= 1 for s in rb.similarity)
    assert rb.loss_d == pytest.approx(ra.loss_d, rel=1e-6)  # GANomaly's part, before the step
    for side in ("generator", "discriminator"):
        pa = torch.cat([p.detach().flatten() for p in getattr(a, side).parameters()])
        pb = torch.cat([p.detach().flatten() for p in getattr(b, side).parameters()])
        assert not torch.allclose(pa, pb), side


def _digits(shared_data, n: int) -> np.ndarray:
    from distilad.data.novelty import load_split

    x, y = load_split("mnist", "train", root=shared_data)
    return x[y == 0][:n]


KW = dict(width=4, nz=8, batch_size=16, progress=False, device="cpu", seed=0, image_size=16)


def test_edegan_with_adaptivemix(shared_data) -> None:
    normal = _digits(shared_data, 48)
    off = distilad.create_detector("edegan", epochs=2, **KW).fit(normal, validation=None)
    on = distilad.create_detector("edegan", epochs=2, adaptivemix=True, adaptivemix_weight=0.5,
                                  **KW).fit(normal, validation=None)
    assert "adaptivemix" not in off.fit_info
    info = on.fit_info["adaptivemix"]
    assert {k: info[k] for k in ("weight", "alpha", "sigma", "lambda")} == {
        "weight": 0.5, "alpha": 1.0, "sigma": 0.05, "lambda": "per batch"}
    sims = np.array(info["similarity_real_fake"])
    assert sims.shape == (2, 2) and np.isfinite(sims).all() and (np.abs(sims) <= 1).all()
    hist = np.array(on.fit_info["loss_history_g_d"])
    assert hist.shape == (2, 2) and np.isfinite(hist).all()
    assert not np.allclose(hist, off.fit_info["loss_history_g_d"])
    test = _digits(shared_data, 60)[48:]
    assert np.isfinite(on.score(test).image_scores).all()
    again = distilad.create_detector("edegan", epochs=2, adaptivemix=True,
                                     adaptivemix_weight=0.5, **KW).fit(normal, validation=None)
    assert again.fit_info["loss_history_g_d"] == on.fit_info["loss_history_g_d"]  # seeded


def test_pkdgan_with_adaptivemix_every_phase(shared_data, tmp_path) -> None:
    normal = _digits(shared_data, 32)
    kw = dict(KW, student_width=2, student_nz=4, teacher_epochs=1, step1_epochs=1,
              step2_epochs=1, teacher_cache=str(tmp_path))
    det = distilad.create_detector("pkdgan", adaptivemix=True, **kw).fit(normal, validation=None)
    sims = det.fit_info["adaptivemix"]["similarity_real_fake"]
    assert [len(sims[k][0]) for k in ("teacher", "step 1", "step 2")] == [2, 2, 4]
    assert np.isfinite(np.concatenate([np.ravel(v) for v in sims.values()])).all()
    assert np.isfinite(det.score(normal[:8]).image_scores).all()
    # a teacher trained with AdaptiveMix is cached apart from one trained without
    distilad.create_detector("pkdgan", **kw).fit(normal, validation=None)
    assert len(list(tmp_path.glob("pkdgan-teacher-*.safetensors"))) == 2


@pytest.mark.parametrize("bad", [{"adaptivemix": "yes"}, {"adaptivemix_weight": -1.0}])
def test_bad_adaptivemix_arguments_are_refused(bad) -> None:
    for method in ("edegan", "pkdgan"):
        with pytest.raises(DistiladError, match="adaptivemix"):
            distilad.create_detector(method, progress=False, **bad)


# --- students: RD and Transformaly ---------------------------------------------------------------


def test_unit_positions_and_student_term_by_hand() -> None:
    from distilad.modules.adaptivemix import Mix, student_term, unit_positions

    maps = torch.tensor([[3.0, 0.0], [4.0, 2.0]]).view(1, 2, 1, 2)  # positions (3, 4), (0, 2)
    torch.testing.assert_close(unit_positions(maps).flatten(),
                               torch.tensor([0.6, 0.0, 0.8, 1.0]))
    tokens = torch.tensor([[[3.0, 4.0]]])  # (B, N, C)
    torch.testing.assert_close(unit_positions(tokens), torch.tensor([[[0.6, 0.8]]]))
    # lam 1 (no mixing), no noise: the term is the MSE of the unit vectors, per level
    mix = Mix(maps, torch.ones(1), torch.zeros(1, dtype=torch.long))
    s = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 2, 1, 2)
    (term,) = student_term(_mixer(sigma=0.0), mix, [s], [maps])
    # position 1: (0 - 0.6)^2 + (1 - 0.8)^2; position 2: (1 - 0)^2 + (0 - 1)^2; mean of 4
    assert term.item() == pytest.approx((0.36 + 0.04 + 1 + 1) / 4)
    (raw,) = student_term(_mixer(sigma=0.0), mix, [s], [maps], normalise=False)
    # channel 0: (0 - 3)^2 + (1 - 0)^2; channel 1: (1 - 4)^2 + (0 - 2)^2
    assert raw.item() == pytest.approx((9 + 1 + 9 + 4) / 4)


def test_training_images_and_epoch_means() -> None:
    from distilad.data import as_image_set
    from distilad.modules.adaptivemix import EpochMeans, TrainingImages

    imgs = as_image_set(np.random.default_rng(0).random((5, 20, 20, 3), dtype=np.float32))
    idx = torch.tensor([4, 0, 2])
    loaded = TrainingImages(imgs, 16)
    per_batch = TrainingImages(imgs, 16, max_bytes=0)
    assert loaded.all is not None and per_batch.all is None
    torch.testing.assert_close(loaded(idx), per_batch(idx))
    assert loaded(idx).shape == (3, 3, 16, 16)
    m = EpochMeans(2)
    for v, n in ((1.0, 4), (4.0, 2), (0.5, 4), (0.5, 4)):
        m.add(v, n)
    assert m.history() == pytest.approx([2.0, 0.5])


def _rgb(n: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(1).random((n, size, size, 3), dtype=np.float32)


RD_KW = dict(backbone="efficientnet_lite0", image_size=32, epochs=2, batch_size=4, ocbe_blocks=1,
             decoder_blocks=[1, 1, 1], progress=False, device="cpu", seed=0)


def test_rd_with_adaptivemix() -> None:
    """Weight 0: RD's own loss history and the scores are those of a fit without AdaptiveMix
    (the term is logged apart; BatchNorm statistics recomputed on normal batches); weight 1
    changes the student."""
    train, test = _rgb(13), _rgb(17)[13:]
    off = distilad.create_detector("rd", **RD_KW).fit(train, validation=None)
    zero = distilad.create_detector("rd", adaptivemix=True, adaptivemix_weight=0.0,
                                    **RD_KW).fit(train, validation=None)
    on = distilad.create_detector("rd", adaptivemix=True, **RD_KW).fit(train, validation=None)
    assert "adaptivemix" not in off.fit_info
    np.testing.assert_allclose(zero.fit_info["loss_history"], off.fit_info["loss_history"],
                               rtol=1e-4)
    np.testing.assert_allclose(zero.score(test).image_scores, off.score(test).image_scores,
                               rtol=1e-5)
    info = on.fit_info["adaptivemix"]
    assert info["weight"] == 1.0 and info["embedding"].startswith("each position")
    terms = np.array(info["loss_history"])
    assert terms.shape == (2,) and np.isfinite(terms).all() and (terms > 0).all()
    assert not np.allclose(on.score(test).image_scores, off.score(test).image_scores)


def test_transformaly_with_adaptivemix() -> None:
    kw = dict(image_size=32, blocks=[1, 4], epochs=1, batch_size=4, progress=False, device="cpu",
              seed=0)
    train, test = _rgb(13), _rgb(17)[13:]
    off = distilad.create_detector("transformaly", **kw).fit(train, validation=None)
    for cached_mb in (2048.0, 0.0):  # boundaries kept in memory / a teacher pass per batch
        zero = distilad.create_detector("transformaly", adaptivemix=True, adaptivemix_weight=0.0,
                                        max_cached_mb=cached_mb, **kw).fit(train, validation=None)
        np.testing.assert_allclose(zero.fit_info["loss_history"], off.fit_info["loss_history"],
                                   rtol=1e-4)
        np.testing.assert_allclose(zero.score(test).image_scores, off.score(test).image_scores,
                                   rtol=1e-4)
    on = distilad.create_detector("transformaly", adaptivemix=True, **kw).fit(train,
                                                                             validation=None)
    info = on.fit_info["adaptivemix"]
    assert info["embedding"].startswith("the features as they are")
    terms, own = info["loss_history"], on.fit_info["loss_history"]
    # raw features: the term is on the scale of the distillation loss (within 10x)
    assert len(terms) == 1 and 0.1 * own[0] < terms[0] < 10 * own[0], (terms, own)
    assert not np.allclose(on.score(test).image_scores, off.score(test).image_scores)
    # the pretrained-feature density does not involve the student: unchanged
    off.score(test)
    on.score(test)
    np.testing.assert_allclose(on.alternative_scores["pretrained"],
                               off.alternative_scores["pretrained"], rtol=1e-6)
