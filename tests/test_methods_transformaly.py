"""Tests of Transformaly: density models, block teachers and their clones, the teacher cache, and
the fitted detector contract (EfficientNet-Lite teacher, and a timm ViT with random weights)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import distilad
from distilad.backbones.block_cache import block_features
from distilad.backbones.blocks import create_block_teacher, fresh_init
from distilad.cli import main
from distilad.data import ArrayImageSet, mvtec_test, mvtec_train, read_image
from distilad.detector import read_model_config
from distilad.errors import DistiladError
from distilad.methods.transformaly.density import (
    REG_COVAR,
    Gaussian,
    GaussianScorer,
    Whitening,
    count_components,
    density_device,
)
from distilad.methods.transformaly.detector import Transformaly
from distilad.methods.transformaly.model import (
    CloneStudent,
    block_mse,
    boundaries_needed,
    distillation_loss,
)

FIT = dict(image_size=64, epochs=3, batch_size=4, progress=False, device="cpu", seed=0)
VIT = "vit_tiny_patch16_224"
VIT_FIT = dict(backbone=VIT, weights="random", image_size=32, blocks=[2, 5, 11], epochs=1,
               batch_size=4, progress=False, device="cpu", seed=0)

# --- density models ------------------------------------------------------------------------------


def _hand_loglik(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """log N(x; mean, cov) with the ML covariance + REG_COVAR on its diagonal, written out."""
    mu = train.mean(0)
    cov = (train - mu).T @ (train - mu) / len(train) + REG_COVAR * np.eye(train.shape[1])
    d = x - mu
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (train.shape[1] * math.log(2 * math.pi) + logdet + maha)


def test_gaussian_log_likelihood_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    train = rng.normal(size=(200, 4)) @ a + np.array([1.0, -2.0, 0.5, 3.0])
    test = rng.normal(size=(7, 4)) * 3
    g = Gaussian.fit(torch.from_numpy(train))
    got = g.log_likelihood(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(got, _hand_loglik(test, train), rtol=1e-10, atol=1e-10)
    # 1-D: the textbook formula
    x1 = rng.normal(2.0, 0.5, size=(500, 1))
    g1 = Gaussian.fit(torch.from_numpy(x1))
    var = x1.var() + REG_COVAR
    q = np.array([[2.0], [3.0]])
    want = -0.5 * np.log(2 * np.pi * var) - (q[:, 0] - x1.mean()) ** 2 / (2 * var)
    np.testing.assert_allclose(g1.log_likelihood(torch.from_numpy(q)).numpy(), want, rtol=1e-12)


def test_gaussian_matches_official_density_model() -> None:
    """The official code's density: sklearn GaussianMixture(n_components=1).score_samples."""
    mixture = pytest.importorskip("sklearn.mixture")
    rng = np.random.default_rng(1)
    train = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    test = rng.normal(size=(20, 5)) * 2
    gm = mixture.GaussianMixture(n_components=1, max_iter=500).fit(train)
    got = Gaussian.fit(torch.from_numpy(train)).log_likelihood(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(got, gm.score_samples(test), rtol=1e-6)


@pytest.mark.parametrize(("threshold", "want"), [(0.5, 1), (0.51, 2), (0.8, 2), (0.85, 3),
                                                 (0.9, 3), (0.95, 4), (1.0, 4)])
def test_component_count_rule(threshold: float, want: int) -> None:
    # explained-variance ratios 0.5, 0.8, 0.9, 1.0 (any order in, zero and negative noise ignored)
    ev = torch.tensor([1.0, 5.0, 1.0, 3.0], dtype=torch.float64)
    assert count_components(ev, threshold) == want


def test_whitening_keeps_90_percent_and_whitens() -> None:
    rng = np.random.default_rng(0)
    # variances 50, 30, 12, 4, 2.5, 1.5 along random orthogonal axes: explained 0.5, 0.8, 0.92,
    # 0.96, 0.985, 1.0 (no ratio sits on a threshold: an exact 0.9 is decided by rounding, which
    # differs between CPUs' eigen-solvers; the exact-tie rule is tested on eigenvalues above)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    z = rng.normal(size=(4000, 6))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T))).T  # exactly white
    x = z * np.sqrt([50.0, 30.0, 12.0, 4.0, 2.5, 1.5]) @ q.T + 7.0
    w = Whitening.fit(torch.from_numpy(x), 0.9)
    assert w.n_components == 3  # 0.9 passed with three; the official code would keep two
    assert Whitening.fit(torch.from_numpy(x), 0.93).n_components == 4
    out = w(torch.from_numpy(x)).numpy()
    assert out.shape == (4000, 3)
    np.testing.assert_allclose(np.cov(out.T), np.eye(3), atol=1e-9)
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-9)
    # the kept directions are the top-3 principal axes (up to sign)
    np.testing.assert_allclose(np.abs(w.components.numpy().T @ q[:, :3]), np.eye(3), atol=1e-9)


