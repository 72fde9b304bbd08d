"""OOD detection with a CIFAR-10 classifier, AdaptiveMix on vs off (issue 12 part 3). Writes one
JSON per (seed, arm) into benchmarks/results/ (``kind: ood_adaptivemix``); RESULTS.md shows the
paired table.

    OMP_NUM_THREADS=1 python benchmarks/ood_adaptivemix.py [--seeds 0,1,2] [--width 8]
        [--epochs 2] [--held-out 0] [--data-root DIR]

Per seed, both arms (``off``: mixup cross-entropy; ``on``: the same + the AdaptiveMix MSE on the
unit embedding, weight 1) start from the same weights and see the same batches, augmentations and
mixtures (``distilad.ood.classifier``). The classifier trains on the CIFAR-10 training images of
every class but the held-out ones (``--held-out``, default class 0, airplane: one run then serves
the one-class-anomalous idea too; ``--held-out none`` trains on all ten). In-distribution test:
the CIFAR-10 test images of the trained classes. OOD test sets: the CIFAR-10 test images of the
held-out classes, Fashion-MNIST and MNIST test (28 px gray, upscaled bilinearly to 32 px and
repeated over RGB). Scores (``distilad.ood.scoring``): max logit (nearest head direction) and the
nearest class subspace fitted on ``--fit-per-class`` training images per class (the first ones
of each class, without augmentation). Nothing is chosen on test data: the settings are fixed
before the runs and every run is reported.

The full-size setting of the official code (WRN-28-10, 200 epochs, lr x0.2 at 60/120/160) does
not fit a CPU; the closest this script allows, for a GPU machine, is
``--width 64 --epochs 200 --device cuda`` (ResNet-18 at its usual width, cosine decay; not yet run
on a GPU). Measured here: ``--width 8 --epochs 2`` (the defaults), 4.5-7 min per run on one
thread of a shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distilad.bench.record import environment, git_commit, peak_rss_mb, portable_path, write_json_atomic
from distilad.data.novelty import CLASS_NAMES, load_split
from distilad.ood.classifier import TrainConfig, embed_images, mixing_residual, train_classifier
from distilad.ood.data import kept_classes, relabel
from distilad.ood.scoring import class_subspaces, nearest_subspace_similarity, ood_auroc

ARMS = {"off": False, "on": True}


def default_data_root() -> str:
    """``$DISTILAD_DATA``, else ``../shared/data`` beside the checkout."""
    return os.environ.get("DISTILAD_DATA", "").strip() or str(Path("..") / "shared" / "data")


def first_per_class(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` images of each class (in file order)."""
    return np.concatenate([np.flatnonzero(labels == k)[:n] for k in np.unique(labels)])


def load_sets(root: str, held_out: list[int], ood_images: int | None,
              train_per_class: int | None = None) -> dict[str, Any]:
    """Training images of the kept classes (labels renumbered; the first ``train_per_class`` of
    each when given), the in-distribution test, and the OOD test sets by name."""
    x_tr, y_tr = load_split("cifar10", "train", root)
    x_te, y_te = load_split("cifar10", "test", root)
    kept = kept_classes(10, held_out)
    m_tr, l_tr = relabel(y_tr, kept)
    m_te, l_te = relabel(y_te, kept)
    ood: dict[str, np.ndarray] = {}
    if held_out:
        names = "+".join(CLASS_NAMES["cifar10"][c] for c in held_out)
        ood[f"cifar10 held-out ({names})"] = x_te[np.isin(y_te, held_out)]
    for name in ("fashion-mnist", "mnist"):
        x = load_split(name, "test", root)[0]
        ood[name] = x[:ood_images] if ood_images else x
    x_tr = x_tr[m_tr]
    if train_per_class:
        idx = np.sort(first_per_class(l_tr, train_per_class))
        x_tr, l_tr = x_tr[idx], l_tr[idx]
    return {"kept": kept, "train": (x_tr, l_tr), "test_in": (x_te[m_te], l_te), "ood": ood}


