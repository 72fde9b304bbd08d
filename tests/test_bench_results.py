"""RESULTS.md sections of the speed_export and profile_gan_step records (synthetic records)."""

from __future__ import annotations

from typing import Any

from distilad.bench.results import render


def _rows(text: str, title: str) -> list[list[str]]:
    """Data rows (cells stripped) of the first table after the heading ``title``."""
    section = text[text.index(title):]
    table = [line for line in section.splitlines()[2:] if line.startswith("|")]
    end = next((i for i, line in enumerate(table[2:]) if not line.startswith("| ")), None)
    rows = table[2:] if end is None else table[2:2 + end]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows]


def _export(name: str, load: list[float]) -> dict[str, Any]:
    return {"kind": "speed_export", "model": "rd efficientnet_lite0 64px", "_file": name,
            "speed": {"onnxruntime_ms_b1": 12.34, "onnxruntime_ms_b1_min": 10.04,
                      "torch_graph_ms_b1": 40.0, "torch_graph_ms_b1_min": 35.55,
                      "onnxruntime_ms_b16": 8.0, "onnxruntime_ms_b16_min": 7.5,
                      "torch_graph_ms_b16": 30.0, "torch_graph_ms_b16_min": 25.0},
            "parity": {"images": 83, "max_score_rel_diff": 4.9e-7, "max_map_abs_diff": 5.0e-6,
                       "labels_identical": False},
            "onnxruntime_threads": 2, "torch_threads": 2, "cpu_count": 2,
            "load_average_1min_before_after": load, "note": ""}


def test_speed_export_section_shows_speed_parity_and_load() -> None:
    text = render([_export("busy.json", [5.78, 5.69]), _export("quiet.json", [0.4, 0.9])])
    title = "## Speed: exported ONNX graph (onnxruntime) vs PyTorch"
    busy, quiet = _rows(text, title)
    assert busy[1] == "2 / 2"
    assert busy[2:6] == ["10.0 (12.3)", "35.5 (40.0)", "7.5 (8.0)", "25.0 (30.0)"]
    assert busy[6:9] == ["4.9e-07", "5.0e-06", "no (83 images)"]
    assert busy[9] == "5.8 / 5.7 (2 cores)" and busy[10] == "`busy.json`"
    assert quiet[9] == "0.4 / 0.9 (2 cores)"
    # only the run whose load average exceeded the core count is called indicative
    caption = text[text.index(title):].split("\n\n")[1]
    assert "loaded machine (1-min load average above the core count): `busy.json`;" in caption
    assert "quiet.json" not in caption


def _gan_step(name: str, compiled: bool) -> dict[str, Any]:
    med = {"before": 61.61, "after": 70.98, "after_channels_last": 75.68}
    ratio = {"after": 1.116, "after_channels_last": 1.205}
    if compiled:
        med["after_compiled"], ratio["after_compiled"] = 64.0, 1.081
    return {"kind": "profile_gan_step", "model": "edegan width 64 nz 100, 3 ch, 32 px, batch 64",
            "rounds": 7, "steps_per_round": 5, "images_per_s_median": med,
            "speedup_vs_before_median_of_rounds": ratio, "torch_threads": 1, "cpu_count": 2,
            "note": "shared with two other jobs", "_file": name}


def test_profile_gan_step_section_shows_images_per_s_and_ratios() -> None:
    title = "## Training cost: one EDE-GAN step on the CPU, before and after"
    (row,) = _rows(render([_gan_step("plain.json", compiled=False)]), title)
    assert row[:3] == ["edegan width 64 nz 100, 3 ch, 32 px, batch 64", "1", "7 x 5"]
    assert row[3:6] == ["61.6", "71.0 (x1.12)", "75.7 (x1.21)"]  # no torch.compile column
    assert row[6:] == ["not recorded", "`plain.json`"]
    text = render([_gan_step("plain.json", compiled=False), _gan_step("comp.json", True)])
    plain, comp = _rows(text, title)
    assert plain[6] == "-" and comp[6] == "64.0 (x1.08)"
    assert "No load average recorded for `plain.json`, `comp.json`" in text
    assert "`comp.json`: shared with two other jobs" in text


