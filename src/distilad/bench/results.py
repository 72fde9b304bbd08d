"""Generate ``benchmarks/RESULTS.md`` from the per-run JSON files (never edit it by hand).

Usage: ``python -m distilad.bench.results [results_dir] [RESULTS.md]``.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from distilad.atomic import write_text_atomic
from distilad.bench.adaptivemix_results import adaptivemix_ablation_section
from distilad.bench.choices import choices_section
from distilad.bench.curves import curves_section
from distilad.bench.novelty_summary import novelty_summary_section
from distilad.bench.ood_results import ood_adaptivemix_section
from distilad.bench.paper_values import paper_value
from distilad.bench.record import (
    RUN_ONLY_PARAMS,
    mean_std_text,
    read_json,
    record_metric,
    seed_means,
)
from distilad.bench.surface_results import surface_study_section
from distilad.bench.teacher_study_results import teacher_study_section
from distilad.detector import method_defaults

METRICS = [("image_auroc", "image AUROC"), ("image_auroc_max_pool", "AUROC max-pool"),
           ("image_auroc_mean_pool", "AUROC mean-pool"), ("pixel_auroc", "pixel AUROC"),
           ("aupro", "AUPRO@0.3"), ("pro_rd4ad_per_image", "PRO (RD4AD)"),
           ("image_auroc_reconstruction", "AUROC recon. score"),
           ("image_auroc_teacher_latent", "teacher AUROC"),
           ("image_auroc_pretrained", "AUROC pretrained part"),
           ("image_auroc_teacher_student", "AUROC teacher-student part")]
#: ELPV tables (no pixel masks, no paper values): image metrics, the calibrated threshold's
#: rates on the test, and the uncertain cells' row (``distilad.data.elpv``)
ELPV_METRICS = [("image_auroc", "image AUROC"), ("image_ap", "AP"), ("image_f1_max", "F1-max"),
                ("tpr_at_threshold", "TPR at calibrated FPR"),
                ("fpr_at_threshold", "test FPR at threshold"),
                ("image_auroc_uncertain", "AUROC uncertain vs normal")]


def _paper(method: str, dataset: str, protocol: str, cls: str, metric: str) -> str:
    pv = paper_value(method, dataset, protocol, cls, metric)
    return "" if pv is None else f"{100 * pv[0]:.1f}"


def load_records(results_dir: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted(results_dir.glob("*.json")):
        rec = read_json(p)
        if rec is not None:
            rec["_file"] = p.name
            out.append(rec)
    return out


def _class_key(c: str) -> tuple[int, Any]:
    return (0, int(c)) if c.isdigit() else (1, c)


VALIDATION_METRICS = [("image_auroc", "val. image AUROC"), ("pixel_auroc", "val. pixel AUROC")]


def _test_metric(key: str) -> Any:
    return lambda r: record_metric(r, key)


def _val_metric(key: str) -> Any:
    """A validation metric of a record; NaN (shown '-') for records without validation."""
    return lambda r: record_metric(r, key, "validation")


def _validation_line(recs: list[dict[str, Any]]) -> str:
    """What the validation columns measured, from the records that have validation."""
    if recs[0].get("dataset") == "elpv":
        return _elpv_line(recs)
    vals = [r["validation"] for r in recs if r.get("validation")]
    if not vals:
        return ""
    kinds = sorted({v.get("kind", "?") for v in vals})
    what = {"synthetic-defects": "synthetic defects made from them (CutPaste patches, scars, "
                                 "noise, blotches; `distilad.data.validation`)",
            "given-anomalies": "anomalous images of the training split (novelty protocols: "
                               "`distilad.data.novelty.validation_anomalies`)"}
    n_norm = np.mean([v.get("n_normal", 0) for v in vals])
    n_anom = np.mean([v.get("n_anomalous", 0) for v in vals])
    missing = len(recs) - len(vals)
    return ("Validation (`val.` columns; the test split is not used): held-out normals of the "
            "training split vs " + " / ".join(what.get(k, k) for k in kinds) +
            f"; {n_norm:.0f} normal vs {n_anom:.0f} anomalous images per run on average" +
            (f"; {missing} runs without validation ('-')" if missing else "") + ".")


def _elpv_line(recs: list[dict[str, Any]]) -> str:
    """What an ELPV table's validation, threshold and uncertain columns measured."""
    vals = [r["validation"] for r in recs if r.get("validation")]
    fprs = sorted({r.get("params", {}).get("target_fpr") for r in recs} - {None})
    text = ("ELPV protocol `elpv` (`distilad.data.elpv`; one split for every seed): train on 60 % "
            "of the normal cells (probability 0), test on the other normals and the anomalous "
            "cells (probability 1) not reserved for validation.")
    if any("metrics" in r for r in recs):
        text += (" TPR / test FPR at the threshold the detector calibrated on its held-out "
                 f"training normals at target_fpr {' / '.join(str(f) for f in fprs) or '?'}. "
                 "'AUROC uncertain vs normal': test normals vs the cells of probability 1/3 "
                 "and 2/3, which no other column uses.")
    if vals:
        n_norm = np.mean([v.get("n_normal", 0) for v in vals])
        n_anom = np.mean([v.get("n_anomalous", 0) for v in vals])
        text += (" Validation (`val.` columns; the test split is not used): held-out training "
                 f"normals vs the anomalous cells reserved for validation; {n_norm:.0f} normal "
                 f"vs {n_anom:.0f} anomalous images per run on average.")
    return text


