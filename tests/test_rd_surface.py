"""RD's surface options (issue 15): held-out map normalisation and the teacher-patch Gaussian."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import distilad
from distilad.data import mvtec_train
from distilad.detector import holdout_split
from distilad.errors import DistiladError, ExportError
from distilad.methods.rd.surface import STD_FLOOR, SurfaceStats, combine, leave_one_out, patch_features

FIT = dict(image_size=64, epochs=2, batch_size=4, progress=False, device="cpu", seed=0,
           holdout_fraction=0.3, score_batch_size=8)
SURFACE = dict(map_normalization="holdout", patch_density="gaussian")


def _feats(b: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 16, 16, generator=g), torch.randn(b, 5, 8, 8, generator=g),
            torch.randn(b, 7, 4, 4, generator=g)]


def test_patch_features_and_statistics_shapes() -> None:
    x = patch_features(_feats(2, 0))
    assert x.shape == (2, 12, 8, 8)
    # level 2 averaged over its 3x3 neighbours (interior position), edges over those that exist
    f2 = _feats(2, 0)[1]
    assert torch.allclose(x[:, :5, 3, 3], f2[:, :, 2:5, 2:5].mean((-1, -2)), atol=1e-6)
    assert torch.allclose(x[:, :5, 0, 0], f2[:, :, :2, :2].mean((-1, -2)), atol=1e-6)
    stats = SurfaceStats(12, 32)
    shapes = {k: tuple(v.shape) for k, v in stats.state_dict().items()}
    assert shapes == {"patch_mean": (12,), "patch_whiten": (12, 12), "rd_pixel": (2, 32, 32),
                      "rd_global": (2,), "density_pixel": (2, 32, 32), "density_global": (2,)}


def test_map_normalisation_math_on_a_toy_case() -> None:
    stats = SurfaceStats(12, 4)
    maps = torch.zeros(4, 4, 4)
    maps[:, 0, 0] = torch.tensor([1.0, 3.0, 1.0, 3.0])  # a border pixel with a strong response
    maps[:, 1:, :] = torch.tensor([0.1, 0.3, 0.1, 0.3]).view(4, 1, 1)
    stats.fit_maps("rd", maps)
    mean, std = stats.rd_pixel
    assert mean[0, 0] == pytest.approx(2.0) and std[0, 0] == pytest.approx(1.0)
    assert mean[2, 2] == pytest.approx(0.2) and std[2, 2] == pytest.approx(0.1)
    # pixels that never vary get the floor, not zero
    floor = STD_FLOOR * float(maps.std(0, unbiased=False).mean())
    assert std[0, 3] == pytest.approx(floor, rel=1e-5)
    # a new map: the systematic border response (2.0 there) becomes 0, a 0.5 in the interior
    # becomes (0.5 - 0.2) / 0.1 = 3: the interior defect now outranks the border
    new = torch.zeros(1, 4, 4)
    new[0, 0, 0], new[0, 2, 2] = 2.0, 0.5
    z = combine(stats, new, None, per_pixel=True, rd_weight=1.0, density_weight=1.0)
    assert z[0, 0, 0] == pytest.approx(0.0, abs=1e-6) and z[0, 2, 2] == pytest.approx(3.0)
    assert int(z.flatten().argmax()) == 2 * 4 + 2
    # per_pixel=False without density: RD's map untouched
    assert torch.equal(combine(stats, new, None, False, 1.0, 1.0), new)


def test_leave_one_out_statistics_match_a_refit_without_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(6, 5, 5, generator=g)
    mean, std = leave_one_out(maps)
    for i in range(6):
        rest = torch.cat([maps[:i], maps[i + 1:]])
        assert torch.allclose(mean[i], rest.mean(0), atol=1e-6)
        want = rest.std(0, unbiased=False).clamp_min(
            STD_FLOOR * float(maps.std(0, unbiased=False).mean()))
        assert torch.allclose(std[i], want, atol=1e-6)


def test_density_map_finite_and_higher_on_an_outlier_patch() -> None:
    stats = SurfaceStats(12, 32)
    n = stats.fit_gaussian([_feats(4, s) for s in range(5)])
    assert n == 5 * 4 * 8 * 8
    feats = _feats(1, 99)
    feats[1][0, :, 2:5, 2:5] += 8.0  # one outlying region in level 2
    m = stats.density_map(feats, 32, sigma=0.0)
    assert m.shape == (1, 32, 32) and torch.isfinite(m).all()
    assert int(m[0].flatten().argmax()) // 32 in range(8, 20)  # rows of the outlier (x4 upsampled)
    assert float(m[0, 12, 12]) > 3 * float(m[0, 28, 28])
    # combined with global z-scores: weights act as documented
    stats.fit_maps("density", m.repeat(3, 1, 1) + torch.arange(3.0).view(3, 1, 1))
    stats.fit_maps("rd", torch.rand(3, 32, 32))
    rd = torch.rand(1, 32, 32)
    zd, zr = stats.standardise("density", m, False), stats.standardise("rd", rd, False)
    assert torch.allclose(combine(stats, rd, m, False, 0.0, 1.0), zd)
    assert torch.allclose(combine(stats, rd, m, False, 2.0, 0.5), 2 * zr + 0.5 * zd)


def test_conflicting_weights_are_refused() -> None:
    with pytest.raises(DistiladError, match="needs patch_density='gaussian'"):
        distilad.create_detector("rd", rd_weight=0.0)
    with pytest.raises(DistiladError):
        distilad.create_detector("rd", patch_density="gaussian", density_weight=0.0)


@pytest.fixture(scope="module")
def fitted(_tiny_mvtec_master: Path):
    train = mvtec_train(_tiny_mvtec_master)
    base = distilad.create_detector("rd", **FIT).fit(train, validation=None)
    surf = distilad.create_detector("rd", **FIT, **SURFACE).fit(train, validation=None)
    return train, base, surf


def test_defaults_unchanged_and_the_same_student(fitted) -> None:
    """The statistics are computed after training: the student is the default's, so RD's raw
    map pooled by max gives the default's scores exactly; a default model holds no statistics."""
    train, base, surf = fitted
    assert set(base._modules()) == {"teacher", "student"}
    assert set(surf._modules()) == {"teacher", "student", "surface"}
    want = base.score(train).image_scores
    rd_maps, den_maps = surf.raw_maps(train)
    assert np.array_equal(rd_maps.flatten(1).max(1).values.double().numpy(), want)
    assert torch.isfinite(den_maps).all() and float(den_maps.min()) >= 0
    info = surf.fit_info["surface"]
    assert info["n_holdout_maps"] == surf.fit_info["n_holdout"]
    mean, std = surf.surface.rd_pixel
    assert torch.isfinite(mean).all() and bool((std > 0).all())
    assert getattr(surf, "_holdout_scored", None) is None  # used once at fit, then dropped


