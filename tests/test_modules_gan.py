"""Shared GAN training pieces: DCGAN initialisation, the collapsed-discriminator reset, one update
with one discriminator pass per batch against the two-pass reference, 28 -> 32 px resizing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from distilad.data import as_image_set
from distilad.methods.edegan.model import EDEGAN
from distilad.modules.gan import (
    dcgan_init_,
    gan_losses,
    gan_step,
    load_tensor,
    reset_if_collapsed,
    update,
)

W = {"w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0}


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def _check_dcgan_rule(module: nn.Module) -> None:
    """Every (transposed) convolution N(0, 0.02), BatchNorm weight N(1, 0.02), biases 0."""
    convs = _layers(module, nn.modules.conv._ConvNd)
    bns = _layers(module, nn.modules.batchnorm._BatchNorm)
    assert convs and bns
    for c in convs:
        w = c.weight.detach()
        if w.numel() >= 1000:  # enough values for a std estimate within 10 %
            assert abs(w.mean().item()) < 0.003, w.mean()
            assert 0.018 < w.std().item() < 0.022, (c, w.std())
        assert w.abs().max().item() < 0.02 * 7  # no value from another distribution
        assert c.bias is None or not c.bias.detach().any()
    bn_w = torch.cat([b.weight.detach() for b in bns])
    assert abs(bn_w.mean().item() - 1.0) < 0.003
    assert 0.017 < bn_w.std().item() < 0.023
    assert not torch.cat([b.bias.detach() for b in bns]).any()


def test_edegan_starts_with_the_dcgan_rule() -> None:
    torch.manual_seed(0)
    gan = EDEGAN(32, 1, 100, 64)
    _check_dcgan_rule(gan.generator)
    _check_dcgan_rule(gan.discriminator)
    # PyTorch's default (Kaiming-uniform, BN weight 1) fails the same check
    plain = nn.Sequential(nn.Conv2d(64, 128, 4), nn.BatchNorm2d(128))
    with pytest.raises(AssertionError):
        _check_dcgan_rule(plain)
    _check_dcgan_rule(dcgan_init_(plain))  # conv bias included


def test_reset_uses_the_same_rule() -> None:
    torch.manual_seed(1)
    d = EDEGAN(32, 3, 16, 32).discriminator
    with torch.no_grad():
        for p in d.parameters():
            p.fill_(3.0)
    before = [p.clone() for p in d.parameters()]
    assert reset_if_collapsed(d, 1e-3) is False  # not collapsed: untouched
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters(), strict=True))
    assert reset_if_collapsed(d, 5e-6) is True
    _check_dcgan_rule(d)


class _SureDiscriminator(nn.Module):
    """Logit = mean of a wide 3x3 convolution of the image: with weights 100 it tells +1 images
    from -1 images with certainty."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 128, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(128, track_running_stats=False)
        nn.init.constant_(self.conv.weight, 100.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.conv(x)
        return f.mean((1, 2, 3)), self.bn(f)


class _DarkGenerator(nn.Module):
    """x -> (an all -1 image, z, z_hat) whatever x is."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(-50.0))
        self.z = nn.Parameter(torch.zeros(1, 4, 1, 1))

    def forward(self, x: torch.Tensor):
        x_hat = torch.tanh(self.bias).expand_as(x)
        z = self.z.expand(len(x), -1, -1, -1)
        return x_hat, z, z * 0.5


def test_gan_step_resets_a_collapsed_discriminator() -> None:
    torch.manual_seed(2)
    gan = nn.Module()
    gan.generator, gan.discriminator = _DarkGenerator(), _SureDiscriminator()
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=1e-4)
    r = gan_step(gan, opt_g, opt_d, torch.ones(4, 1, 8, 8), W)
    assert r.loss_d < 1e-5 and r.d_reset
    w = gan.discriminator.conv.weight.detach()
    assert 0.017 < w.std().item() < 0.023 and abs(w.mean().item()) < 0.003
    assert torch.allclose(gan.discriminator.bn.weight.detach().mean(), torch.tensor(1.0), atol=0.01)


def _reference_step(gan, opt_g, opt_d, x):
    """The former two-pass computation: a generator step (its own discriminator passes on x and
    x_hat), then a discriminator step with fresh passes on x and x_hat.detach()."""
    x_hat, z, z_hat = gan.generator(x)
    _, f_real = gan.discriminator(x)
    _, f_fake = gan.discriminator(x_hat)
    loss_g = (W["w_adv"] * F.mse_loss(f_fake, f_real.detach()) + W["w_con"] * F.l1_loss(x_hat, x)
              + W["w_enc"] * F.mse_loss(z_hat, z))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    real, _ = gan.discriminator(x)
    fake, _ = gan.discriminator(x_hat.detach())
    loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                    + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    return loss_g.item(), loss_d.item()


def _sgd(gan):
    return (torch.optim.SGD(gan.generator.parameters(), lr=1.0),
            torch.optim.SGD(gan.discriminator.parameters(), lr=1.0))


def test_one_pass_update_matches_the_two_pass_reference() -> None:
    """Same losses, and (SGD with lr 1: new weights = old - gradient) the same gradients for
    every generator and discriminator weight, as the former computation on a fixed batch."""
    torch.manual_seed(3)
    gan = EDEGAN(32, 1, 16, 8).train()
    ref = copy.deepcopy(gan)
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    lg_ref, ld_ref = _reference_step(ref, *_sgd(ref), x)
    start = {k: v.clone() for k, v in gan.named_parameters()}
    r = gan_step(gan, *_sgd(gan), x, W)
    assert r.loss_g == pytest.approx(lg_ref, rel=1e-6)
    assert r.loss_d == pytest.approx(ld_ref, rel=1e-6)
    assert not r.d_reset
    ref_params = dict(ref.named_parameters())
    for name, p in gan.named_parameters():
        grad_new = start[name] - p.detach()
        grad_ref = start[name] - ref_params[name].detach()
        assert grad_ref.abs().max() > 0, name  # every weight is trained by its loss
        torch.testing.assert_close(grad_new, grad_ref, rtol=1e-4, atol=1e-7, msg=name)


def test_update_keeps_each_loss_on_its_own_side() -> None:
    """The discriminator's loss does not reach the generator (through x_hat) and the generator's
    loss does not reach the discriminator's weights."""
    torch.manual_seed(4)
    gan = EDEGAN(16, 1, 8, 4).train()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    opt_g, opt_d = _sgd(gan)
    losses = gan_losses(gan, x, **W)
    g_only = torch.autograd.grad(losses.generator, list(gan.generator.parameters()),
                                 retain_graph=True)
    d_only = torch.autograd.grad(losses.discriminator, list(gan.discriminator.parameters()),
                                 retain_graph=True)
    update(losses.generator, losses.discriminator, (opt_g,), (opt_d,))
    for p, g in zip(gan.generator.parameters(), g_only, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g)
    for p, g in zip(gan.discriminator.parameters(), d_only, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_28_px_images_are_resized_bilinearly_to_32_as_pil() -> None:
    """MNIST's 28 px become 32 px as in GANomaly (torchvision Resize = PIL bilinear), not padded:
    strokes touch the border region and values follow PIL's interpolation."""
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.random((28, 28)).astype(np.float32)
    img[:, :2] = 1.0  # a bright column at the left edge: padding would put background there
    t = load_tensor(as_image_set(img[None, :, :, None]), 32, 1)
    assert t.shape == (1, 1, 32, 32)
    assert t.min() >= -1 and t.max() <= 1
    want = np.asarray(Image.fromarray(img, mode="F").resize((32, 32), Image.BILINEAR))
    np.testing.assert_allclose((t[0, 0].numpy() + 1) / 2, want, atol=1e-5)
    assert (t[0, 0, :, 0] > 0.9).all()  # the edge column stays at the edge