#: arguments whose default ("auto") the training data resolves, recorded as resolved
_SET_BY_DATA = frozenset({"channels"})


def sweep_section(recs: list[dict[str, Any]], validation_only: bool = False) -> list[str]:
    """One table: rows = classes, columns = test metrics (mean ± std over seeds) with the paper's
    beside them, then validation metrics; ``validation_only``: runs that never read the test
    split (validation columns only)."""
    r0 = recs[0]
    method, dataset, protocol, config = r0["method"], r0["dataset"], r0["protocol"], r0["config"]
    by_class: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_class[str(r["category"])].append(r)
    elpv = dataset == "elpv"
    present = [] if validation_only else [
        (k, n) for k, n in (ELPV_METRICS if elpv else METRICS)
        if any(k in r["metrics"] for r in recs)]
    val_present = [(k, n) for k, n in VALIDATION_METRICS
                   if k == "image_auroc" or any(not math.isnan(_val_metric(k)(r)) for r in recs)]
    seeds = sorted({r["seed"] for r in recs})
    title = f"### {method} · {dataset} · {protocol} · config `{config}`"
    lines = [title + (" · validation only" if validation_only else ""), ""]
    p = r0.get("params", {})
    keys = [k for k in ("backbone", "image_size", "epochs", "batch_size", "lr", "lr_schedule",
                        "image_score", "width", "nz", "student_width", "student_nz", "schedule",
                        "teacher_epochs", "step1_epochs", "step2_epochs") if k in p]
    if "teacher_epochs" in p and "epochs" in keys:  # P-KDGAN: epochs per phase (old runs: "epochs")
        keys.remove("epochs")
    # every other argument where it differs from the method's default today (left out: the
    # run-only ones, which do not change the computation, and those the data sets at fit)
    defaults = json.loads(json.dumps(method_defaults(method)))  # tuples as the records' lists
    keys += [k for k in sorted(p) if k not in keys and k not in RUN_ONLY_PARAMS
             and k not in _SET_BY_DATA and k in defaults and p[k] != defaults[k]]
    commits = list(dict.fromkeys(str(r.get("git_commit"))[:12] for r in recs))
    lines.append("Parameters: " + ", ".join(f"{k}={p[k]}" for k in keys) +
                 f"; seeds {seeds}; device {_device_text(r0)}; "
                 + (f"commit {commits[0]}." if len(commits) == 1 else
                    f"commits {', '.join(commits)} (the runs of one table are of several code "
                    "versions)."))
    if r0.get("sweep"):  # several runs at once on one machine: the run times overlap
        lines.append(f"Sweep: `{r0['sweep']}`.")
    lines.append("")
    columns = ["class", "runs"]
    for _, n in present:
        columns += [n] if elpv else [f"{n} (ours)", "paper"]
    columns += [n for _, n in val_present]
    show_flops = any("flops_ratio" in r.get("fit_info", {}) for r in recs)
    if show_flops:
        columns.append("FLOPs T:S")
    columns += ["train s", "teacher s"] + ([] if validation_only else ["infer ms/img"])
    columns.append("peak RSS MB")
    lines += _header(*columns)
    full = dataset == "mvtec" or len(by_class) == 10  # the paper's mean covers these classes
    rows = [(cls, by_class[cls]) for cls in sorted(by_class, key=_class_key)]
    if len(by_class) > 1:
        rows.append(("**mean**", recs))
    for cls, rs in rows:
        mean_row = cls == "**mean**"
        cells = [cls, str(len(rs))]
        for k, _ in present:
            if mean_row:
                cells += [mean_std_text(seed_means(recs, seeds, len(by_class), _test_metric(k))),
                          _paper(method, dataset, protocol, "mean", k) if full else ""]
            else:
                cells += [mean_std_text([_test_metric(k)(r) for r in rs]),
                          _paper(method, dataset, protocol, cls, k)]
            if elpv:  # no paper values: no paper column
                cells.pop()
        for k, _ in val_present:
            cells.append(mean_std_text(seed_means(recs, seeds, len(by_class), _val_metric(k)) if mean_row
                              else [_val_metric(k)(r) for r in rs]))
        if show_flops:
            cells.append("" if mean_row else
                         f"{rs[0]['fit_info'].get('flops_ratio', float('nan')):.1f}:1")
        if mean_row:
            cells += [f"{np.sum([r['train_seconds'] for r in rs]):.0f} (sum)",
                      f"{np.sum([r.get('teacher_feature_seconds', 0) for r in rs]):.0f} (sum)"]
            cells += [] if validation_only else [""]
        else:
            cells += [f"{np.mean([r['train_seconds'] for r in rs]):.0f}",
                      f"{np.mean([r.get('teacher_feature_seconds', 0) for r in rs]):.1f}"]
            cells += [] if validation_only else [
                f"{np.mean([r['inference_ms_per_image'] for r in rs]):.2f}"]
        rss = [r["peak_rss_mb"] for r in rs if r.get("peak_rss_mb")]
        cells.append(f"{max(rss):.0f}" if rss else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if len(by_class) > 1 and any(len([r for r in recs if r["seed"] == s]) < len(by_class)
                                 for s in seeds):
        lines += ["", "(incomplete sweep: the mean row counts only seeds with every class)"]
    val_line = _validation_line(recs)
    if val_line:
        lines += ["", val_line]
    elif not validation_only:
        lines += ["", "No validation figures: this configuration was chosen before the validation "
                  "split existed (where that choice looked at test data, the method's README says "
                  "so); see \"Choices made on validation\"."]
    wall = sum(r.get("wall_seconds", r.get("fit_seconds_total", 0.0)) for r in recs)
    teach = sum(r.get("teacher_feature_seconds", 0) + r.get("score_teacher_seconds", 0) for r in recs)
    line = f"Sweep wall-clock: {wall / 60:.1f} min for {len(recs)} runs"
    if r0.get("sweep"):
        line = f"Run time, summed over runs (they ran side by side): {wall / 60:.1f} min for {len(recs)} runs"
    if "backbone" in p:  # methods with a frozen pretrained teacher
        cache = "teacher-feature cache on" if r0.get("feature_cache") else "no teacher-feature cache"
        line += (f" ({cache}); frozen-teacher forward {teach / 60:.1f} min = "
                 f"{100 * teach / max(wall, 1e-9):.0f} % of it")
    lines += ["", line + "."]
    lines += ["", "Files: " + ", ".join(f"`{r['_file']}`" for r in recs[:3]) +
              (f" and {len(recs) - 3} more" if len(recs) > 3 else ""), ""]
    return lines


# comparisons: runs of one method that differ in one parameter only
COMPARISONS = {"edegan": "batch_size", "pkdgan": "schedule"}
PKDGAN_CLAIM = {"cifar10": 2.44, "mnist": 1.77, "fashion-mnist": 1.73}  # two-step - alone, points


def _per_seed_means(recs: list[dict], pairs: set, metric: str) -> list[float]:
    """Mean over classes per seed, counting only the shared (class, seed) pairs; one value per
    seed (format with ``_fmt``)."""
    per_seed = defaultdict(list)
    for r in recs:
        if (str(r["category"]), r["seed"]) in pairs and metric in r["metrics"]:
            per_seed[r["seed"]].append(r["metrics"][metric])
    return [float(np.mean(v)) for v in per_seed.values()]


def comparison_sections(runs: list[dict[str, Any]]) -> list[str]:
    """Tables that set variants side by side on the same (class, seed) pairs: EDE-GAN batch sizes
    (latent and reconstruction scores of the same models) and P-KDGAN schedules (student alone,
    one-step, two-step, and the pretrained teacher)."""
    lines: list[str] = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        vary = COMPARISONS.get(r["method"])
        if vary is None or vary not in r.get("params", {}):
            continue
        rest = tuple(sorted((k, str(v)) for k, v in r["params"].items()
                            if k not in RUN_ONLY_PARAMS and k != vary))
        groups[(r["method"], r["dataset"], r["protocol"], rest)].append(r)
    for (method, dataset, protocol, rest), recs in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        vary = COMPARISONS[method]
        by_value: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            by_value[str(r["params"][vary])].append(r)
        if len(by_value) < 2:
            continue
        pair_sets = [{(str(r["category"]), r["seed"]) for r in v} for v in by_value.values()]
        pairs = set.intersection(*pair_sets)
        if not pairs:
            continue
        classes = sorted({c for c, _ in pairs}, key=_class_key)
        seeds = sorted({s for _, s in pairs})
        params = dict(rest)
        title = ("EDE-GAN batch size" if method == "edegan" else "P-KDGAN schedules")
        shown = ("teacher_epochs", "step1_epochs", "step2_epochs", "student_width", "student_nz",
                 "batch_size") + (("epochs",) if method == "edegan" else ())
        setting = ", ".join(f"{k}={params[k]}" for k in shown if k in params and k != vary)
        lines += [f"### {title} · {dataset} · {protocol}", "",
                  f"Classes {', '.join(classes)}; seeds {seeds} (only the class/seed pairs every "
                  f"variant has); mean over classes per seed, then mean ± std over seeds. "
                  f"{setting}.", ""]
        if method == "edegan":
            lines += _header("batch size", "AUROC latent score", "AUROC reconstruction score",
                             "train s / run")
            for v in sorted(by_value, key=lambda b: int(b)):
                rs = by_value[v]
                lat = mean_std_text(_per_seed_means(rs, pairs, "image_auroc"))
                rec = mean_std_text(_per_seed_means(rs, pairs, "image_auroc_reconstruction"))
                secs = np.mean([r["train_seconds"] for r in rs])
                lines.append(f"| {v} | {lat} | {rec} | {secs:.0f} |")
        else:
            lines += _header("model", "AUROC latent score", "FLOPs T:S", "train s / run")
            order = ["alone", "fixed", "joint", "two-step"]
            names = {"alone": "student alone", "fixed": "student, one-step (teacher fixed)",
                     "joint": "student, joint only", "two-step": "student, two-step (P-KDGAN)"}
            got = {}
            for v in [o for o in order if o in by_value]:
                rs = by_value[v]
                got[v] = _per_seed_means(rs, pairs, "image_auroc")
                ratio = rs[0].get("fit_info", {}).get("flops_ratio", math.nan)
                secs = np.mean([r["train_seconds"] for r in rs])
                lines.append(f"| {names[v]} | {mean_std_text(got[v])} | {ratio:.1f}:1 | {secs:.0f} |")
            if "fixed" in by_value:  # the fixed schedule never changes its pretrained teacher
                t = mean_std_text(_per_seed_means(by_value["fixed"], pairs, "image_auroc_teacher_latent"))
                lines.append(f"| teacher (pretrained EDE-GAN) | {t} | 1:1 | |")
            lines += ["", "Train s: the first distilling schedule of a class and seed (`fixed`) "
                          "includes training the pretrained teacher, which the others load from "
                          "the teacher cache."]
            if "two-step" in got and "alone" in got:
                gain = 100 * (np.mean(got["two-step"]) - np.mean(got["alone"]))
                claim = PKDGAN_CLAIM.get(dataset)
                lines += ["", f"Two-step minus alone: {gain:+.2f} points"
                          + (f" (paper: +{claim:.2f})." if claim is not None else ".")]
        lines.append("")
    return (["## Comparisons", ""] + lines) if lines else []


def _header(*columns: str) -> list[str]:
    """A markdown table's header row and separator."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def speed_section(recs: list[dict[str, Any]]) -> list[str]:
    """RD (batch 1 and 16) and Transformaly (batch 1 and 64) speed records, one row each."""
    lines = ["## Speed and memory", "",
             *_header("model", "device", "threads", "train img/s", "batch N",
                      "infer ms/img (batch 1 / N)", "teacher ms/img (batch 1 / N)",
                      "whole / teacher (batch 1 / N)", "peak RSS MB", "file")]
    for r in recs:
        s = r["speed"]
        n = max(int(k.removeprefix("infer_ms_b")) for k in s if k.startswith("infer_ms_b"))
        b1, bn, t1, tn = (s["infer_ms_b1"], s[f"infer_ms_b{n}"], s["teacher_ms_b1"],
                          s[f"teacher_ms_b{n}"])
        lines.append(
            f"| {r['model']} | {r['device']} | {r['torch_threads']} | "
            f"{s.get('train_images_per_s', float('nan')):.1f} | {n} | {b1:.1f} / {bn:.1f} | "
            f"{t1:.1f} / {tn:.1f} | {b1 / t1:.2f} / {bn / tn:.2f} | {r['peak_rss_mb']:.0f} | "
            f"`{r['_file']}` |")
    return lines + [""]


def speed_gan_section(recs: list[dict[str, Any]]) -> list[str]:
    lines = ["## Speed: EDE-GAN teacher vs P-KDGAN students (generator, 32 px)", "",
             *_header("dataset", "student (width, nz)", "FLOPs teacher / student", "FLOPs ratio",
                      "teacher img/s (b1 / b256)", "student img/s (b1 / b256)",
                      "speed-up (b1 / b256)", "device", "threads", "file")]
    for r in recs:
        for row in r["rows"]:
            lines.append(
                f"| {row['dataset']} | ({row['student_width']}, {row['student_nz']}) | "
                f"{row['teacher_flops'] / 1e6:.1f} M / {row['student_flops'] / 1e6:.3f} M | "
                f"{row['flops_ratio']:.1f}:1 | {row['teacher_images_per_s_b1']:.0f} / "
                f"{row['teacher_images_per_s_b256']:.0f} | {row['student_images_per_s_b1']:.0f} / "
                f"{row['student_images_per_s_b256']:.0f} | {row['speedup_b1']:.1f}x / "
                f"{row['speedup_b256']:.1f}x | {r['device']} | {r['torch_threads']} | "
                f"`{r['_file']}` |")
    return lines + [""]


def _load_cell(r: dict[str, Any]) -> str:
    """The 1-min load average recorded before / after a run, beside the core count."""
    load = r.get("load_average_1min_before_after")
    if not load:
        return "not recorded"
    return " / ".join(f"{x:.1f}" for x in load) + f" ({r.get('cpu_count', '?')} cores)"


def _load_caption(recs: list[dict[str, Any]]) -> str:
    """Which runs were taken on a loaded machine (1-min load average above the core count, or no
    load average recorded), and the notes recorded with the runs."""
    loaded, unknown = [], []
    for r in recs:
        load, cores = r.get("load_average_1min_before_after"), r.get("cpu_count")
        if not load or not cores:
            unknown.append(r)
        elif max(load) > cores:
            loaded.append(r)
    parts = []
    if loaded:
        parts.append("Taken on a loaded machine (1-min load average above the core count): " +
                     ", ".join(f"`{r['_file']}`" for r in loaded) +
                     "; figures from these runs are indicative only.")
    if unknown:
        parts.append("No load average recorded for " +
                     ", ".join(f"`{r['_file']}`" for r in unknown) +
                     "; where other jobs shared the machine (see the notes), figures from "
                     "these runs are indicative only.")
    if not loaded and not unknown:
        parts.append("The 1-min load average stayed at or below the core count in every run.")
    notes = [f"`{r['_file']}`: {r['note']}" for r in recs if r.get("note")]
    if notes:
        parts.append("Notes recorded with the runs: " + "; ".join(notes) + ".")
    return " ".join(parts)


def _ms_min_median(s: dict[str, Any], key: str) -> str:
    """``min (median)`` ms per image of one timed path, or the median alone."""
    median, least = s.get(key, math.nan), s.get(key + "_min")
    return f"{median:.1f}" if least is None else f"{least:.1f} ({median:.1f})"


def speed_export_section(recs: list[dict[str, Any]]) -> list[str]:
    """The exported ONNX graph in onnxruntime beside the same module in PyTorch (records of
    ``benchmarks/speed_export.py``): ms/image at batch 1 and 16, and the parity of scores."""
    lines = ["## Speed: exported ONNX graph (onnxruntime) vs PyTorch", "",
             "ms per image, minimum (median) over rounds that call every path in turn after a "
             "warm-up; PyTorch runs the exported module itself in eager mode (uint8 images in, "
             "scores, maps and labels out). Parity: `OnnxModel.score` against `Detector.score` "
             "on the test images: largest relative difference of image scores, largest absolute "
             "difference of anomaly maps, whether the labels are identical. "
             + _load_caption(recs), "",
             *_header("model", "threads (torch / onnxruntime)", "onnxruntime b1", "PyTorch b1",
                      "onnxruntime b16", "PyTorch b16", "max score diff (rel.)",
                      "max map diff (abs.)", "labels identical", "load avg (before / after)",
                      "file")]
    for r in recs:
        s, p = r["speed"], r.get("parity", {})
        same = {True: "yes", False: "no"}.get(p.get("labels_identical"), "-")
        lines.append(
            f"| {r['model']} | {r.get('torch_threads', '?')} / "
            f"{r.get('onnxruntime_threads', '?')} | {_ms_min_median(s, 'onnxruntime_ms_b1')} | "
            f"{_ms_min_median(s, 'torch_graph_ms_b1')} | "
            f"{_ms_min_median(s, 'onnxruntime_ms_b16')} | "
            f"{_ms_min_median(s, 'torch_graph_ms_b16')} | "
            f"{p.get('max_score_rel_diff', math.nan):.1e} | "
            f"{p.get('max_map_abs_diff', math.nan):.1e} | "
            f"{same} ({p.get('images', '?')} images) | {_load_cell(r)} | `{r['_file']}` |")
    return lines + [""]


GAN_STEP_VARIANTS = [("before", "before"), ("after", "one D pass"),
                     ("after_channels_last", "+ channels-last"),
                     ("after_compiled", "+ torch.compile")]


def profile_gan_step_section(recs: list[dict[str, Any]]) -> list[str]:
    """Images/s of one EDE-GAN training step before and after the one-discriminator-pass change
    and channels-last order (records of ``benchmarks/profile_gan_step.py``)."""
    shown = [(k, n) for k, n in GAN_STEP_VARIANTS
             if any(k in r["images_per_s_median"] for r in recs)]
    lines = ["## Training cost: one EDE-GAN step on the CPU, before and after", "",
             "Images/s per training step, median over rounds (x: median over rounds of the "
             "ratio to `before`; the variants run back to back in each round, so the ratio "
             "is less sensitive to other jobs than the images/s). `before`: the former step "
             "(the discriminator run 4 times, every gradient computed); `one D pass`: "
             "`distilad.modules.gan.gan_step`. " + _load_caption(recs), "",
             *_header("model", "threads", "rounds x steps",
                      *[f"{n} img/s" for _, n in shown], "load avg (before / after)", "file")]
    for r in recs:
        med, ratio = r["images_per_s_median"], r.get("speedup_vs_before_median_of_rounds", {})
        cells = []
        for k, _ in shown:
            if k not in med:
                cells.append("-")
            elif k == "before":
                cells.append(f"{med[k]:.1f}")
            else:
                cells.append(f"{med[k]:.1f} (x{ratio.get(k, math.nan):.2f})")
        lines.append(f"| {r['model']} | {r.get('torch_threads', '?')} | "
                     f"{r.get('rounds', '?')} x {r.get('steps_per_round', '?')} | "
                     + " | ".join(cells) + f" | {_load_cell(r)} | `{r['_file']}` |")
    return lines + [""]


def memory_section(recs: list[dict[str, Any]]) -> list[str]:
    """Peak RSS of `distilad fit` vs `distilad bench` (records of benchmarks/memory_rd.py)."""
    lines = ["## Memory: `distilad fit` vs `distilad bench` (RD)", "",
             "Peak resident memory of each command in a process of its own (bench with an empty "
             "teacher-feature cache, so it pays the teacher pass too).", "",
             *_header("category", "epochs", "threads", "fit peak RSS MB", "bench peak RSS MB",
                      "bench / fit", "commit", "file")]
    for r in recs:
        lines.append(
            f"| {r['category']} | {r['epochs']} | {r['threads']} | {r['fit_peak_rss_mb']:.0f} | "
            f"{r['bench_peak_rss_mb']:.0f} | "
            f"{r['bench_peak_rss_mb'] / r['fit_peak_rss_mb']:.2f} | "
            f"{str(r.get('git_commit'))[:12]} | `{r['_file']}` |")
    return lines + [""]


def load_serve_section(recs: list[dict[str, Any]]) -> list[str]:
    """Concurrent clients against `distilad serve` on localhost (records of
    ``benchmarks/load_serve.py``): throughput, latency, lost requests, server memory."""
    lines = ["## Serving: load test of `distilad serve`", "",
             "Clients post bottle test images (multipart, one keep-alive connection each, one "
             "request in flight per client) to `POST /predict` of a server in its own process on "
             "localhost; the server scores one image at a time. Latency on the client side, "
             "p50 / p99 in ms; one client: the reference pass before the run (every image once); "
             "server: median wait for the model / scoring inside the server. Lost: no answer, "
             "an error status or a score different from the reference. Server memory: resident "
             "MB after the warm-up, at the end, highest. " + _load_caption(recs), "",
             *_header("model", "clients x requests", "server threads", "req/s",
                      "latency p50 / p99", "one client p50", "server wait / score",
                      "lost", "server RSS MB (start / end / max)", "load avg (before / after)",
                      "file")]
    for r in recs:
        lat, one, srv, rss = (r["latency_ms"], r["single_client_latency_ms"],
                              r["server_timing_median_ms"], r["server_rss_mb"])
        lines.append(
            f"| {r['model']} | {r['clients']} x {r['requests_per_client']} | "
            f"{r['server_threads']} | {r['throughput_rps']:.1f} | {lat['p50']:.0f} / "
            f"{lat['p99']:.0f} | {one['p50']:.0f} | {srv['wait']:.0f} / {srv['score']:.0f} | "
            f"{r['lost'] + r.get('wrong_score', 0)} of {r['requests_sent']} | "
            f"{rss['after_warmup']:.0f} / {rss['end']:.0f} / {rss['max']:.0f} | "
            f"{_load_cell(r)} | `{r['_file']}` |")
    return lines + [""]


def _device_text(r: dict[str, Any]) -> str:
    """``cpu (<cpu>, N threads)`` or ``cuda (<GPU>; host <cpu>, N threads per process)``."""
    if r.get("gpu"):
        return (f"{r.get('device')} ({r['gpu']}; host {r.get('cpu', '?')}, "
                f"{r.get('torch_threads')} threads per process)")
    return f"{r.get('device')} ({r.get('cpu', '?')}, {r.get('torch_threads')} threads)"


def render(records: list[dict[str, Any]]) -> str:
    lines = ["# Benchmark results", "",
             "Generated by `python -m distilad.bench.results` from `benchmarks/results/*.json`; "
             "do not edit by hand. Values are percentages; `a ± b` is the mean and the sample "
             "standard deviation over seeds. Paper values stand beside ours where the paper (or "
             "its code) gives one; [R] marks a recalled, unverified value. `val.` columns are "
             "validation figures (training split only, see each table's note); '-' where a run "
             "recorded none. Peak RSS is the largest resident memory of the `distilad bench` "
             "process by the end of a run (in a sweep, of all runs so far in that process).", ""]
    speed = [r for r in records if r.get("kind") == "speed"]
    speed_gan = [r for r in records if r.get("kind") == "speed_gan"]
    speed_export = [r for r in records if r.get("kind") == "speed_export"]
    gan_step = [r for r in records if r.get("kind") == "profile_gan_step"]
    memory = [r for r in records if r.get("kind") == "memory_rd"]
    load_serve = [r for r in records if r.get("kind") == "load_serve"]
    ood_mix = [r for r in records if r.get("kind") == "ood_adaptivemix"]
    surface_study = [r for r in records if r.get("kind") == "study_rd_surface"]
    teacher_study = [r for r in records if r.get("kind") == "study_transformaly_teacher"]
    runs = [r for r in records if r.get("kind") is None and "metrics" in r
            and r.get("test_evaluated", True)]
    val_runs = [r for r in records if r.get("kind") is None and r.get("test_evaluated") is False]
    groups = _groups(runs)
    for method in sorted({k[0] for k in groups}):
        lines += [f"## {method}", ""]
        for key in sorted(k for k in groups if k[0] == method):
            lines += sweep_section(groups[key])
    lines += novelty_summary_section(runs)
    lines += comparison_sections(runs)
    lines += adaptivemix_ablation_section(runs)
    lines += choices_section(runs + val_runs)  # validation-only runs decide too
    lines += curves_section(runs)
    if val_runs:
        lines += ["## Validation-only runs (test split never read)", "",
                  "Runs of `distilad bench --validate`, for choosing settings: held-out normals "
                  "vs validation anomalies of the training split, no test metrics.", ""]
        val_groups = _groups(val_runs)
        for key in sorted(val_groups):
            lines += sweep_section(val_groups[key], validation_only=True)
    if speed:
        lines += speed_section(speed)
    if speed_gan:
        lines += speed_gan_section(speed_gan)
    if memory:
        lines += memory_section(memory)
    if speed_export:
        lines += speed_export_section(speed_export)
    if gan_step:
        lines += profile_gan_step_section(gan_step)
    if load_serve:
        lines += load_serve_section(load_serve)
    if ood_mix:
        lines += ood_adaptivemix_section(ood_mix)
    if surface_study:
        lines += surface_study_section(surface_study)
    if teacher_study:
        lines += teacher_study_section(teacher_study)
    return "\n".join(lines)


def _groups(runs: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs by (method, dataset, protocol, config)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[(r["method"], r["dataset"], r["protocol"], r["config"])].append(r)
    return groups


def write_results_md(results_dir: Path, out: Path) -> Path:
    return write_text_atomic(out, render(load_records(results_dir)))


if __name__ == "__main__":
    rd = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results")
    md = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("benchmarks/RESULTS.md")
    print(write_results_md(rd, md))