def test_whitening_matches_sklearn_pca() -> None:
    decomposition = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8)) @ rng.normal(size=(8, 8))
    w = Whitening.fit(torch.from_numpy(x), 0.9)
    pca = decomposition.PCA(w.n_components, whiten=True, svd_solver="full").fit(x)
    ours = w(torch.from_numpy(x)).numpy()
    theirs = pca.transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), rtol=1e-6, atol=1e-8)


def test_training_mean_is_most_normal() -> None:
    rng = np.random.default_rng(3)
    feats = torch.from_numpy(rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) + 5.0)
    w = Whitening.fit(feats, 0.9)
    g = Gaussian.fit(w(feats))
    others = torch.from_numpy(rng.normal(size=(50, 32)) * 3 + 5.0)
    ll_mean = g.log_likelihood(w(feats.mean(0, keepdim=True)))
    assert ll_mean.item() > g.log_likelihood(w(feats)).max().item()
    assert ll_mean.item() > g.log_likelihood(w(others)).max().item()
    # and far from the data the score falls
    assert g.log_likelihood(w(feats.mean(0, keepdim=True) + 100.0)).item() < ll_mean.item() - 10


def test_gaussian_scorer_equals_log_likelihood() -> None:
    """The export form (inverse Cholesky factor, no triangular solve) gives the same numbers."""
    rng = np.random.default_rng(4)
    train = rng.normal(size=(50, 6)) @ rng.normal(size=(6, 6)) + 2.0
    g = Gaussian.fit(torch.from_numpy(train))
    test = torch.from_numpy(rng.normal(size=(9, 6)) * 4).float()  # float32, as features come
    got = GaussianScorer(g)(test)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, g.log_likelihood(test), rtol=1e-12, atol=1e-10)


def test_densities_stay_on_the_cpu_in_float64_for_mps() -> None:
    """Apple MPS has no float64: ``.to("mps")`` (what loading a model or ``set_params(device=
    "mps")`` does to every module) keeps the densities on the CPU, in float64, with the same
    scores; a float32 request keeps float64. CUDA and CPU keep the detector's device. No MPS is
    needed: the move is redirected before any MPS tensor is made."""
    assert density_device("mps") == torch.device("cpu")
    assert density_device(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert density_device("cpu") == torch.device("cpu")
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12)))
    w = Whitening.fit(feats, 0.9)
    g = Gaussian.fit(w(feats))
    scorer = GaussianScorer(g)
    query = feats[:7].float()
    before = g.log_likelihood(w(query)), scorer(w(query))
    for m in (w, g, scorer):
        assert m.to("mps") is m and m.to(torch.device("mps"), torch.float32) is m
        assert m.to(torch.float32) is m
        assert all(b.device.type == "cpu" and b.dtype == torch.float64 for b in m.buffers())
    after = g.log_likelihood(w(query)), scorer(w(query))
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# --- teachers and clones -------------------------------------------------------------------------


def test_lite_block_teacher_boundaries_and_pool() -> None:
    t = create_block_teacher("efficientnet_lite0", "random")
    assert t.n_blocks == 7 and t.feature_dim == 1280
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled, out = t(x, range(8))
        model_feats = t.head(out[7]).mean((2, 3))
    assert [tuple(out[j].shape[1:]) for j in range(8)] == [
        (32, 32, 32), (16, 32, 32), (24, 16, 16), (40, 8, 8), (80, 4, 4), (112, 4, 4),
        (192, 2, 2), (320, 2, 2)]
    assert pooled.shape == (2, 1280)
    torch.testing.assert_close(pooled, model_feats)
    with torch.no_grad():
        for i in range(7):  # boundary i + 1 is block i applied to boundary i
            torch.testing.assert_close(t.blocks[i](out[i]), out[i + 1])
    assert t.training is False and not any(p.requires_grad for p in t.parameters())