def test_memory_section_shows_fit_and_bench_peaks() -> None:
    rec = {"kind": "memory_rd", "category": "bottle", "epochs": 1, "threads": 1,
           "fit_peak_rss_mb": 1786.4, "bench_peak_rss_mb": 2064.5, "git_commit": "abc",
           "_file": "memory_rd_bottle_e1.json"}
    rows = _rows(render([rec]), "## Memory")
    assert rows == [["bottle", "1", "1", "1786", "2064", "1.16", "abc",
                     "`memory_rd_bottle_e1.json`"]]


def test_learning_curve_section_means_and_best_epoch() -> None:
    """Mean validation AUROC per epoch over runs, best epoch in bold, classes 0/1 apart."""
    from distilad.bench.curves import curves_section

    def run(cls: str, seed: int, latent: list[float]) -> dict:
        pts = [{"phase": "edegan", "epoch": i + 1, "latent": v, "reconstruction": 0.5}
               for i, v in enumerate(latent)]
        return {"method": "edegan", "dataset": "mnist", "protocol": "one-class", "config": "e3",
                "category": cls, "seed": seed, "fit_info": {"validation_curve": pts}}

    runs = [run("0", 0, [0.5, 0.9, 0.7]), run("0", 1, [0.7, 0.7, 0.9]),
            run("2", 0, [0.6, 0.8, 0.5]), {"method": "rd", "fit_info": {}}]
    text = "\n".join(curves_section(runs))
    assert "| edegan · latent · all 3 | 60.0 | **80.0** | 70.0 | 2 |" in text
    assert "| edegan · latent · class 0 (2) | 60.0 | **80.0** | **80.0** |" not in text  # one best
    assert "| edegan · latent · class 0 (2) | 60.0 | **80.0** | 80.0 | 2 |" in text
    assert "class 1" not in text
    assert curves_section([{"method": "rd", "fit_info": {}}]) == []


def _gan_run(cls: str, seed: int, test: float, on: bool, resets: Any = 0,
             method: str = "edegan", epochs: int = 15) -> dict[str, Any]:
    """A synthetic run record: AdaptiveMix on (config e15-adaptivemix) or off (e15)."""
    params = {"epochs": epochs, "batch_size": 64, "seed": seed, "device": "auto",
              **({"adaptivemix": True, "adaptivemix_weight": 1.0} if on else {})}
    return {"method": method, "dataset": "mnist", "protocol": "one-class", "category": cls,
            "seed": seed, "config": "e15-adaptivemix" if on else "e15", "params": params,
            "metrics": {"image_auroc": test},
            "validation": {"metrics": {"image_auroc": test if on else test - 0.01}},
            "fit_info": {"discriminator_resets": resets}, "train_seconds": 14 if on else 10,
            "device": "cpu"}