def test_holdout_calibrated_with_leave_one_out_statistics(fitted) -> None:
    """The threshold (4 held-out normals, target 1 %: their highest score) is the largest
    leave-one-out z-score, above the largest in-sample one."""
    train, _, surf = fitted
    _, hold_idx = holdout_split(len(train), FIT["holdout_fraction"], FIT["seed"])
    rd, den = surf.raw_maps(train.subset(hold_idx))
    loo = {"rd": leave_one_out(rd), "density": leave_one_out(den)}
    z_loo = combine(surf.surface, rd, den, True, 1.0, 1.0, loo).flatten(1).max(1).values
    z_in = combine(surf.surface, rd, den, True, 1.0, 1.0).flatten(1).max(1).values
    assert surf.calibration.threshold == pytest.approx(float(z_loo.max()), rel=1e-5)
    assert float(z_loo.max()) > float(z_in.max())


def test_save_load_keeps_the_statistics(fitted, tmp_path: Path) -> None:
    train, _, surf = fitted
    path = surf.save(tmp_path / "surf.distilad")
    loaded = distilad.load_detector(path, device="cpu")
    for k, v in surf.surface.state_dict().items():
        assert torch.equal(loaded.surface.state_dict()[k], v), k
    np.testing.assert_array_equal(loaded.score(train).image_scores, surf.score(train).image_scores)


def test_export_of_a_surface_model_is_refused(fitted, tmp_path: Path) -> None:
    _, base, surf = fitted
    with pytest.raises(ExportError, match="cannot be exported to ONNX yet"):
        surf.export_onnx(tmp_path / "surf.onnx")
    assert not (tmp_path / "surf.onnx").exists()
    # the scoring net (autobatch measures with it) is the surface path all the same
    with torch.inference_mode():
        x = torch.rand(2, 3, 64, 64)
        scores, maps = surf._scoring_net().eval()(x)
        assert torch.allclose(maps, surf.map_tensor(x))


def test_surface_preset_sets_its_values_and_explicit_arguments_win() -> None:
    """``preset="surface"`` fills the chosen values (README "Surface options"), an explicit
    argument overrides its value, and the default (no preset) is untouched."""
    p = distilad.create_detector("rd", preset="surface").params
    assert (p["backbone"], p["holdout_fraction"], p["map_normalization"], p["patch_density"]) == (
        "efficientnet_lite2", 0.3, "none", "none")
    p = distilad.create_detector("rd", preset="surface", holdout_fraction=0.2,
                                 patch_density="gaussian").params
    assert (p["backbone"], p["holdout_fraction"], p["patch_density"]) == (
        "efficientnet_lite2", 0.2, "gaussian")
    p = distilad.create_detector("rd").params
    assert (p["preset"], p["backbone"], p["map_normalization"]) == (
        "none", "efficientnet_lite1", "none")
    with pytest.raises(DistiladError, match="preset must be one of 'none', 'surface'"):
        distilad.create_detector("rd", preset="shiny")
    # set_params applies a preset too (not only its name), and "none" puts the defaults back
    det = distilad.create_detector("rd", image_size=128)
    det.set_params(preset="surface")
    assert (det.params["backbone"], det.params["holdout_fraction"], det.params["image_size"]) == (
        "efficientnet_lite2", 0.3, 128)
    det.set_params(preset="none")
    assert (det.params["backbone"], det.params["holdout_fraction"]) == ("efficientnet_lite1", 0.1)
    assert det.set_params(preset="surface", backbone="efficientnet_lite0").params["backbone"] == (
        "efficientnet_lite0")
    with pytest.raises(DistiladError, match="unknown argument"):
        distilad.create_detector("edegan", preset="surface")


def test_a_preset_model_reloads_with_its_values(fitted, tmp_path: Path) -> None:
    """A model fitted under a preset keeps the preset's values on reload (they are saved as its
    arguments), including an explicit override of one of them."""
    train, _, _ = fitted
    # a small teacher overrides Lite2; FIT's holdout_fraction (0.3) is the preset's anyway
    args = {**FIT, "backbone": "efficientnet_lite0", **SURFACE}
    det = distilad.create_detector("rd", preset="surface", **args).fit(train, validation=None)
    assert det.params["backbone"] == "efficientnet_lite0" and det.params["preset"] == "surface"
    loaded = distilad.load_detector(det.save(tmp_path / "p.distilad"), device="cpu")
    learned = [k for k in det.params if k not in det.runtime_params]
    assert {k: loaded.params[k] for k in learned} == {k: det.params[k] for k in learned}
    np.testing.assert_array_equal(loaded.score(train).image_scores, det.score(train).image_scores)
