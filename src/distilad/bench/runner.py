"""``distilad bench``: method x dataset x protocol x class x seed sweeps that resume.

Every finished run is one JSON file in the results folder, named by its run id; a run whose
file exists is skipped, so an interrupted sweep (Ctrl-C, kill) continues where it stopped. Files
are written atomically, so an interruption cannot leave a corrupt result. ``benchmarks/RESULTS.md``
is regenerated from all files at the end (``python -m distilad.bench.results`` does it alone).

Every run passes validation anomalies to ``fit``, from the training data only: for MVTec-style
categories synthetic defects of the held-out normals, for the novelty protocols a seeded sample
of training images (:func:`distilad.data.novelty.validation_anomalies`), for ELPV the anomalous
cells its protocol reserves for validation (:mod:`distilad.data.elpv`); the result is recorded
as ``"validation"`` beside the test ``"metrics"``. With ``--validate`` the test split is never
read: the record has no test metrics, ``"test_evaluated": false``, and its run id ends in
``_val``, so settings can be chosen on validation figures alone and RESULTS.md keeps such runs
apart. ELPV test runs also score the protocol's uncertain cells (defect probability 1/3, 2/3)
against the test normals: ``metrics["image_auroc_uncertain"]`` and an ``"uncertain"`` block.

Results go to ``--results`` (default ``benchmarks/results`` under the current folder) and the
markdown to ``--markdown``; nothing else depends on running inside a checkout. The commit is
read once at the start; a checkout with uncommitted changes to tracked code is refused (the
results could not be reproduced from the recorded commit) unless ``--allow-dirty`` is given,
which records ``<sha>-dirty``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distilad.bench.record import (
    code_version,
    environment,
    peak_rss_mb,
    portable_path,
    read_json,
    write_json_atomic,
)
from distilad.errors import DistiladError
from distilad.processes import running

MVTEC = "mvtec"
NOVELTY = ("mnist", "fashion-mnist", "cifar10")
#: the ELPV solar cells (optional package elpv-dataset); its protocol and categories
ELPV = "elpv"
ELPV_CATEGORIES = ("mono", "poly")


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    protocol: str
    cls: str
    seed: int
    params: tuple[tuple[str, Any], ...]
    tag: str
    #: validation only: the test split is not read (run id ends in ``_val``)
    validate: bool = False

    @property
    def run_id(self) -> str:
        rid = f"{self.method}_{self.dataset}_{self.protocol}_{self.cls}_seed{self.seed}_{self.tag}"
        return rid + ("_val" if self.validate else "")


#: short names of common settings in derived configuration names
_TAG_ABBREVIATIONS = {"epochs": "e", "image_size": "s", "batch_size": "bs", "lr": "lr",
                      "backbone": "", "lr_schedule": "", "image_score": "pool-",
                      "schedule": "", "width": "w", "nz": "nz"}
_TAG_MAX_LEN = 64


def config_tag(params: dict[str, Any], name: str | None) -> str:
    """A short, stable, filesystem-safe name for a parameter set: ``name`` when given, else one
    derived from the settings in key order, e.g. ``{"epochs": 5, "image_size": 32}`` ->
    ``e5-s32``, ``{"lr_schedule": "cosine", "precise_bn": false}`` -> ``cosine-precise_bn_false``
    (common keys abbreviated, others ``key_value``; letters, digits and ``. _ + -`` only, so a
    derived name is also a valid ``--name``); a hash ``cfg<8 hex>`` only when that name would be
    longer than 64 characters."""
    if name:
        return name
    if not params:
        return "default"
    parts = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, bool) or value is None:
            text = json.dumps(value)
        elif isinstance(value, (list, tuple)):
            text = "x".join(str(v) for v in value)
        else:
            text = str(value)
        abbr = _TAG_ABBREVIATIONS.get(key)
        parts.append(f"{abbr}{text}" if abbr is not None and not isinstance(value, bool)
                     else f"{key}_{text}")
    tag = re.sub(r"[^A-Za-z0-9._+-]+", "_", "-".join(parts)).strip("_.-")
    if tag and len(tag) <= _TAG_MAX_LEN:
        return tag
    return "cfg" + hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]


def parse_classes(text: str, dataset: str) -> list[str]:
    """``0-9``, ``0,3,5`` or category names (``bottle``)."""
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part and all(p.isdigit() for p in part.split("-", 1)):
            a, b = map(int, part.split("-", 1))
            out.extend(str(i) for i in range(a, b + 1))
        elif part:
            out.append(part)
    if dataset in NOVELTY:
        bad = [c for c in out if not c.isdigit() or not 0 <= int(c) <= 9]
        if bad:
            raise DistiladError(f"{dataset}: classes are 0..9, got {', '.join(bad)}")
    if dataset == ELPV:
        bad = [c for c in out if c not in ELPV_CATEGORIES]
        if bad:
            raise DistiladError(f"elpv: classes are mono and poly, got {', '.join(bad)}")
    return out


@dataclass
class Task:
    """What one run trains on, validates on and (unless validating only) is tested on."""

    train: Any
    #: labelled test images; None in validation-only runs (the test split is not read)
    test: Any
    #: ``fit``'s validation argument: "synthetic" or an ImageSet of anomalous training images
    validation: Any
    description: str
    #: ELPV test runs: the uncertain cells (probability 1/3, 2/3), scored against the test
    #: normals; None elsewhere
    uncertain: Any = None
    uncertain_probabilities: Any = None


def load_task(spec: RunSpec, data_root: str | None) -> Task:
    """The data of one run; the test split is left unread when ``spec.validate``."""
    if spec.dataset == MVTEC:
        from distilad.cli import demo_data_path
        from distilad.data import mvtec_test, mvtec_train

        folder = None
        root = data_root or os.environ.get("DISTILAD_DATA")
        if root:
            for cand in (Path(root) / "mvtec_ad" / spec.cls, Path(root) / spec.cls):
                if cand.is_dir():
                    folder = cand
                    break
        if folder is None and spec.cls == "bottle" and demo_data_path().is_dir():
            folder = demo_data_path()
        if folder is None:
            raise DistiladError(f"MVTec category {spec.cls!r} not found: pass --data-root or set "
                                "DISTILAD_DATA to a folder holding mvtec_ad/<category>")
        test = None if spec.validate else mvtec_test(folder)
        return Task(mvtec_train(folder), test, "synthetic", portable_path(folder))
    if spec.dataset == ELPV:
        from distilad.data.elpv import make_elpv_split

        elpv = make_elpv_split(spec.cls, test=not spec.validate)
        return Task(elpv.train, elpv.test, elpv.validation_anomalies, elpv.description,
                    elpv.uncertain, elpv.uncertain_probabilities)
    from distilad.data.novelty import make_novelty_split, validation_anomalies

    split = make_novelty_split(spec.dataset, spec.protocol, int(spec.cls), root=data_root,
                               test=not spec.validate)
    anomalies = validation_anomalies(spec.dataset, spec.protocol, int(spec.cls), spec.seed,
                                     root=data_root)
    return Task(split.train, split.test, anomalies, split.description)


def execute(spec: RunSpec, data_root: str | None, commit: str | None = None,
            progress: bool = False) -> dict[str, Any]:
    """Fit (with validation), then score the test split unless validating only, and measure;
    returns the result record. ``commit`` is the code version read when the sweep started."""
    import torch

    import distilad

    task = load_task(spec, data_root)
    params = dict(spec.params)
    params["seed"] = spec.seed
    params.setdefault("progress", progress)
    det = distilad.create_detector(spec.method, **params)
    t0 = time.perf_counter()
    det.fit(task.train, validation=task.validation)
    fit_seconds = time.perf_counter() - t0
    info = dict(det.fit_info)
    validation = info.pop("validation", None)
    epochs = info.get("epochs")
    teacher_s = info.get("teacher_feature_seconds", 0.0)
    student_s = max(info["train_seconds"] - teacher_s, 1e-9)
    record: dict[str, Any] = {
        "run_id": spec.run_id,
        "method": spec.method,
        "dataset": spec.dataset,
        "category": spec.cls,
        "protocol": spec.protocol,
        "seed": spec.seed,
        "config": spec.tag,
        "params": {k: _portable_param(k, v) for k, v in det.params.items() if k != "progress"},
        "data": task.description,
        "test_evaluated": not spec.validate,
    }
    if not spec.validate:
        record.update(_test(det, task.test, task.uncertain, task.uncertain_probabilities))
    record.update({
        "validation": validation,
        "n_train": info["n_train"],
        "n_holdout": info["n_holdout"],
        "train_seconds": info["train_seconds"],
        "teacher_feature_seconds": teacher_s,
        "fit_seconds_total": round(fit_seconds, 3),
        "feature_cache": _portable_param("feature_cache", params.get("feature_cache")),
        "train_images_per_s": (info["n_train"] * epochs / student_s) if epochs else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "fit_info": info,
        "calibration": det.calibration.to_dict() if det.calibration else None,
        **environment(str(det.device), commit),
        "torch_threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return record


def _test(det: Any, test: Any, uncertain: Any = None,
          uncertain_probabilities: Any = None) -> dict[str, Any]:
    """Test metrics and scoring times of a fitted detector (the final evaluation); with
    ``uncertain`` images (ELPV), their row too (:func:`_uncertain_row`)."""
    from distilad.evaluate import compute_metrics
    from distilad.metrics import auroc

    result = det.score(test)
    metrics = compute_metrics(test, result)
    for name, alt in (getattr(det, "alternative_scores", None) or {}).items():
        metrics[f"image_auroc_{name}"] = auroc(test.labels, alt)
    extra: dict[str, Any] = {}
    if uncertain is not None and len(uncertain):
        extra["uncertain"] = _uncertain_row(det, test, result, uncertain, uncertain_probabilities)
        metrics["image_auroc_uncertain"] = extra["uncertain"]["image_auroc"]
    return {
        **extra,
        "metrics": metrics,
        "n_test": len(test),
        "score_seconds": round(result.seconds, 3),
        "score_teacher_seconds": round(float(getattr(det, "score_teacher_seconds", 0.0)), 3),
        "inference_ms_per_image": 1000.0 * result.seconds / max(len(test), 1),
        "inference_batch_size": det.params.get("score_batch_size"),
        "inference_batch_measurement": getattr(det, "batch_measurement", None),
    }


def _uncertain_row(det: Any, test: Any, result: Any, uncertain: Any,
                   probabilities: Any) -> dict[str, Any]:
    """ELPV's uncertain cells against the test normals (never mixed into the test metrics):
    image AUROC of test normals (0) vs all uncertain cells (1) and per defect probability, and
    the share of uncertain cells above the calibrated threshold."""
    import numpy as np

    from distilad.metrics import auroc

    normal_scores = np.asarray(result.image_scores)[np.asarray(test.labels) == 0]
    scored = det.score(uncertain)
    scores = np.asarray(scored.image_scores)
    probabilities = np.asarray(probabilities, dtype=float)

    def vs_normals(s: np.ndarray) -> float:
        return auroc(np.r_[np.zeros(len(normal_scores)), np.ones(len(s))],
                     np.r_[normal_scores, s])

    by_probability = {f"{p:.2f}": vs_normals(scores[np.isclose(probabilities, p)])
                      for p in sorted(set(np.round(probabilities, 6).tolist()))}
    flagged = (float(np.mean(scored.labels)) if scored.labels is not None else None)
    return {"n_uncertain": len(scores), "n_test_normal": len(normal_scores),
            "image_auroc": vs_normals(scores), "image_auroc_by_probability": by_probability,
            "flagged_fraction": flagged, "score_seconds": round(scored.seconds, 3)}


def _portable_param(key: str, value: Any) -> Any:
    """Cache folders of a record without this machine's absolute paths."""
    if key in ("feature_cache", "teacher_cache") and isinstance(value, str):
        return portable_path(value)
    return value


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="rd", help="method name (default rd)")
    p.add_argument("--dataset", required=True,
                   help="mvtec, elpv, mnist, fashion-mnist or cifar10 (elpv needs pip install "
                        "'distilad[elpv]')")
    p.add_argument("--protocol", default=None,
                   help="one-class (default for novelty sets) or one-class-anomalous; "
                        "mvtec uses 'mvtec', elpv 'elpv'")
    p.add_argument("--classes", default=None,
                   help="novelty: 0-9 (default) or a list; mvtec: category names (bottle); "
                        "elpv: mono,poly (default)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="method argument, value as JSON (repeatable)")
    p.add_argument("--name", help="name of this configuration (default: derived from --set, "
                                  "e.g. epochs=5 image_size=32 -> e5-s32)")
    p.add_argument("--data-root", help="folder holding MNIST/, FashionMNIST/, cifar10-jpeg/, "
                                       "mvtec_ad/ (default $DISTILAD_DATA)")
    p.add_argument("--validate", action="store_true",
                   help="validation only, for choosing settings: the test split is never read; "
                        "held-out normals vs synthetic defects (mvtec), the reserved anomalous "
                        "cells (elpv) or other classes' training images (novelty); run ids end "
                        "in _val")
    p.add_argument("--results", default="benchmarks/results",
                   help="folder of per-run JSON files, relative to the current folder "
                        "(default: %(default)s)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run although tracked code has uncommitted changes (records <sha>-dirty)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars (run k of n and results are still printed)")
    p.add_argument("--feature-cache", default=None,
                   help="teacher-feature cache folder (default $DISTILAD_CACHE/features or "
                        "~/.cache/distilad/features; 'none' to disable); P-KDGAN's pretrained "
                        "teachers go beside it, in gan-teachers/")
    p.add_argument("--no-markdown", action="store_true", help="do not regenerate RESULTS.md")
    p.add_argument("--markdown", default=None,
                   help="RESULTS.md to regenerate from every file in --results (default: "
                        "RESULTS.md beside a results folder named 'results', as "
                        "benchmarks/RESULTS.md for benchmarks/results, else inside it)")


def markdown_default(results: Path) -> Path:
    """Where ``bench`` regenerates RESULTS.md for ``results``: beside a folder named ``results``
    (``benchmarks/results`` -> ``benchmarks/RESULTS.md``), else inside the folder."""
    return results.parent / "RESULTS.md" if results.name == "results" else results / "RESULTS.md"


def build_specs(args: argparse.Namespace) -> list[RunSpec]:
    from distilad.cli import parse_set_options

    dataset = args.dataset
    if dataset not in (MVTEC, ELPV, *NOVELTY):
        raise DistiladError(f"unknown dataset {dataset!r}; choose mvtec, {ELPV}, "
                            f"{', '.join(NOVELTY)}")
    protocol = args.protocol or {MVTEC: MVTEC, ELPV: ELPV}.get(dataset, "one-class")
    if dataset == ELPV and protocol != ELPV:
        raise DistiladError(f"unknown protocol {protocol!r} for elpv; it has one, 'elpv'")
    if dataset in NOVELTY and protocol not in ("one-class", "one-class-anomalous"):
        raise DistiladError(f"unknown protocol {protocol!r}; one-class or one-class-anomalous")
    default_classes = {MVTEC: "bottle", ELPV: ",".join(ELPV_CATEGORIES)}.get(dataset, "0-9")
    classes = parse_classes(args.classes or default_classes, dataset)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise DistiladError(f"--data-root {args.data_root} is not a folder")
    if args.name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", args.name):
        raise DistiladError(f"--name {args.name!r} must be letters, digits and . _ + - (it is "
                            "part of the result file names)")
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        raise DistiladError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    if not seeds:
        raise DistiladError(f"--seeds names no seed: {args.seeds!r}")
    params = parse_set_options(args.set)
    cache = args.feature_cache
    if cache is None:
        cache = str(Path(os.environ.get("DISTILAD_CACHE", Path.home() / ".cache" / "distilad"))
                    / "features")
    tag = config_tag(params, args.name)
    from distilad.detector import _REGISTRY, _import_methods

    _import_methods()
    if args.method not in _REGISTRY:
        raise DistiladError(f"unknown method {args.method!r}; available: {', '.join(sorted(_REGISTRY))}")
    if cache != "none" and "feature_cache" in _REGISTRY[args.method].defaults:
        params.setdefault("feature_cache", cache)
    if cache != "none" and "teacher_cache" in _REGISTRY[args.method].defaults:
        params.setdefault("teacher_cache", str(Path(cache).parent / "gan-teachers"))
    for seed in seeds:  # every argument is checked before any work
        _REGISTRY[args.method].checked_params({**params, "seed": seed})
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
    validate = bool(getattr(args, "validate", False))
    return [RunSpec(args.method, dataset, protocol, c, s, frozen, tag, validate)
            for c in classes for s in seeds]


def claim(lock: Path) -> bool:
    """Take the lock file of a run (holding this process id); a lock whose process is gone (a
    killed worker) is taken over. False when a live process holds it."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (ValueError, FileNotFoundError):
                pid = None  # unreadable or gone: nobody holds it
            if pid is not None and running(pid):
                return False
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def main_bench(args: argparse.Namespace) -> int:
    from distilad.writable import check_file_target, check_folder_target

    specs = build_specs(args)
    results = check_folder_target(args.results, "results folder")
    if args.markdown is None:
        # never the repository's RESULTS.md for a results folder elsewhere: it would be
        # regenerated from that folder's runs alone
        args.markdown = markdown_default(Path(args.results))
    if not args.no_markdown:
        check_file_target(args.markdown, overwrite=True, what="--markdown file",
                          example="RESULTS.md")
    todo = [s for s in specs if read_json(results / f"{s.run_id}.json") is None]
    mode = "validation only (test split not read)" if specs and specs[0].validate else "test"
    print(f"bench: {len(specs)} runs, {len(specs) - len(todo)} already done, {len(todo)} to run "
          f"({mode}); results in {results}", flush=True)
    # user errors (missing data, unknown category) surface before anything is written
    # (each MVTec category is a folder of its own; novelty classes share one data root)
    if todo and todo[0].dataset == MVTEC:
        checks = list({s.cls: s for s in todo}.values())
    else:
        checks = todo[:1]
    for spec in checks:
        load_task(spec, args.data_root)
    commit = _checked_commit(bool(args.allow_dirty)) if todo else None
    results.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    progress = not getattr(args, "quiet", False)
    for k, spec in enumerate(todo, 1):
        out = results / f"{spec.run_id}.json"
        lock = results / f".{spec.run_id}.lock"
        # several `distilad bench` processes may share a sweep: skip what another one finished
        # or is running now
        if read_json(out) is not None or not claim(lock):
            print(f"[{k}/{len(todo)}] {spec.run_id}: done or running elsewhere, skipped", flush=True)
            continue
        print(f"[{k}/{len(todo)}] {spec.run_id}: running", flush=True)
        try:
            t0 = time.perf_counter()
            record = execute(spec, args.data_root, commit, progress)
            record["wall_seconds"] = round(time.perf_counter() - t0, 3)
            write_json_atomic(out, record)
        finally:
            lock.unlink(missing_ok=True)
        dt = time.perf_counter() - t0
        elapsed = time.perf_counter() - t_start
        eta = elapsed / k * (len(todo) - k)
        print(f"[{k}/{len(todo)}] {spec.run_id}: {_summary(record)} in {dt:.0f} s; "
              f"sweep ETA {eta / 60:.1f} min", flush=True)
    if not args.no_markdown:
        from distilad.bench.results import write_results_md

        path = write_results_md(results, Path(args.markdown))
        print(f"bench: wrote {path}")
    return 0


def _checked_commit(allow_dirty: bool) -> str:
    """The code's commit, read once per sweep; refuses uncommitted code unless allowed."""
    sha, changed = code_version()
    if changed and not allow_dirty:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3
                                          else "")
        raise DistiladError(f"uncommitted changes to tracked code ({shown}): commit them so the "
                            "results record the code that made them, or pass --allow-dirty")
    if changed:
        print(f"bench: warning: uncommitted changes recorded as {sha[:12]}-dirty", file=sys.stderr)
    return sha + "-dirty" if changed and sha != "unknown" else sha


def _summary(record: dict[str, Any]) -> str:
    """One line: test and validation AUROC, teacher time, FLOPs ratio where known."""
    val = (record.get("validation") or {}).get("metrics", {})
    parts = []
    if "metrics" in record:
        parts.append(f"image AUROC {record['metrics'].get('image_auroc', float('nan')):.4f}")
    parts.append(f"validation AUROC {val.get('image_auroc', float('nan')):.4f}")
    text = ", ".join(parts) + f" (teacher {record['teacher_feature_seconds']:.0f} s"
    ratio = record["fit_info"].get("flops_ratio")
    return text + (f"; FLOPs teacher:student {ratio:.1f}:1)" if ratio else ")")