def test_adaptivemix_ablation_pairs_differences_and_resets() -> None:
    """Pairs by (class, seed); a run without partner or with other parameters is left out;
    per seed the mean over classes of on - off, then mean ± std over seeds."""
    from distilad.bench.adaptivemix_results import adaptivemix_ablation_section

    off = {("0", 0): 0.90, ("1", 0): 0.80, ("0", 1): 0.94, ("1", 1): 0.82}
    on = {("0", 0): 0.93, ("1", 0): 0.83, ("0", 1): 0.95, ("1", 1): 0.84}
    runs = [_gan_run(c, s, v, on=False, resets=2 if (c, s) == ("0", 0) else 0)
            for (c, s), v in off.items()]
    runs += [_gan_run(c, s, v, on=True, resets={"teacher": 1, "student": 2} if s == 1 and c == "1"
                      else 0) for (c, s), v in on.items()]
    runs += [_gan_run("2", 0, 0.10, on=True),  # no partner: excluded
             _gan_run("4", 0, 0.99, on=True), _gan_run("4", 0, 0.10, on=False, epochs=3),
             _gan_run("0", 0, 0.5, on=True, method="transformaly")]
    text = "\n".join(adaptivemix_ablation_section(runs))
    title = "### AdaptiveMix · EDE-GAN · mnist · one-class · config `e15` vs `e15-adaptivemix`"
    assert _rows(text, title) == [
        ["off", "86.50 ± 2.12", "85.50 ± 2.12", "2.12", "2", "10"],
        ["on", "88.75 ± 1.06", "88.75 ± 1.06", "1.06", "3", "14"],
        ["paired on - off", "+2.25 ± 1.06", "+3.25 ± 1.06", "-1.06", "+1", "+4"]]
    assert "Classes 0, 1; seeds 0, 1; 4 pairs" in text
    assert "partner trained with other parameters: class 4 seed 0 (epochs)" in text
    assert "points): 0 +2.00, 1 +2.50." in text  # per class, mean over seeds
    assert "EDE-GAN · mnist: AdaptiveMix helps (test image AUROC +2.25 ± 1.06" in text
    assert ("without an off partner (not in the tables): EDE-GAN · mnist · one-class · "
            "`e15-adaptivemix`: 1 run; Transformaly · mnist · one-class" in text)
    assert adaptivemix_ablation_section([r for r in runs if r["params"].get("adaptivemix")]) == []


def test_adaptivemix_transformaly_shows_the_teacher_student_part() -> None:
    """Transformaly's records hold the teacher-student part's AUROC (the part AdaptiveMix
    trains): a column and its paired difference."""
    from distilad.bench.adaptivemix_results import adaptivemix_ablation_section

    runs = []
    for seed, (ts_off, ts_on) in enumerate(((0.80, 0.78), (0.82, 0.79))):
        for on, ts in ((False, ts_off), (True, ts_on)):
            r = _gan_run("0", seed, 0.9, on=on, method="transformaly")
            r["metrics"]["image_auroc_teacher_student"] = ts
            runs.append(r)
    text = "\n".join(adaptivemix_ablation_section(runs))
    title = "### AdaptiveMix · Transformaly · mnist · one-class · config `e15` vs `e15-adaptivemix`"
    rows = _rows(text, title)
    assert [r[0] for r in rows] == ["off", "on", "paired on - off"]
    assert [r[3] for r in rows] == ["81.00 ± 1.41", "78.50 ± 0.71", "-2.50 ± 0.71"]


def test_adaptivemix_verdict_grid_and_reset_count() -> None:
    from distilad.bench.adaptivemix_results import complete_grid, discriminator_resets, verdict

    assert verdict([0.003, 0.004]) == "no clear effect"  # below 0.5 points
    assert verdict([0.03, -0.01]) == "no clear effect"  # mean 1 point, std 2.8 points
    assert verdict([-0.02, -0.01]) == "hurts"
    assert verdict([0.02]) == "one seed only, no verdict"
    pairs = {(str(c), 0) for c in range(10)} | {(str(c), s) for c in range(3) for s in (1, 2)}
    assert complete_grid(pairs) == (["0", "1", "2"], [0, 1, 2])  # most seeds first
    assert complete_grid({("a", 0), ("b", 1)}) == (["a"], [0])
    assert discriminator_resets({"fit_info": {"discriminator_resets": {"teacher": 1,
                                                                       "student": 4}}}) == 5
    assert discriminator_resets({"fit_info": {"discriminator_resets": 3}}) == 3
    assert discriminator_resets({"fit_info": {}}) is None