@pytest.mark.parametrize("name", ["efficientnet_lite0", VIT])
def test_clones_are_fresh_copies_of_the_architecture(name: str) -> None:
    torch.manual_seed(0)
    t = create_block_teacher(name, "random", image_size=32)
    for i in (0, t.n_blocks - 1):
        c = t.clone_block(i)
        ts, cs = t.blocks[i].state_dict(), c.state_dict()
        assert list(ts) == list(cs) and all(ts[k].shape == cs[k].shape for k in ts)
        weights = [k for k in ts if k.endswith("weight") and ts[k].ndim >= 2]
        assert weights and all(not torch.equal(ts[k], cs[k]) for k in weights)
        assert all(p.requires_grad for p in c.parameters()) and c.training
    # the initialisation is xavier-uniform: weights within +-sqrt(6 / (fan_in + fan_out))
    lin = torch.nn.Linear(300, 200)
    fresh_init(lin)
    bound = math.sqrt(6 / 500)
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert lin.bias.abs().max() < 1e-5


def test_boundaries_and_loss() -> None:
    assert boundaries_needed([2, 3, 6]) == (2, 3, 4, 6, 7)
    g = torch.Generator().manual_seed(0)
    b = {j: torch.randn(3, 5, 8, generator=g) for j in range(4)}
    student = [torch.randn(3, 5, 8, generator=g) for _ in range(3)]
    m = block_mse(student, b, [0, 1, 2])
    assert m.shape == (3, 3)
    torch.testing.assert_close(m[1, 2], ((student[2][1] - b[3][1]) ** 2).mean())
    # equal-shaped blocks: the official nn.MSELoss of the stacked outputs
    want = torch.nn.functional.mse_loss(torch.stack(student), torch.stack([b[1], b[2], b[3]]))
    torch.testing.assert_close(distillation_loss(student, b, [0, 1, 2]), want)


def _record_inputs(modules: list[torch.nn.Module]) -> tuple[list[list[torch.Tensor]], list]:
    seen: list[list[torch.Tensor]] = [[] for _ in modules]
    handles = [m.register_forward_pre_hook(lambda _m, args, k=k: seen[k].append(args[0].detach()))
               for k, m in enumerate(modules)]
    return seen, handles


@pytest.mark.parametrize("max_cached_mb", [0.0, 2048.0])
def test_clones_receive_the_teachers_block_inputs(max_cached_mb: float) -> None:
    """Hooks on teacher block i and on its clone see the same tensor, in training (boundaries
    from memory or from a teacher pass per batch) and in scoring."""
    rng = np.random.default_rng(0)
    imgs = rng.random((6, 64, 64, 3), dtype=np.float32)
    det = distilad.create_detector("transformaly", **{**FIT, "epochs": 1, "batch_size": 6,
                                                      "blocks": [1, 4], "weights": "random",
                                                      "precise_bn": False,
                                                      "max_cached_mb": max_cached_mb})
    assert isinstance(det, Transformaly)
    det._prepare(ArrayImageSet(imgs))
    det._build()
    blocks = [det.teacher.blocks[1], det.teacher.blocks[4]]
    t_seen, t_handles = _record_inputs(blocks)
    s_seen, s_handles = _record_inputs(list(det.student.clones))
    # training on all six images in one batch (the permutation reorders them), then scoring
    det._fit(ArrayImageSet(imgs), ArrayImageSet(imgs[:1]))
    n_teacher_calls = len(t_seen[0])
    t_seen_fit = [list(s) for s in t_seen]
    det._score(ArrayImageSet(imgs))
    for h in t_handles + s_handles:
        h.remove()
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in imgs])
    with torch.no_grad():
        _, ref = det.teacher(x, [1, 4])
    for k, j in enumerate([1, 4]):
        first_clone_input = s_seen[k][0]  # training batch: rows in the permuted order
        matches = [torch.allclose(first_clone_input[r], ref[j][c], atol=1e-5)
                   for r in range(6) for c in range(6)]
        assert sum(matches) == 6, "each training row is exactly one image's teacher input"
        torch.testing.assert_close(s_seen[k][-1], ref[j], atol=1e-5, rtol=1e-5)  # scoring
        torch.testing.assert_close(t_seen[k][-1], s_seen[k][-1])
    # teacher calls in fit: one on a blank image (the memory estimate) and one pass over the
    # training images; without boundaries in memory also one per training batch and one for
    # the training images' MSE vectors
    assert n_teacher_calls == (2 if max_cached_mb > 0 else 4)
    assert len(t_seen_fit[0]) == n_teacher_calls


