"""Issue 11's teacher study for Transformaly: which EfficientNet-Lite and input size give the best
*pretrained density* (the part of the score that needs no training), chosen on validation.
Writes one JSON per (dataset, teacher, size, seed) into benchmarks/results/
(``kind`` = ``study_transformaly_teacher``).

    OMP_NUM_THREADS=1 python benchmarks/study_transformaly_teacher.py --dataset cifar10 \\
        --backbone efficientnet_lite2 --image-size 224 [--classes 0-9] [--seed 0] \\
        [--data-root ../shared/data] [--test] [--commit SHA]

The teacher's pooled feature (``block_features`` with no boundaries, the detector's own code) is
computed once for the training images the chosen classes need (their own images and their
validation anomalies) and, with ``--test``, for the whole test split; every class reuses them.
Per class, exactly as ``distilad bench`` and ``Transformaly.fit`` split it: the class's training
images, ``holdout_fraction`` 0.1 held out by ``holdout_split(n, 0.1, seed)``; PCA whitening (90 %
of the variance) and a Gaussian fitted on the rest; validation = the held-out normals vs
``validation_anomalies(dataset, "one-class", c, seed)`` (999 training images of the other nine
classes); test = the whole test split. The score is minus the log-likelihood (the ``pretrained``
part of Transformaly's score, deterministic given the split). The choice reads the validation
AUROC only; without ``--test`` the test split is never read. The teacher-student part is not
studied here: it needs the clones trained with each teacher (``distilad bench``), 2-7x the cost
of Lite0 at 128 px on this CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from distilad.backbones.block_cache import block_features
from distilad.backbones.blocks import create_block_teacher
from distilad.bench.record import environment, git_commit, peak_rss_mb, write_json_atomic
from distilad.bench.runner import parse_classes
from distilad.data.novelty import NoveltyImageSet, load_split, validation_anomalies
from distilad.detector import Detector, holdout_split
from distilad.methods.transformaly.density import Gaussian, Whitening
from distilad.methods.transformaly.detector import LITE_TEACHERS, Transformaly
from distilad.metrics import auroc

#: the method's defaults, so the study splits and whitens as a default fit does
HOLDOUT_FRACTION = Detector.common_defaults["holdout_fraction"]
WHITENING_THRESHOLD = Transformaly.defaults["whitening_threshold"]


def pretrained_scores(train: torch.Tensor, *evaluate: torch.Tensor) -> list[np.ndarray]:
    """Fit whitening + Gaussian on ``train`` (N, D); minus the log-likelihood of each set."""
    whitening = Whitening.fit(train, WHITENING_THRESHOLD)
    density = Gaussian.fit(whitening(train))
    return [(-density.log_likelihood(whitening(x))).numpy() for x in evaluate]


def class_rows(dataset: str, cls: int, seed: int, root: str | None, train_labels: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the training split: (fitted on, held out, validation anomalies) for ``cls``."""
    members = np.flatnonzero(train_labels == cls)
    fit_idx, hold_idx = holdout_split(len(members), HOLDOUT_FRACTION, seed)
    anomalies = validation_anomalies(dataset, "one-class", cls, seed, root)
    anomaly_rows = np.array([int(n.split("/")[1]) for n in anomalies.names])
    return members[fit_idx], members[hold_idx], anomaly_rows


def study_class(cls: int, rows: tuple[np.ndarray, np.ndarray, np.ndarray], needed: np.ndarray,
                train_feat: torch.Tensor, test_feat: torch.Tensor | None,
                test_labels: np.ndarray | None) -> dict:
    """Validation (and test) AUROC of the pretrained density of class ``cls``; ``train_feat``
    (len(needed), D) holds the features of the sorted training rows ``needed``."""
    fit, hold, anom = (train_feat[torch.from_numpy(np.searchsorted(needed, r))] for r in rows)
    scored = pretrained_scores(fit, hold, anom, *([] if test_feat is None else [test_feat]))
    val_labels = np.r_[np.zeros(len(hold)), np.ones(len(anom))]
    out = {"class": cls, "n_train": len(fit), "n_holdout": len(hold),
           "n_validation_anomalies": len(anom),
           "validation_auroc": auroc(val_labels, np.r_[scored[0], scored[1]])}
    if test_feat is not None:
        out["test_auroc"] = auroc((test_labels != cls).astype(int), scored[2])
    return out


