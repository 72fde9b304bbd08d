"""Batch scoring with Ray Data in local mode: the rows equal ``det.score`` on the same files.

Ray is an optional extra (``distilad[scale]``, ~150 MB of wheels: ray, pyarrow, pandas), not
part of ``dev``: the scoring test is skipped where it is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import distilad
from distilad.errors import DistiladError
from distilad.scale import ray_score


@pytest.fixture(scope="module")
def ray_module():
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        pytest.skip("ray[data] is not installed (optional: pip install 'distilad[scale]')")
    return ray


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, _tiny_mvtec_master: Path) -> Path:
    det = distilad.create_detector("rd", backbone="efficientnet_lite0", image_size=64, epochs=1,
                                   batch_size=4, ocbe_blocks=1, decoder_blocks=[1, 1, 1],
                                   device="cpu", progress=False)
    det.fit(_tiny_mvtec_master, validation=None)
    return det.save(tmp_path_factory.mktemp("ray-model") / "tiny.distilad")


def test_ray_local_mode_scores_equal_det_score(ray_module, model_file: Path,
                                               _tiny_mvtec_master: Path, tmp_path: Path) -> None:
    test_dir = _tiny_mvtec_master / "test"
    out = tmp_path / "scores"
    summary = ray_score.score_images(
        model_file, [test_dir], out, fmt="parquet", workers=2, batch_size=5,
        init_kwargs={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False,
                     "object_store_memory": 100 * 1024 * 1024})
    assert summary["images"] == 12
    rows = ray_score.read_scores(out)
    assert list(rows.columns) == list(ray_score.COLUMNS)
    det = distilad.load_detector(model_file, device="cpu")
    files = sorted(str(p.resolve()) for p in test_dir.rglob("*.jpg"))
    assert rows["file"].tolist() == files  # every image once
    want = det.score(files)
    np.testing.assert_allclose(rows["score"], want.image_scores, rtol=1e-6, atol=0)
    np.testing.assert_allclose(rows["normalized_score"], want.normalized_scores, rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_array_equal(rows["label"], want.labels)
    assert 0 < rows["label"].sum() < 12  # the threshold separates something: labels can differ


def test_bad_arguments_fail_in_one_line_before_ray_starts(model_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_score, "_import_ray", lambda: pytest.fail("ray must not be needed"))
    with pytest.raises(DistiladError, match="format must be one of parquet, csv"):
        _checked(model_file, tmp_path, fmt="xlsx")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(DistiladError, match="not an empty folder"):
        _checked(model_file, tmp_path, output=tmp_path / "full")
    with pytest.raises(DistiladError, match="model file not found"):
        _checked(tmp_path / "missing.distilad", tmp_path)


def _checked(model: Path, tmp_path: Path, **kw) -> None:
    ray_score.score_images(model, [tmp_path], kw.pop("output", tmp_path / "o"), **kw)


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(DistiladError, match=r"pip install 'distilad\[scale\]'"):
        ray_score._import_ray()
