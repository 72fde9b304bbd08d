"""Tests of the benchmark runner (resumable sweeps, result files, RESULTS.md) and of the
teacher-feature cache that sweeps rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distilad.backbones import DEFAULT_TEACHER, create_teacher
from distilad.backbones.cache import cache_key, teacher_features
from distilad.bench import runner
from distilad.bench.results import render
from distilad.cli import EXIT_USER_ERROR, main
from distilad.data import ArrayImageSet
from distilad.errors import DistiladError

DOCUMENTED_KEYS = {"method", "dataset", "category", "protocol", "seed", "metrics", "train_seconds",
                   "inference_ms_per_image", "peak_rss_mb", "device", "distilad_version",
                   "torch_version", "git_commit", "command", "validation", "test_evaluated"}


@pytest.fixture
def bench_env(tmp_path: Path, tiny_mvtec: Path) -> dict[str, Path]:
    root = tiny_mvtec.parent.parent  # tiny_mvtec is <tmp>/mvtec/tiny
    (root / "mvtec_ad").mkdir()
    tiny_mvtec.rename(root / "mvtec_ad" / "tiny")
    return {"root": root, "results": tmp_path / "results", "md": tmp_path / "RESULTS.md",
            "cache": tmp_path / "cache"}


def _bench_argv(env: dict[str, Path]) -> list[str]:
    return ["bench", "--dataset", "mvtec", "--classes", "tiny", "--seeds", "0,1",
            "--data-root", str(env["root"]), "--set", "epochs=1", "--set", "image_size=64",
            "--set", "device=\"cpu\"", "--results", str(env["results"]), "--markdown",
            str(env["md"]), "--feature-cache", str(env["cache"]), "--allow-dirty"]


def _fmt(values: list[float]) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f}"


def test_bench_runs_resumes_and_redoes_broken_results(
        bench_env: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    argv = _bench_argv(bench_env)
    results, md, cache = bench_env["results"], bench_env["md"], bench_env["cache"]
    monkeypatch.setenv("DISTILAD_DATA", str(bench_env["root"]))
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/distilad", *argv])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 already done, 2 to run" in out
    assert "[1/2] rd_mvtec_mvtec_tiny_seed0_" in out and "[2/2]" in out and "sweep ETA" in out
    files = sorted(results.glob("*.json"))
    assert [f.name.split("_seed")[0] for f in files] == ["rd_mvtec_mvtec_tiny"] * 2
    recs = [json.loads(f.read_text()) for f in files]
    for seed, rec in zip((0, 1), recs, strict=True):
        assert DOCUMENTED_KEYS <= set(rec), DOCUMENTED_KEYS - set(rec)
        assert rec["method"] == "rd" and rec["dataset"] == "mvtec" and rec["protocol"] == "mvtec"
        assert rec["category"] == "tiny" and rec["seed"] == seed and rec["device"] == "cpu"
        assert rec["params"]["epochs"] == 1 and rec["params"]["image_size"] == 64
        assert rec["params"]["seed"] == seed
        assert rec["n_train"] == 11 and rec["n_holdout"] == 1 and rec["n_test"] == 12
        for key in ("image_auroc", "pixel_auroc", "aupro"):
            assert 0.0 <= rec["metrics"][key] <= 1.0
        assert rec["train_seconds"] > 0 and rec["inference_ms_per_image"] > 0
        assert rec["peak_rss_mb"] > 50
        assert rec["run_id"] + ".json" == files[seed].name
        assert rec["data"].endswith("mvtec_ad/tiny")
        # validation beside the test metrics: the held-out normal vs its synthetic defect
        val = rec["validation"]
        assert rec["test_evaluated"] is True and "validation" not in rec["fit_info"]
        assert val["kind"] == "synthetic-defects" and val["n_normal"] == val["n_anomalous"] == 1
        for key in ("image_auroc", "pixel_auroc"):
            assert 0.0 <= val["metrics"][key] <= 1.0
        # no absolute path of this machine in the record (command, data, caches)
        assert rec["data"] == "$DISTILAD_DATA/mvtec_ad/tiny"
        assert rec["command"].startswith("distilad bench --dataset mvtec")
        assert "--data-root $DISTILAD_DATA " in rec["command"]
        assert not [t for t in rec["command"].split() if t.startswith("/")]
        assert not rec["feature_cache"].startswith("/")
        assert not rec["params"]["feature_cache"].startswith("/")
        import distilad

        assert rec["distilad_version"] == distilad.__version__
        assert rec["torch_version"] == torch.__version__
    # the held-out image depends on the seed
    assert recs[0]["fit_info"]["loss_history"] != recs[1]["fit_info"]["loss_history"]
    # the whole training set is cached once for both seeds (hold-out splits index into it); at
    # most one more entry, for the test set, and none per seed (synthetic defects are one-off)
    from distilad.backbones.cache import cache_key
    from distilad.data import mvtec_train

    entries = {p.stem for p in cache.glob("*.safetensors")}
    train_key = cache_key(create_teacher(DEFAULT_TEACHER),
                          mvtec_train(bench_env["root"] / "mvtec_ad" / "tiny"), 64)
    assert train_key in entries and len(entries) <= 2

    text = md.read_text()
    assert "## rd" in text and "### rd · mvtec · mvtec · config" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2"
    assert cells[2] == _fmt([r["metrics"]["image_auroc"] for r in recs])
    assert "image AUROC (ours)" in text and "pixel AUROC (ours)" in text
    header = next(line for line in text.splitlines() if line.startswith("| class |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    val_col = names.index("val. image AUROC")
    assert cells[val_col] == _fmt([r["validation"]["metrics"]["image_auroc"] for r in recs])
    assert cells[names.index("peak RSS MB")] == f"{max(r['peak_rss_mb'] for r in recs):.0f}"
    assert "synthetic defects made from them" in text

    # --- a second run skips both: nothing is trained, the files are untouched -------------------
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    def no_run(*a, **k):
        raise AssertionError("a finished run was executed again")

    with monkeypatch.context() as mp:
        mp.setattr(runner, "execute", no_run)
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 runs, 2 already done, 0 to run" in out
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # --- simulate a kill mid-write: a truncated result and a leftover temp file ----------------
    files[0].write_text(files[0].read_text()[:100])  # corrupt JSON
    leftover = results / f".{files[1].name}.99999.tmp"
    leftover.write_text(files[1].read_text()[:50])
    files[1].unlink()
    calls = []
    real_execute = runner.execute

    def counting(spec, data_root, *args):
        calls.append(spec.seed)
        return real_execute(spec, data_root, *args)

    import distilad.backbones.cache as cache_mod
    from distilad.data.validation import SyntheticDefectSet

    real_batches = cache_mod.iter_batches

    def no_teacher(images, *a, **k):
        # only the one-off synthetic defects of the held-out image go through the teacher
        if not isinstance(images, SyntheticDefectSet):
            raise AssertionError("teacher features were recomputed despite the cache")
        return real_batches(images, *a, **k)

    with monkeypatch.context() as mp:
        mp.setattr(runner, "execute", counting)
        mp.setattr(cache_mod, "iter_batches", no_teacher)
        assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 runs, 0 already done, 2 to run" in out
    assert calls == [0, 1]
    redone = [json.loads(f.read_text()) for f in files]
    assert [r["seed"] for r in redone] == [0, 1]
    # same seed, same data, same cached features: the same numbers again
    for a, b in zip(recs, redone, strict=True):
        assert a["fit_info"]["loss_history"] == b["fit_info"]["loss_history"]
        assert a["metrics"]["image_auroc"] == pytest.approx(b["metrics"]["image_auroc"])
    assert {p.stem for p in cache.glob("*.safetensors")} == entries
    # the temp file is not a result
    row = next(line for line in md.read_text().splitlines() if line.startswith("| tiny |"))
    assert row.split("|")[2].strip() == "2"


def test_bench_user_errors(bench_env: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base = _bench_argv(bench_env)
    for change, needle in [(("--classes", "nosuch"), "nosuch"), (("--dataset", "imagenet"), "imagenet")]:
        argv = list(base)
        argv[argv.index(change[0]) + 1] = change[1]
        assert main(argv) == EXIT_USER_ERROR
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("distilad: error:") and needle in err[0]
    assert not bench_env["results"].exists()


def test_classes_tags_and_specs() -> None:
    assert runner.parse_classes("0-2,5", "mnist") == ["0", "1", "2", "5"]
    assert runner.parse_classes("bottle, cable", "mvtec") == ["bottle", "cable"]
    with pytest.raises(DistiladError, match="10"):
        runner.parse_classes("10", "mnist")
    a = runner.config_tag({"epochs": 1, "image_size": 64}, None)
    assert a == runner.config_tag({"image_size": 64, "epochs": 1}, None) == "e1-s64"
    assert a != runner.config_tag({"epochs": 2, "image_size": 64}, None)
    assert runner.config_tag({}, None) == "default" and runner.config_tag({"x": 1}, "mine") == "mine"
    assert runner.config_tag({"lr_schedule": "cosine", "precise_bn": False, "epochs": 5,
                              "backbone": "efficientnet_lite1"}, None) == \
        "efficientnet_lite1-e5-cosine-precise_bn_false"
    assert runner.config_tag({"betas": [0.5, 0.99], "weights": "w/x y.pt"}, None) == \
        "betas_0.5x0.99-weights_w_x_y.pt"  # filesystem-safe, a valid --name
    long = runner.config_tag({f"option_{i}": "value" * 3 for i in range(5)}, None)
    assert long.startswith("cfg") and len(long) == 11
    import argparse

    p = argparse.ArgumentParser()
    runner.add_bench_arguments(p)
    specs = runner.build_specs(p.parse_args(["--dataset", "mnist", "--classes", "3,4", "--seeds",
                                             "0,1", "--set", "epochs=2", "--feature-cache", "none"]))
    assert len(specs) == 4 and {s.protocol for s in specs} == {"one-class"}
    assert specs[0].run_id == f"rd_mnist_one-class_3_seed0_{runner.config_tag({'epochs': 2}, None)}"
    assert dict(specs[0].params) == {"epochs": 2}
    # the cache folder is not part of the configuration tag
    cached = runner.build_specs(p.parse_args(["--dataset", "mnist", "--classes", "3", "--set",
                                              "epochs=2", "--feature-cache", "/tmp/x"]))
    assert cached[0].tag == specs[0].tag and dict(cached[0].params)["feature_cache"] == "/tmp/x"
    # methods without a frozen teacher take no feature cache; unknown methods fail early
    gan = runner.build_specs(p.parse_args(["--method", "edegan", "--dataset", "mnist", "--classes",
                                           "3", "--feature-cache", "/tmp/x"]))
    assert "feature_cache" not in dict(gan[0].params)
    with pytest.raises(DistiladError, match="unknown method"):
        runner.build_specs(p.parse_args(["--method", "nope", "--dataset", "mnist"]))


def _rec(cls: str, seed: int, auroc: float) -> dict:
    return {"method": "rd", "dataset": "mnist", "protocol": "one-class", "config": "c1",
            "category": cls, "seed": seed, "metrics": {"image_auroc": auroc}, "params": {},
            "train_seconds": 10.0, "teacher_feature_seconds": 1.0, "inference_ms_per_image": 2.0,
            "device": "cpu", "torch_threads": 1, "git_commit": "abc", "_file": f"{cls}-{seed}.json"}


def test_render_means_over_complete_seeds_only() -> None:
    assert render([]).startswith("# Benchmark results")
    recs = [_rec("0", 0, 0.90), _rec("1", 0, 0.70), _rec("0", 1, 0.80), _rec("1", 1, 0.60),
            _rec("0", 2, 0.50)]  # seed 2 lacks class 1
    text = render(recs)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")}
    assert rows["0"][1] == "3" and rows["0"][2] == _fmt([0.9, 0.8, 0.5])
    assert rows["1"][1] == "2" and rows["1"][2] == _fmt([0.7, 0.6])
    # mean over classes per seed (0.8 and 0.7), then mean ± std over seeds; seed 2 left out
    assert rows["**mean**"][2] == _fmt([0.8, 0.7]) == "75.00 ± 7.07"
    # the paper's MNIST mean is a 10-class mean: not shown beside a 2-class sweep
    assert rows["**mean**"][3] == ""
    assert "incomplete sweep" in text
    full = [_rec(str(c), 0, 0.9) for c in range(10)]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in render(full).splitlines() if line.startswith("| ")}
    assert rows["**mean**"][3] == "99.3"


def _pk(schedule: str, cls: str, seed: int, student: float, teacher: float) -> dict:
    rec = _rec(cls, seed, student)
    rec.update(method="pkdgan", config=schedule, params={"schedule": schedule, "student_width": 3,
                                                          "teacher_cache": f"/tmp/{schedule}"},
               fit_info={"flops_ratio": 315.6})
    rec["metrics"]["image_auroc_teacher_latent"] = teacher
    return rec


def test_comparison_pairs_variants_on_shared_runs() -> None:
    from distilad.bench.results import comparison_sections

    recs = [_pk("alone", "0", 0, 0.90, 0.0), _pk("alone", "1", 0, 0.80, 0.0),
            _pk("alone", "0", 1, 0.70, 0.0), _pk("alone", "1", 1, 0.60, 0.0),
            _pk("two-step", "0", 0, 0.95, 0.5), _pk("two-step", "1", 0, 0.85, 0.5),
            _pk("two-step", "0", 1, 0.75, 0.5),  # seed 1 lacks class 1: pair (1, 1) left out
            _pk("fixed", "0", 0, 0.91, 0.97), _pk("fixed", "1", 0, 0.81, 0.93),
            _pk("fixed", "0", 1, 0.71, 0.99), _pk("fixed", "1", 1, 0.61, 0.99)]
    text = "\n".join(comparison_sections(recs))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| ")}
    # alone: seed 0 -> (0.90 + 0.80) / 2 = 85, seed 1 -> class 0 only = 70
    assert rows["student alone"][1] == "77.50 ± 10.61"
    assert rows["student, two-step (P-KDGAN)"][1] == "82.50 ± 10.61"
    # the teacher row comes from the fixed schedule (its teacher is never fine-tuned)
    # seed 0: (0.97 + 0.93) / 2 = 95, seed 1: 99 -> 97 ± sqrt(2 * 2^2)
    assert rows["teacher (pretrained EDE-GAN)"][1] == "97.00 ± 2.83"
    assert "Two-step minus alone: +5.00 points (paper: +1.77)" in text
    assert "seeds [0, 1]" in text and "Classes 0, 1" in text


# --- teacher-feature cache -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rnd_teacher():
    return create_teacher("efficientnet_lite0", "random")


def test_teacher_features_cache(tmp_path: Path, rnd_teacher, monkeypatch: pytest.MonkeyPatch) -> None:
    import distilad.backbones.cache as cache_mod
    from distilad.data.transforms import stack_images

    rng = np.random.default_rng(0)
    images = ArrayImageSet((rng.random((5, 40, 40, 3)) * 255).astype(np.uint8))
    f0 = teacher_features(rnd_teacher, images, 32, batch_size=2)
    assert [tuple(f.shape) for f in f0] == [(5, 24, 8, 8), (5, 40, 4, 4), (5, 112, 2, 2)]
    assert all(f.dtype == torch.float32 for f in f0)
    # batching does not change the features (teacher in eval mode)
    with torch.inference_mode():
        direct = rnd_teacher(stack_images(images, [3], 32))
    torch.testing.assert_close(f0[1][3:4], direct[1], rtol=1e-5, atol=1e-5)

    cache = tmp_path / "cache"
    f1 = teacher_features(rnd_teacher, images, 32, batch_size=2, cache_dir=cache)
    entries = list(cache.glob("*.safetensors"))
    assert len(entries) == 1 and not list(cache.glob("*.tmp"))
    assert entries[0].stem == cache_key(rnd_teacher, images, 32)
    assert all(torch.equal(a, b) for a, b in zip(f1, f0, strict=True))
    from safetensors.torch import load_file, save_file

    # features only: the input images are neither kept nor cached
    assert set(load_file(str(entries[0]))) == {"f0", "f1", "f2"}

    # a second call reads the file: the teacher is not run
    with monkeypatch.context() as mp:
        mp.setattr(cache_mod, "iter_batches", lambda *a, **k: (_ for _ in ()).throw(
            AssertionError("teacher ran despite the cache")))
        f2 = teacher_features(rnd_teacher, images, 32, cache_dir=cache)
        assert all(torch.equal(a, b) for a, b in zip(f2, f0, strict=True))
        # subsets (hold-out splits) index into the parent's entry
        sub = images.subset([4, 1])
        fs = teacher_features(rnd_teacher, sub, 32, cache_dir=cache)
        assert torch.equal(fs[2], f0[2][[4, 1]]) and torch.equal(fs[0], f0[0][[4, 1]])
        # a subset of a subset too
        fss = teacher_features(rnd_teacher, sub.subset([1]), 32, cache_dir=cache)
        assert torch.equal(fss[1], f0[1][[1]])
    assert len(list(cache.glob("*.safetensors"))) == 1

    # one-off sets (synthetic defects) are computed, never cached
    from distilad.data.validation import synthetic_defects

    teacher_features(rnd_teacher, synthetic_defects(images, 0), 32, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 1

    # other size / other pixels / other teacher weights: other entries
    teacher_features(rnd_teacher, images, 64, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 2
    other = ArrayImageSet((rng.random((5, 40, 40, 3)) * 255).astype(np.uint8))
    assert cache_key(rnd_teacher, other, 32) != cache_key(rnd_teacher, images, 32)
    relabelled = ArrayImageSet(images.array, labels=[0, 0, 0, 0, 0])
    assert cache_key(rnd_teacher, relabelled, 32) == cache_key(rnd_teacher, images, 32)
    real = create_teacher("efficientnet_lite0")
    assert cache_key(real, images, 32) != cache_key(rnd_teacher, images, 32)

    # a damaged entry is recomputed, not trusted
    entries[0].write_bytes(b"broken" * 10)
    f3 = teacher_features(rnd_teacher, images, 32, batch_size=2, cache_dir=cache)
    assert all(torch.equal(a, b) for a, b in zip(f3, f0, strict=True))
    # an entry of the earlier format (inputs "x" beside the features) still loads, rows too
    save_file({"x": torch.zeros(5, 3, 32, 32), **{f"f{i}": f for i, f in enumerate(f0)}},
              str(entries[0]))
    old = teacher_features(rnd_teacher, images.subset([2]), 32, cache_dir=cache)
    assert len(old) == 3 and torch.equal(old[2], f0[2][[2]])


def test_read_rows_reads_only_the_rows_asked_for(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    import distilad.backbones.cache as cache_mod
    from distilad.backbones.cache import entry_names, read_rows

    g = torch.Generator().manual_seed(0)
    t = {"a": torch.randn(50, 3, 4, generator=g), "i": torch.arange(20, dtype=torch.int64),
         "h": torch.randn(9, 2, generator=g).to(torch.bfloat16)}
    path = tmp_path / "e.safetensors"
    save_file(t, str(path))
    assert sorted(entry_names(path)) == ["a", "h", "i"]
    monkeypatch.setattr(cache_mod, "_READ_CHUNK", 100)  # several reads per run of rows
    for rows in (None, [3, 4, 5, 9, 1, 2, 2, 49, 0], [], list(range(49, -1, -1)),
                 list(range(10, 40)), torch.randperm(50, generator=g)[:30].tolist()):
        idx = None if rows is None else torch.tensor(rows, dtype=torch.long)
        got = read_rows(path, "a", idx)
        assert got.dtype == torch.float32
        assert torch.equal(got, t["a"] if idx is None else t["a"][idx]), rows
    assert torch.equal(read_rows(path, "h", torch.tensor([8, 0])), t["h"][[8, 0]])
    assert torch.equal(read_rows(path, "i", torch.tensor([19])), torch.tensor([19]))
    with pytest.raises(IndexError):
        read_rows(path, "a", torch.tensor([50]))
    # an entry cut short is an error (read_entry then deletes it), never rows of garbage
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(OSError):
        read_rows(path, "a", None)


def test_subset_of_an_entry_costs_the_subset_only(tmp_path: Path) -> None:
    """Peak memory of reading 90 % of the rows of a 160 MB tensor: the subset (144 MB), not the
    whole tensor beside it (304 MB, as loading and then indexing did)."""
    from safetensors.torch import save_file

    path = tmp_path / "big.safetensors"
    save_file({"b2": torch.ones(1000, 40_000)}, str(path))
    code = ("import resource, torch\n"
            "from distilad.backbones.cache import read_rows\n"
            "rows = torch.randperm(1000)[:900]\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"x = read_rows(__import__('pathlib').Path({str(path)!r}), 'b2', rows)\n"
            "assert float(x.sum()) == 900 * 40000\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown_mb = float(out.stdout.split()[-1])
    assert grown_mb < 144 * 1.25, grown_mb


def test_teacher_batch_is_capped_by_pixels() -> None:
    from distilad.backbones.cache import MAX_BATCH_PIXELS, teacher_batch_size

    assert teacher_batch_size(256, 32) == 256  # small images: as asked
    assert teacher_batch_size(256, 256) == MAX_BATCH_PIXELS // (256 * 256) == 16
    assert teacher_batch_size(8, 256) == 8 and teacher_batch_size(8, 4096) == 1


def test_rd_fit_uses_feature_cache(tmp_path: Path, tiny_mvtec: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import distilad
    import distilad.backbones.cache as cache_mod

    params = dict(image_size=64, epochs=1, progress=False, device="cpu",
                  feature_cache=str(tmp_path / "fc"))
    a = distilad.create_detector("rd", **params).fit(tiny_mvtec)
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 1
    with monkeypatch.context() as mp:
        mp.setattr(cache_mod, "iter_batches", lambda *a, **k: (_ for _ in ()).throw(
            AssertionError("teacher ran despite the cache")))
        # (validation=None: synthetic defects are one-off, never cached)
        b = distilad.create_detector("rd", **params).fit(tiny_mvtec, validation=None)
        # another seed holds out another image, still from the same cache entry
        c = distilad.create_detector("rd", **{**params, "seed": 3}).fit(tiny_mvtec,
                                                                          validation=None)
    assert a.fit_info["loss_history"] == b.fit_info["loss_history"]
    assert c.fit_info["n_train"] == 11
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 1
    # cached and uncached training give the same model
    d = distilad.create_detector("rd", **{**params, "feature_cache": None}).fit(tiny_mvtec)
    assert d.fit_info["loss_history"] == a.fit_info["loss_history"]


def test_claim_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path: Path) -> None:
    import os
    import subprocess

    lock = tmp_path / ".run.lock"
    assert runner.claim(lock) and lock.read_text() == str(os.getpid())
    assert not runner.claim(lock)  # held by a live process (this one)
    dead = subprocess.run(["true"]).returncode == 0 and subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(str(dead.pid))  # a worker that was killed
    assert runner.claim(lock)


def test_bench_validate_reads_no_test_split_and_refuses_dirty_code(
        bench_env: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import distilad.data

    argv = _bench_argv(bench_env)
    argv[argv.index("--seeds") + 1] = "0"
    argv.remove("--allow-dirty")
    versions = []

    def dirty(*a):
        versions.append(1)
        return "abc123", ["src/distilad/x.py"]

    monkeypatch.setattr(runner, "code_version", dirty)
    # uncommitted code: refused before any work, one line that says how to proceed
    assert main([*argv, "--validate"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "src/distilad/x.py" in err[0] and "--allow-dirty" in err[0]
    assert not bench_env["results"].exists()

    def no_test(*a, **k):
        raise AssertionError("the test split was read by a validation-only run")

    monkeypatch.setattr(distilad.data, "mvtec_test", no_test)
    versions.clear()
    assert main([*argv, "--validate", "--allow-dirty"]) == 0
    assert versions == [1]  # the commit is read once, at the start
    out = capsys.readouterr().out
    assert "validation only (test split not read)" in out
    files = list(bench_env["results"].glob("*.json"))
    assert [f.name for f in files] == ["rd_mvtec_mvtec_tiny_seed0_device_cpu-e1-s64_val.json"]
    rec = json.loads(files[0].read_text())
    assert rec["test_evaluated"] is False and "metrics" not in rec and "n_test" not in rec
    assert rec["git_commit"] == "abc123-dirty"
    assert rec["validation"]["kind"] == "synthetic-defects"
    assert 0.0 <= rec["validation"]["metrics"]["image_auroc"] <= 1.0
    text = bench_env["md"].read_text()
    # kept apart from the test tables
    assert "## rd\n" not in text and "## Validation-only runs (test split never read)" in text
    assert "### rd · mvtec · mvtec · config `device_cpu-e1-s64` · validation only" in text
    row = next(line for line in text.splitlines() if line.startswith("| tiny |"))
    assert f"| {100 * rec['validation']['metrics']['image_auroc']:.2f} |" in row


def test_bench_novelty_validates_on_training_images_of_other_classes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilad.data import novelty as nv

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 20)
    images = (rng.random((200, 28, 28)) * 255).astype(np.uint8)
    images[labels == 3, 8:20, 8:20] = 255  # class 3 has a bright square
    reads = []

    def fake_split(dataset, split, root=None, download=False):
        reads.append(split)
        return images, labels

    monkeypatch.setattr(nv, "load_split", fake_split)
    results = tmp_path / "results"
    argv = ["bench", "--dataset", "mnist", "--classes", "3", "--validate", "--allow-dirty",
            "-q", "--set", "epochs=1", "--set", "image_size=32", "--set", 'device="cpu"',
            "--feature-cache", "none", "--results", str(results), "--no-markdown"]
    assert main(argv) == 0
    assert "test" not in reads
    rec = json.loads(next(results.glob("*_val.json")).read_text())
    val = rec["validation"]
    # 20 training images of class 3, 2 of them held out; all 20 of each of the nine others
    assert rec["n_train"] == 18 and val["n_normal"] == 2
    assert val["kind"] == "given-anomalies" and val["n_anomalous"] == 9 * 20
    assert "pixel_auroc" not in val["metrics"] and 0 <= val["metrics"]["image_auroc"] <= 1


def test_commit_outside_a_checkout_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    """A copy of the tree without .git records $DISTILAD_COMMIT (else 'unknown')."""
    from distilad.bench.record import code_version

    monkeypatch.delenv("DISTILAD_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert code_version(tmp_path) == ("unknown", [])
    monkeypatch.setenv("DISTILAD_COMMIT", "abc123")
    assert code_version(tmp_path) == ("abc123", [])


def test_markdown_goes_beside_or_inside_the_results_folder_never_elsewhere() -> None:
    from distilad.bench.runner import markdown_default

    assert markdown_default(Path("benchmarks/results")) == Path("benchmarks/RESULTS.md")
    assert markdown_default(Path("out/sweep")) == Path("out/sweep/RESULTS.md")