def test_speed_rows_take_each_records_larger_batch() -> None:
    """RD records batch 1 / 16, Transformaly 1 / 64: each row shows its own N and ratios."""
    def rec(model: str, n: int, whole: tuple[float, float], teacher: tuple[float, float]
            ) -> dict[str, Any]:
        return {"kind": "speed", "model": model, "device": "cpu", "torch_threads": 2,
                "_file": f"{model}.json", "peak_rss_mb": 1000.0,
                "speed": {"train_images_per_s": 40.0, "infer_ms_b1": whole[0],
                          f"infer_ms_b{n}": whole[1], "teacher_ms_b1": teacher[0],
                          f"teacher_ms_b{n}": teacher[1]}}

    text = render([rec("rd", 16, (21.0, 24.0), (14.0, 20.0)),
                   rec("transformaly", 64, (40.0, 30.0), (20.0, 10.0))])
    rows = {r[0]: r for r in _rows(text, "## Speed and memory")}
    assert rows["rd"][4:8] == ["16", "21.0 / 24.0", "14.0 / 20.0", "1.50 / 1.20"]
    assert rows["transformaly"][4:8] == ["64", "40.0 / 30.0", "20.0 / 10.0", "2.00 / 3.00"]


def _teacher_study(backbone: str, size: int, val: list[float], test: list[float] | None,
                   dataset: str = "cifar10") -> dict[str, Any]:
    per_class = [{"class": c, "validation_auroc": v,
                  **({} if test is None else {"test_auroc": test[c]})}
                 for c, v in enumerate(val)]
    return {"kind": "study_transformaly_teacher", "dataset": dataset, "seed": 0,
            "params": {"backbone": backbone, "image_size": size}, "per_class": per_class,
            "validation_auroc_mean": sum(val) / len(val), "test_evaluated": test is not None,
            "test_auroc_mean": None if test is None else sum(test) / len(test),
            "feature_seconds": {"train": 123.4}, "n_train_features": 17000,
            "torch_threads": 1}


def test_teacher_study_section_one_row_per_configuration_test_only_where_read() -> None:
    recs = [_teacher_study("efficientnet_lite0", 128, [0.8, 0.9], [0.7, 0.8]),
            _teacher_study("efficientnet_lite0", 128, [0.8, 0.9], None),
            _teacher_study("efficientnet_lite2", 224, [0.85, 0.95], None),
            _teacher_study("efficientnet_lite2", 128, [0.5, 0.6], None, dataset="mnist")]
    text = render(recs)
    cifar = text[text.index("### cifar10, classes 0, 1, seed 0"):text.index("### mnist")]
    lite0, lite2 = _rows(cifar, "### cifar10")
    # the --test run and the validation-only run of lite0 @ 128 are one row, with the test mean
    assert lite0[:5] == ["lite0", "128", "80.00", "90.00", "**85.00**"]
    assert lite0[5] == "75.00" and lite0[6] == "123 (17000 img)" and lite0[7] == "yes"
    # a validation-only run shows no test figure
    assert lite2[:6] == ["lite2", "224", "85.00", "95.00", "**90.00**", "-"]
    assert _rows(text, "### mnist, classes 0, 1, seed 0")[0][4] == "**55.00**"


def _novelty_run(method: str, config: str, cls: int, seed: int, auroc: float,
                 protocol: str = "one-class") -> dict[str, Any]:
    return {"method": method, "dataset": "cifar10", "protocol": protocol, "category": str(cls),
            "seed": seed, "config": config, "params": {"seed": seed},
            "metrics": {"image_auroc": auroc}, "train_seconds": 10.0 * (1 + seed),
            "inference_ms_per_image": 2.0, "device": "cpu"}


