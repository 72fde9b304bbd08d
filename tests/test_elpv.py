"""The ELPV protocol (distilad.data.elpv) on a small fake dataset, its bench wiring, and the real
counts where the optional elpv-dataset package is installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from distilad.bench import runner
from distilad.cli import EXIT_USER_ERROR, main
from distilad.data import elpv
from distilad.errors import DistiladError

#: per category: (normal, probability 1/3, probability 2/3, anomalous) cells of the fake data
FAKE_COUNTS = {"mono": (20, 3, 2, 15), "poly": (30, 1, 3, 60)}


def fake_data(size: int = 32) -> elpv.ElpvData:
    """A shuffled ELPV look-alike: gray uint8 cells; anomalous ones carry a bright cross."""
    probs, types = [], []
    for cat, counts in FAKE_COUNTS.items():
        for p, n in zip((0.0, 1 / 3, 2 / 3, 1.0), counts, strict=True):
            probs += [p] * n
            types += [cat] * n
    order = np.random.default_rng(7).permutation(len(probs))
    probs, types = np.asarray(probs)[order], np.asarray(types)[order]
    rng = np.random.default_rng(0)
    images = (100 + 20 * rng.standard_normal((len(probs), size, size))).clip(0, 255)
    images[probs > 0.5, size // 2 - 1:size // 2 + 1, :] = 255
    images[probs > 0.5, :, size // 2 - 1:size // 2 + 1] = 255
    names = tuple(f"cell{i + 1:04d}.png" for i in range(len(probs)))
    return elpv.ElpvData(images.astype(np.uint8), probs, types, names, "fake")


@pytest.fixture
def fake_elpv(monkeypatch: pytest.MonkeyPatch) -> elpv.ElpvData:
    data = fake_data()
    monkeypatch.setattr(elpv, "load_elpv", lambda: data)
    return data


def test_split_sizes_disjoint_and_fixed(fake_elpv: elpv.ElpvData) -> None:
    for cat, (n_norm, n_third, n_two_thirds, n_anom) in FAKE_COUNTS.items():
        rows = elpv.split_rows(fake_elpv.probabilities, fake_elpv.types, cat)
        n_val = min(max(10, round(0.2 * n_anom)), n_anom - 1)
        assert {k: len(v) for k, v in rows.items()} == {
            "train": round(0.6 * n_norm), "test_normal": n_norm - round(0.6 * n_norm),
            "test_anomalous": n_anom - n_val, "validation_anomalous": n_val,
            "uncertain": n_third + n_two_thirds}
        parts = list(rows.values())
        every = np.concatenate(parts)
        assert len(np.unique(every)) == len(every)  # disjoint
        assert (fake_elpv.types[every] == cat).all()
        p = fake_elpv.probabilities
        assert (p[rows["train"]] == 0).all() and (p[rows["test_normal"]] == 0).all()
        assert (p[rows["test_anomalous"]] == 1).all()
        assert (p[rows["validation_anomalous"]] == 1).all()
        assert np.isin(np.round(p[rows["uncertain"]], 3), [0.333, 0.667]).all()
        # a fixed function of the data: the global random state plays no part
        np.random.seed(123)
        again = elpv.split_rows(fake_elpv.probabilities, fake_elpv.types, cat)
        assert all(np.array_equal(rows[k], again[k]) for k in rows)
    # shuffled: the training normals are not simply the first ones in row order
    mono_normals = np.flatnonzero((fake_elpv.types == "mono") & (fake_elpv.probabilities == 0))
    train = elpv.split_rows(fake_elpv.probabilities, fake_elpv.types, "mono")["train"]
    assert not np.array_equal(train, mono_normals[:len(train)])


def test_image_sets_labels_and_validation_mode(fake_elpv: elpv.ElpvData) -> None:
    split = elpv.make_elpv_split("mono")
    rows = split.rows
    assert split.train.image(0).shape == (32, 32, 1) and split.train.image(0).dtype == np.float32
    assert (split.train.labels == 0).all() and (split.validation_anomalies.labels == 1).all()
    n_norm = len(rows["test_normal"])
    assert split.test.labels.tolist() == [0] * n_norm + [1] * len(rows["test_anomalous"])
    assert split.test.names[0] == fake_elpv.names[rows["test_normal"][0]]
    np.testing.assert_array_equal(split.test.array[n_norm, ..., 0],
                                  fake_elpv.images[rows["test_anomalous"][0]])
    assert len(split.uncertain) == 5 and sorted(np.round(split.uncertain_probabilities, 2)) == [
        0.33, 0.33, 0.33, 0.67, 0.67]
    # the uncertain and validation cells never reach the test
    test_names = set(split.test.names)
    assert not test_names & set(split.uncertain.names)
    assert not test_names & set(split.validation_anomalies.names)
    val_only = elpv.make_elpv_split("mono", test=False)
    assert val_only.test is None and val_only.uncertain is None
    assert val_only.train.names == split.train.names
    assert val_only.validation_anomalies.names == split.validation_anomalies.names
    with pytest.raises(DistiladError, match="mono or poly"):
        elpv.make_elpv_split("thin-film")


def _bench(tmp_path: Path, *extra: str) -> list[str]:
    return ["bench", "--dataset", "elpv", "--classes", "mono", "--allow-dirty", "-q",
            "--set", "epochs=1", "--set", "image_size=32", "--set", 'device="cpu"',
            "--feature-cache", "none", "--results", str(tmp_path / "results"),
            "--markdown", str(tmp_path / "RESULTS.md"), *extra]


def test_bench_elpv_test_and_validation_runs(tmp_path: Path, fake_elpv: elpv.ElpvData,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real = elpv.ArrayImageSet

    def spy(*a, **k):
        built.append(k["description"])
        return real(*a, **k)

    monkeypatch.setattr(elpv, "ArrayImageSet", spy)
    assert main(_bench(tmp_path, "--validate")) == 0
    assert built and not any(("test" in d or "uncertain" in d) for d in built)
    rec = json.loads((tmp_path / "results" / "rd_elpv_elpv_mono_seed0_device_cpu-e1-s32_val.json"
                      ).read_text())
    assert rec["test_evaluated"] is False and "uncertain" not in rec and "metrics" not in rec
    assert rec["validation"]["kind"] == "given-anomalies"
    assert rec["validation"]["n_anomalous"] == 10 and rec["n_train"] + rec["n_holdout"] == 12
    assert rec["validation"]["n_normal"] == rec["n_holdout"]

    assert main(_bench(tmp_path)) == 0
    rec = json.loads((tmp_path / "results" / "rd_elpv_elpv_mono_seed0_device_cpu-e1-s32.json"
                      ).read_text())
    assert rec["protocol"] == "elpv" and rec["n_test"] == 8 + 5
    unc = rec["uncertain"]
    assert unc["n_uncertain"] == 5 and unc["n_test_normal"] == 8
    assert set(unc["image_auroc_by_probability"]) == {"0.33", "0.67"}
    assert rec["metrics"]["image_auroc_uncertain"] == unc["image_auroc"]
    for key in ("image_auroc", "image_ap", "image_f1_max", "tpr_at_threshold"):
        assert 0.0 <= rec["metrics"][key] <= 1.0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "### rd · elpv · elpv · config `device_cpu-e1-s32`" in text
    header = next(line for line in text.splitlines() if line.startswith("| class | runs | image"))
    assert "| AP | F1-max | TPR at calibrated FPR |" in header and "paper" not in header
    row = next(line for line in text.splitlines() if line.startswith("| mono |"))
    assert f"| {100 * rec['metrics']['image_ap']:.2f} |" in row
    assert f"| {100 * unc['image_auroc']:.2f} |" in row


def test_bench_elpv_user_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    p = runner.argparse.ArgumentParser()
    runner.add_bench_arguments(p)
    specs = runner.build_specs(p.parse_args(["--dataset", "elpv", "--seeds", "0,1"]))
    assert [(s.protocol, s.cls, s.seed) for s in specs] == [
        ("elpv", "mono", 0), ("elpv", "mono", 1), ("elpv", "poly", 0), ("elpv", "poly", 1)]
    with pytest.raises(DistiladError, match="mono and poly"):
        runner.build_specs(p.parse_args(["--dataset", "elpv", "--classes", "mono,3"]))
    with pytest.raises(DistiladError, match="'elpv'"):
        runner.build_specs(p.parse_args(["--dataset", "elpv", "--protocol", "one-class"]))
    # without the package: one line that says what to install, exit 2, nothing written
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    elpv._read_package.cache_clear()
    try:
        assert main(_bench(tmp_path)) == EXIT_USER_ERROR
    finally:
        elpv._read_package.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'distilad[elpv]'" in err[0]
    assert not (tmp_path / "results").exists()


def test_real_elpv_counts() -> None:
    pytest.importorskip("elpv_dataset", reason="elpv-dataset is not installed "
                                               "(pip install 'distilad[elpv]')")
    data = elpv.load_elpv()
    assert data.images.shape == (2624, 300, 300) and data.images.dtype == np.uint8
    expected = {"mono": (588, 173, 313, 353, 235, 250, 63),
                "poly": (920, 228, 402, 552, 368, 322, 80)}
    for cat, (normal, uncertain, anomalous, train, test_n, test_a, val) in expected.items():
        mine = data.types == cat
        assert int((mine & (data.probabilities == 0)).sum()) == normal
        assert int((mine & (data.probabilities == 1)).sum()) == anomalous
        rows = elpv.split_rows(data.probabilities, data.types, cat)
        assert (len(rows["uncertain"]), len(rows["train"]), len(rows["test_normal"]),
                len(rows["test_anomalous"]), len(rows["validation_anomalous"])) == (
            uncertain, train, test_n, test_a, val)
    assert data.names[0] == "cell0001.png" and data.names[-1] == "cell2624.png"