def run_one(sets: dict[str, Any], cfg: TrainConfig, fit_per_class: int) -> dict[str, Any]:
    """Train one arm and evaluate it: accuracy, AUROC per OOD set and score, timings."""
    x_tr, y_tr = sets["train"]
    k = len(sets["kept"])
    t0 = time.perf_counter()
    model, history = train_classifier(x_tr, y_tr, k, cfg, log=lambda s: print("  " + s, flush=True))
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    fit_idx = first_per_class(y_tr, fit_per_class)
    bases = class_subspaces(embed_images(model, x_tr[fit_idx]), y_tr[fit_idx], k)
    head = model.head.weight.detach().cpu()
    x_in, y_in = sets["test_in"]
    e_in = embed_images(model, x_in)
    accuracy = float(((e_in @ head.T).abs().argmax(1).numpy() == y_in).mean())
    sim_in = {"max_logit": nearest_subspace_similarity(e_in, head),
              "subspace": nearest_subspace_similarity(e_in, bases)}
    auroc: dict[str, dict[str, float]] = {}
    for name, x_out in sets["ood"].items():
        e_out = embed_images(model, x_out)
        auroc[name] = {"max_logit": ood_auroc(sim_in["max_logit"],
                                              nearest_subspace_similarity(e_out, head)),
                       "subspace": ood_auroc(sim_in["subspace"],
                                             nearest_subspace_similarity(e_out, bases))}
    n_res = min(2000, len(x_in))
    residual = mixing_residual(model, x_in[:n_res], e_in[:n_res], seed=cfg.seed)
    eval_s = time.perf_counter() - t0
    return {"metrics": {"accuracy_in": accuracy, "auroc": auroc,
                        "mixing_residual_test": residual},
            "history": history,
            "timings": {"train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
                        "seconds_per_epoch": [round(s, 1) for s in history["seconds_per_epoch"]]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="off,on", help="off, on or both (off,on)")
    ap.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = the usual)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--adaptivemix-weight", type=float, default=1.0)
    ap.add_argument("--held-out", default="0",
                    help="CIFAR-10 classes left out of training and used as an OOD set "
                         "(comma-separated), or 'none'")
    ap.add_argument("--ood-images", type=int, default=0,
                    help="first N test images of Fashion-MNIST / MNIST (0 = all 10,000)")
    ap.add_argument("--train-per-class", type=int, default=0,
                    help="first N training images per class (0 = all; a scaled-down trial)")
    ap.add_argument("--fit-per-class", type=int, default=500,
                    help="training images per class that fit the class subspaces")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the full-size setting)")
    ap.add_argument("--data-root", default=default_data_root())
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--name", default="", help="config name (default: w<width>-e<epochs>-h<held-out>)")
    ap.add_argument("--allow-dirty", action="store_true",
                    help="run with uncommitted code changes (not for recorded results)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = git_commit()
    if commit.endswith("-dirty") and not args.allow_dirty:
        sys.exit("ood_adaptivemix: error: uncommitted code changes; commit first "
                 "(or --allow-dirty for a trial that is not recorded as a result)")
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a.strip() for a in args.arms.split(",")]
    if any(a not in ARMS for a in arms):
        sys.exit(f"ood_adaptivemix: error: --arms takes off and/or on, got {args.arms!r}")
    held_out = [] if args.held_out == "none" else [int(c) for c in args.held_out.split(",")]
    held = "+".join(map(str, held_out)) or "none"
    name = args.name or f"w{args.width}-e{args.epochs}-h{held}"
    sets = load_sets(args.data_root, held_out, args.ood_images or None,
                     args.train_per_class or None)
    for seed in seeds:
        for arm in arms:
            out = Path(args.results) / f"ood_adaptivemix_cifar10_{name}_seed{seed}_{arm}.json"
            if out.exists():
                print(f"skip {out} (exists)")
                continue
            cfg = TrainConfig(width=args.width, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, adaptivemix=ARMS[arm],
                              adaptivemix_weight=args.adaptivemix_weight, seed=seed,
                              device=args.device)
            print(f"seed {seed}, AdaptiveMix {arm}", flush=True)
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            result = run_one(sets, cfg, args.fit_per_class)
            result["timings"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
            record = {
                "kind": "ood_adaptivemix",
                "name": name,
                "dataset": "cifar10",
                "arm": arm,
                "adaptivemix": ARMS[arm],
                "seed": seed,
                "config": result["history"].pop("config"),
                "model": f"ResNet-18 layout, width {args.width}, unit embedding "
                         f"{8 * args.width}-d, frozen orthogonal |linear| head",
                "held_out_classes": held_out,
                "trained_classes": sets["kept"],
                "n_train": len(sets["train"][1]),
                "train_per_class": args.train_per_class or "all",
                "n_test_in": len(sets["test_in"][1]),
                "n_ood": {k: len(v) for k, v in sets["ood"].items()},
                "fit_per_class": args.fit_per_class,
                "scores": {"max_logit": "max_k |<w_k, e>| of the frozen head (nearest head "
                                        "direction); OOD = lower",
                           "subspace": "max_k |<u_k, e>|, u_k the first singular vector of "
                                       "class k's training embeddings; OOD = lower"},
                **result,
                "load_average_1min_before_after": [round(load_before, 2),
                                                   round(os.getloadavg()[0], 2)],
                "note": "CPU budget run; other processes shared this machine's 2 cores",
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "data_root": portable_path(args.data_root),
                **environment(args.device, commit=commit),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            write_json_atomic(out, record)
            m = record["metrics"]
            print(f"  accuracy {m['accuracy_in']:.4f}; AUROC "
                  + "; ".join(f"{k}: {v['max_logit']:.4f} / {v['subspace']:.4f}"
                              for k, v in m["auroc"].items())
                  + f"; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