def test_block_cache(tmp_path: Path) -> None:
    t = create_block_teacher("efficientnet_lite0", "random")
    rng = np.random.default_rng(0)
    images = ArrayImageSet(rng.random((7, 40, 40, 3), dtype=np.float32))
    pooled, parts = block_features(t, images, 64, [2, 3], batch_size=3, cache_dir=tmp_path)
    assert pooled.shape == (7, 1280) and set(parts) == {2, 3}
    assert len(list(tmp_path.glob("*.safetensors"))) == 1
    sub = images.subset([5, 1])
    p2, parts2 = block_features(t, sub, 64, [2, 3], cache_dir=tmp_path)
    torch.testing.assert_close(p2, pooled[[5, 1]])
    torch.testing.assert_close(parts2[3], parts[3][[5, 1]])
    assert len(list(tmp_path.glob("*.safetensors"))) == 1  # served from the parent's entry
    # no cache: the same numbers
    p3, parts3 = block_features(t, images, 64, [2, 3], batch_size=7)
    torch.testing.assert_close(p3, pooled, atol=1e-5, rtol=1e-5)


# --- the fitted detector (EfficientNet-Lite0, real weights) ---------------------------------------


@pytest.fixture(scope="module")
def fitted(_tiny_mvtec_master: Path) -> Transformaly:
    det = distilad.create_detector("transformaly", **FIT, holdout_fraction=0.25)
    assert isinstance(det, Transformaly)
    return det.fit(_tiny_mvtec_master, validation=None)


def test_fit_info_and_scores(fitted: Transformaly, _tiny_mvtec_master: Path) -> None:
    info = fitted.fit_info
    assert info["n_train"] == 9 and info["n_holdout"] == 3 and info["blocks"] == [2, 3, 4, 5, 6]
    hist = info["loss_history"]
    assert len(hist) == 3 and hist[-1] < hist[0]
    # 9 training features: at most 8 directions with variance
    assert 1 <= info["n_components"] <= 8 and info["feature_dim"] == 1280
    assert fitted.whitening.n_components == info["n_components"]
    test = mvtec_test(_tiny_mvtec_master)
    r = fitted.score(test)
    assert r.anomaly_maps is None and r.image_scores.shape == (12,)
    alt = fitted.alternative_scores
    assert set(alt) == {"pretrained", "teacher_student"}
    np.testing.assert_allclose(r.image_scores, alt["pretrained"] + alt["teacher_student"])
    # the teacher-student part is the Gaussian of the per-block MSE vector fitted on training
    train = mvtec_train(_tiny_mvtec_master)
    tr_scores = fitted.score(train.subset(range(12)))
    assert np.isfinite(tr_scores.image_scores).all()
    mse = torch.from_numpy(fitted.last_block_mse)
    assert mse.shape == (12, 5) and (mse > 0).all()


def test_save_load_identical(fitted: Transformaly, tmp_path: Path,
                             _tiny_mvtec_master: Path) -> None:
    path = fitted.save(tmp_path / "m.distilad")
    cfg = read_model_config(path)
    assert cfg["method"] == "transformaly" and cfg["state"]["blocks"] == [2, 3, 4, 5, 6]
    assert cfg["state"]["n_components"] == fitted.whitening.n_components
    loaded = distilad.load_detector(path, device="cpu")
    assert isinstance(loaded, Transformaly)
    assert loaded.teacher.identity == fitted.teacher.identity
    test = mvtec_test(_tiny_mvtec_master)
    a, b = fitted.score(test), loaded.score(test)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    for k in ("pretrained", "teacher_student"):
        np.testing.assert_array_equal(fitted.alternative_scores[k], loaded.alternative_scores[k])
    np.testing.assert_array_equal(a.labels, b.labels)
    assert loaded.calibration == fitted.calibration


def test_scoring_net_gives_the_detectors_scores(fitted: Transformaly,
                                                 _tiny_mvtec_master: Path) -> None:
    """The module that is exported (teacher, clones, both densities in one forward) gives
    ``score``'s image scores, in PyTorch."""
    from distilad.data.transforms import iter_batches

    test = mvtec_test(_tiny_mvtec_master)
    net = fitted._scoring_net().eval()
    assert net.has_maps is False and net.image_size == 64
    with torch.no_grad():
        got = torch.cat([net(x)[0] for _, x, _ in iter_batches(test, 5, 64)])
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), fitted.score(test).image_scores, rtol=1e-6)