def test_novelty_summary_puts_the_reported_configurations_side_by_side() -> None:
    """One column per method in its reported configuration (first matching name wins, others
    ignored); class cells are means over seeds, the best bold; the mean row counts only seeds
    with all 10 classes; a (dataset, protocol) with one method has no table."""
    from distilad.bench.novelty_summary import novelty_summary_section

    runs = [_novelty_run("rd", "nd32-e5-cos", c, s, 0.80 + 0.01 * c + 0.02 * s)
            for c in range(10) for s in (0, 1)]
    runs += [_novelty_run("rd", "nd32-e5-cos", c, 2, 0.5) for c in range(9)]  # incomplete seed
    runs += [_novelty_run("rd", "nd32-e5", c, 0, 0.99) for c in range(10)]  # not reported
    runs += [_novelty_run("pkdgan", f"two-step-t15-s10-5-w{w}", c, 0, v)
             for c in range(10) for w, v in (("12z8", 0.6), ("2z4", 0.1))]
    runs += [_novelty_run("rd", "nd32-e1", c, 0, 0.7, "one-class-anomalous") for c in range(10)]
    runs += [_novelty_run("transformaly", "e1", 0, 0, 0.8, "one-class-anomalous")]
    text = "\n".join(novelty_summary_section(runs))
    rows = _rows(text, "### cifar10 · one-class")
    assert rows[0] == ["0", "60.00", "**70.67**"]  # seeds 0, 1 and the incomplete seed 2
    assert rows[9] == ["9", "60.00", "**90.00**"]  # seed 2 has no class 9
    assert rows[10] == ["**mean**", "60.00", "85.50 ± 1.41"]
    assert rows[11] == ["paper (mean)", "73.0", "86.5"]
    assert rows[12] == ["seeds with 10 classes", "1", "2"]
    assert rows[13] == ["train s / run", "10", "20"]  # (10 + 20) x 10 + 30 x 9, over 29 runs
    assert ("Configurations: P-KDGAN two-step student `two-step-t15-s10-5-w12z8`, "
            "RD `nd32-e5-cos`") in text
    multimodal = _rows(text, "### cifar10 · one-class-anomalous")
    assert multimodal[0] == ["0", "70.00", "**80.00**"]
    assert multimodal[1] == ["1", "70.00", ""]  # no comparison, nothing bold
    assert multimodal[10] == ["**mean**", "70.00", "-"]  # an incomplete sweep has no mean
    assert novelty_summary_section(runs[:20]) == []


def test_novelty_summary_takes_the_length_validated_per_dataset() -> None:
    """EDE-GAN is shown at the length validated on each dataset (CIFAR-10: e3-dcgan), before
    the 15-epoch runs and never another dataset's length (e2-dcgan sorts first)."""
    from distilad.bench.novelty_summary import novelty_summary_section

    runs = [_novelty_run("rd", "nd32-e5-cos", c, 0, 0.8) for c in range(10)]
    runs += [_novelty_run("edegan", cfg, c, 0, v) for c in range(10)
             for cfg, v in (("e15", 0.55), ("e2-dcgan", 0.1), ("e3-dcgan", 0.58))]
    text = "\n".join(novelty_summary_section(runs))
    assert _rows(text, "### cifar10 · one-class")[10] == ["**mean**", "58.00", "80.00"]
    assert "EDE-GAN `e3-dcgan`" in text
    assert "EDE-GAN `e15`" in "\n".join(novelty_summary_section(
        [r for r in runs if r["config"] != "e3-dcgan"]))


def test_parameter_line_names_every_argument_off_its_default() -> None:
    """The table's parameter line: the usual ones, then every other argument that differs from
    the method's default today (adaptivemix=True), never run-only ones (device, feature cache)
    nor data-set ones (channels), and a recorded list equals a default tuple (betas)."""
    from distilad.bench.results import sweep_section

    rec = _gan_run("0", 0, 0.9, on=True)
    rec["params"].update(betas=[0.5, 0.999], channels=1, feature_cache="/x", nz=100)
    rec.update(inference_ms_per_image=1.0, n_train=10, teacher_feature_seconds=0.0, _file="r.json")
    text = "\n".join(sweep_section([rec]))
    line = next(x for x in text.splitlines() if x.startswith("Parameters: "))
    assert line.startswith("Parameters: epochs=15, batch_size=64, nz=100, adaptivemix=True;")
    for hidden in ("betas", "channels", "device", "feature_cache", "adaptivemix_weight"):
        assert f"{hidden}=" not in line