def pooled_features(teacher: torch.nn.Module, images: np.ndarray, rows: np.ndarray, size: int,
                    batch_size: int, what: str) -> tuple[torch.Tensor, float]:
    """Pooled features (len(rows), D) of ``images[rows]`` and the seconds they took."""
    subset = NoveltyImageSet(images[rows], np.zeros(len(rows), np.int64),
                             [f"{what}/{i:05d}" for i in rows], what)
    t0 = time.perf_counter()
    feats, _ = block_features(teacher, subset, size, (), batch_size, "cpu", None, False, what)
    return feats, round(time.perf_counter() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=("cifar10", "fashion-mnist", "mnist"), required=True)
    ap.add_argument("--backbone", default="efficientnet_lite0",
                    choices=LITE_TEACHERS)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--classes", default="0-9")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--test", action="store_true",
                    help="also score the test split (off: the test split is never read)")
    ap.add_argument("--commit", default=None, help="the code version (default: git HEAD)")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    commit = args.commit or git_commit()  # read at start: the run is long
    t_start = time.perf_counter()
    teacher = create_block_teacher(args.backbone, None, args.image_size).eval()
    classes = [int(c) for c in parse_classes(args.classes, args.dataset)]
    train_images, train_labels = load_split(args.dataset, "train", args.data_root)
    rows = {c: class_rows(args.dataset, c, args.seed, args.data_root, train_labels)
            for c in classes}
    needed = np.unique(np.concatenate([np.concatenate(r) for r in rows.values()]))
    seconds = {}
    train_feat, seconds["train"] = pooled_features(teacher, train_images, needed,
                                                   args.image_size, args.batch_size, "train")
    print(f"{args.dataset} train: {len(needed)} pooled features in {seconds['train']} s",
          flush=True)
    test_feat = test_labels = None
    if args.test:
        test_images, test_labels = load_split(args.dataset, "test", args.data_root)
        test_feat, seconds["test"] = pooled_features(teacher, test_images,
                                                     np.arange(len(test_images)),
                                                     args.image_size, args.batch_size, "test")
    per_class = []
    for c in classes:
        row = study_class(c, rows[c], needed, train_feat, test_feat, test_labels)
        per_class.append(row)
        print(f"class {c}: validation {100 * row['validation_auroc']:.2f}"
              + (f", test {100 * row['test_auroc']:.2f}" if args.test else ""), flush=True)
    short = args.backbone.replace("efficientnet_", "")
    record = {
        "kind": "study_transformaly_teacher",
        "method": "transformaly",
        "dataset": args.dataset,
        "protocol": "one-class",
        "seed": args.seed,
        "params": {"backbone": args.backbone, "image_size": args.image_size,
                   "holdout_fraction": HOLDOUT_FRACTION,
                   "whitening_threshold": WHITENING_THRESHOLD},
        "per_class": per_class,
        "validation_auroc_mean": float(np.mean([r["validation_auroc"] for r in per_class])),
        "test_evaluated": bool(args.test),
        "test_auroc_mean": (float(np.mean([r["test_auroc"] for r in per_class]))
                            if args.test else None),
        "feature_seconds": seconds,
        "n_train_features": int(len(needed)),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **environment("cpu", commit),
        "command": ("python benchmarks/study_transformaly_teacher.py --dataset "
                    f"{args.dataset} --backbone {args.backbone} --image-size {args.image_size} "
                    f"--classes {args.classes} --seed {args.seed}" + (" --test" if args.test else "")),
    }
    name = (f"study_transformaly_teacher_{args.dataset}_{short}_{args.image_size}_"
            f"c{args.classes.replace(',', '_')}_seed{args.seed}" + ("" if args.test else "_val"))
    path = write_json_atomic(Path(args.results) / f"{name}.json", record)
    print(f"wrote {path}: validation {100 * record['validation_auroc_mean']:.2f}"
          + (f", test {100 * record['test_auroc_mean']:.2f}" if args.test else ""))


if __name__ == "__main__":
    main()