def test_feature_cache_gives_the_same_scores(fitted: Transformaly, tmp_path: Path,
                                             _tiny_mvtec_master: Path) -> None:
    path = fitted.save(tmp_path / "m.distilad")
    loaded = distilad.load_detector(path, device="cpu")
    loaded.params["feature_cache"] = str(tmp_path / "cache")
    test = mvtec_test(_tiny_mvtec_master)
    want = fitted.score(test).image_scores
    for _ in range(2):  # computed, then read back
        np.testing.assert_allclose(loaded.score(test).image_scores, want, rtol=1e-6, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1


def test_cli_fit_test_predict(tmp_path: Path, tiny_mvtec: Path) -> None:
    model = tmp_path / "tf.distilad"
    assert main(["fit", "transformaly", str(tiny_mvtec), "-o", str(model), "--epochs", "1",
                 "--image-size", "64", "--device", "cpu", "-q"]) == 0
    assert main(["test", str(model), str(tiny_mvtec), "-o", str(tmp_path / "test"), "-q"]) == 0
    img = tiny_mvtec / "test" / "good" / "000.jpg"
    assert main(["predict", str(model), str(img), "-o", str(tmp_path / "pred"), "-q"]) == 0
    loaded = distilad.load_detector(model, device="cpu")
    assert loaded.score(read_image(img)[None]).anomaly_maps is None


def test_arguments() -> None:
    for bad, msg in [({"blocks": [1, 1]}, "blocks"), ({"blocks": []}, "blocks"),
                     ({"whitening_threshold": 0.0}, "whitening_threshold"),
                     ({"backbone": "resnet18"}, "unknown backbone"),
                     ({"backbone": VIT}, "weights=PATH"),
                     ({"backbone": VIT, "weights": "random", "image_size": 40}, "patch size")]:
        with pytest.raises(DistiladError, match=msg):
            distilad.create_detector("transformaly", **bad)
    det = distilad.create_detector("transformaly", blocks=[7], **{**FIT, "weights": "random"})
    with pytest.raises(DistiladError, match="out of range"):
        det.fit(np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32),
                validation=None)


# --- ViT teacher (random weights; no ViT weights exist offline) ----------------------------------


def test_vit_block_teacher_shapes_and_hooks() -> None:
    torch.manual_seed(0)
    t = create_block_teacher(VIT, "random", image_size=32)
    assert t.n_blocks == 12 and t.feature_dim == 192
    x = torch.rand(2, 3, 32, 32)
    seen, handles = _record_inputs(list(t.blocks))
    with torch.no_grad():
        pooled, out = t(x, range(13))
        ref = t.model.forward_features((x - t.mean) / t.std)
    for h in handles:
        h.remove()
    assert all(tuple(out[j].shape) == (2, 5, 192) for j in range(13))  # CLS + 2x2 patches
    for i in range(12):
        torch.testing.assert_close(seen[i][0], out[i])  # boundary i is block i's input
    torch.testing.assert_close(t.model.norm(out[12]), ref)
    torch.testing.assert_close(pooled, ref[:, 0])  # the CLS token after the final norm
    student = CloneStudent(t, [2, 5, 11])
    preds = student(out)
    assert [tuple(p.shape) for p in preds] == [(2, 5, 192)] * 3


def test_vit_weights_file(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model(VIT, pretrained=False, img_size=32)
    sd = ref.state_dict()
    st_file, pt_file = tmp_path / "vit.safetensors", tmp_path / "vit.pth"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st_file))
    torch.save({"model": sd}, pt_file)
    for f in (st_file, pt_file):
        t = create_block_teacher(VIT, f, image_size=32)
        assert t.weights_id != "random"
        torch.testing.assert_close(t.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])
    # the position embedding of a 224 px file is resampled to the input size (64 px: 4x4 + CLS)
    big = timm.create_model(VIT, pretrained=False)
    torch.save(big.state_dict(), tmp_path / "vit224.pth")
    t64 = create_block_teacher(VIT, tmp_path / "vit224.pth", image_size=64)
    assert tuple(t64.model.pos_embed.shape) == (1, 17, 192)
    # a file of another network
    lite = create_block_teacher("efficientnet_lite0", "random")
    torch.save(lite.state_dict(), tmp_path / "lite.pth")
    with pytest.raises(DistiladError, match="does not fit"):
        create_block_teacher(VIT, tmp_path / "lite.pth", image_size=32)


def test_vit_fit_save_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.random((10, 32, 32, 3), dtype=np.float32)
    det = distilad.create_detector("transformaly", **VIT_FIT, holdout_fraction=0.2)
    det.fit(imgs, validation=None)
    assert det.fit_info["blocks"] == [2, 5, 11] and det.fit_info["feature_dim"] == 192
    assert len(det.student.clones) == 3
    path = det.save(tmp_path / "vit.distilad")
    loaded = distilad.load_detector(path, device="cpu")
    np.testing.assert_array_equal(loaded.score(imgs).image_scores, det.score(imgs).image_scores)
    # "auto" leaves out the first two blocks, as the official scoring of blocks 2-11
    auto = distilad.create_detector("transformaly", **{**VIT_FIT, "blocks": "auto"})
    auto._build()
    assert auto.block_ids == tuple(range(2, 12))


def test_memory_budget_decides_what_is_kept(tmp_path: Path) -> None:
    """The training part's boundaries within max_cached_mb: kept in memory, and the whole set's
    entry streamed to disk (whether or not the whole set would fit in memory); over it: the
    boundaries are recomputed per batch and only the pooled features cached (the 2 held-out
    images, scored at calibration, may still fit and be served from the whole set's entry)."""
    from distilad.backbones.block_cache import boundary_bytes

    imgs = np.random.default_rng(0).random((10, 64, 64, 3), dtype=np.float32)
    t = create_block_teacher("efficientnet_lite0", "random")
    per_image = boundary_bytes(t, 64, boundaries_needed([3, 4]), "cpu")
    for n_fit, in_memory, files in [(10.5, True, 1), (8.5, True, 1), (7.5, False, 1),
                                    (1.5, False, 0)]:
        cache = tmp_path / f"c{n_fit}"
        det = distilad.create_detector("transformaly", **{
            **FIT, "epochs": 1, "weights": "random", "blocks": [3, 4], "holdout_fraction": 0.2,
            "feature_cache": str(cache), "max_cached_mb": n_fit * per_image / 1e6})
        det.fit(imgs, validation=None)
        assert det.fit_info["teacher_boundaries_in_memory"] is in_memory, n_fit
        entries = list(cache.glob("*.safetensors"))
        with_blocks = [e for e in entries if "b3" in _read_keys(e)]
        assert len(with_blocks) == files, n_fit


def test_auto_memory_budget_is_a_share_of_the_available_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_cached_mb="auto" (the default) keeps the boundaries when AUTO_SHARE (0.6) of the memory
    the system reports available holds them, and recomputes them when it does not."""
    from distilad import memory
    from distilad.backbones.block_cache import boundary_bytes

    imgs = np.random.default_rng(0).random((10, 64, 64, 3), dtype=np.float32)
    t = create_block_teacher("efficientnet_lite0", "random")
    per_image = boundary_bytes(t, 64, boundaries_needed([3, 4]), "cpu")
    assert distilad.create_detector("transformaly").params["max_cached_mb"] == "auto"
    assert memory.AUTO_SHARE == 0.6
    for n_available, in_memory in [(8.5 / 0.6, True), (7.5 / 0.6, False)]:  # 8 training images
        monkeypatch.setattr(memory, "available_bytes", lambda n=n_available: n * per_image)
        det = distilad.create_detector("transformaly", **{
            **FIT, "epochs": 1, "weights": "random", "blocks": [3, 4], "holdout_fraction": 0.2})
        det.fit(imgs, validation=None)
        assert det.fit_info["teacher_boundaries_in_memory"] is in_memory, n_available


def _read_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def test_auto_scoring_batch_size(fitted: Transformaly, tmp_path: Path,
                                 _tiny_mvtec_master: Path) -> None:
    """score_batch_size="auto" is accepted, measured, and scores as a fixed batch size does."""
    test = mvtec_test(_tiny_mvtec_master)
    want = fitted.score(test).image_scores
    auto = distilad.load_detector(fitted.save(tmp_path / "m.distilad"), device="cpu")
    auto.set_params(score_batch_size="auto")
    got = auto.score(test).image_scores
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert auto.batch_measurement["batch_size"] in auto.batch_measurement["ms_per_image"]
