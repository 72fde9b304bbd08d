"""Command line: ``distilad fit | test | predict | demo | list | bench``.

User errors (missing folder, unreadable image, unknown method, bad model file, existing output)
end with one line on stderr and exit status 2; nothing a user wrote before is overwritten unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from distilad.bench.record import write_json_atomic
from distilad.errors import DistiladError

EXIT_USER_ERROR = 2


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as a dict; values are JSON where they parse, else strings."""
    params: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise DistiladError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v)
    return params


def _method_params(args: argparse.Namespace) -> dict[str, Any]:
    params = parse_set_options(args.set)
    for key in ("epochs", "backbone", "weights", "image_size", "seed", "device", "batch_size"):
        val = getattr(args, key, None)
        if val is not None:
            params[key] = val
    if getattr(args, "quiet", False):
        params["progress"] = False
    return params


def _fresh_output(path: Path, overwrite: bool) -> Path:
    """Refuse to write into a non-empty folder unless asked."""
    if path.exists() and not path.is_dir():
        raise DistiladError(f"output {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise DistiladError(f"output folder {path} is not empty; choose another or pass --overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _print_metrics(m: dict[str, float]) -> None:
    names = [("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"),
             ("aupro", "AUPRO@0.3"), ("pro_rd4ad_per_image", "PRO (RD4AD per-image)"),
             ("image_ap", "image AP"), ("image_f1_max", "image F1-max"),
             ("fpr_at_threshold", "FPR at threshold"), ("tpr_at_threshold", "TPR at threshold")]
    for key, label in names:
        if key in m:
            print(f"  {label:<24s} {m[key]:.4f}")


# --- commands ------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from distilad import list_detectors
    from distilad.backbones import OFFLINE_TEACHERS, WEIGHTS_FILE_TEACHERS
    from distilad.detector import _REGISTRY

    print("methods:")
    for name in list_detectors():
        doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<14s} {doc}")
    print("teachers (offline ImageNet weights):", ", ".join(OFFLINE_TEACHERS))
    print("teachers (need --weights PATH):", ", ".join(WEIGHTS_FILE_TEACHERS), "and other timm CNNs")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import distilad

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise DistiladError(f"{out} exists; choose another path or pass --overwrite")
    det = distilad.create_detector(args.method, **_method_params(args))
    det.fit(args.data)
    det.save(out, overwrite=args.overwrite)
    info = det.fit_info
    print(f"fitted {args.method} on {info['n_train']} images ({info['n_holdout']} held out for "
          f"calibration) in {info['train_seconds']:.1f} s; threshold "
          f"{det.calibration.threshold:.4f}; saved {out}")
    line = computation_line(info)
    if line:
        print(line)
    return 0


def computation_line(info: dict[str, Any]) -> str:
    """FLOPs and parameters of the inference networks (GAN methods), '' when not recorded."""
    if "student_flops" in info:
        return (f"generator FLOPs per image: teacher {info['teacher_flops'] / 1e6:.2f} M, student "
                f"{info['student_flops'] / 1e6:.3f} M ({info['flops_ratio']:.1f}:1); parameters "
                f"{info['teacher_params']:,} / {info['student_params']:,} "
                f"({info['params_ratio']:.1f}:1)")
    if "generator_flops" in info:
        return (f"generator FLOPs per image: {info['generator_flops'] / 1e6:.2f} M; parameters "
                f"{info['generator_params']:,}")
    return ""


def run_test(det: Any, data: Any, out: Path, title: str) -> dict[str, float]:
    """Evaluate, write metrics.json and report.html into ``out``; returns the metrics."""
    from distilad import metrics as M
    from distilad.evaluate import evaluate
    from distilad.report import write_html_report

    m, result, images = evaluate(det, data)
    cal = det.calibration
    roc = None
    if "image_auroc" in m:
        fpr, tpr, _ = M.roc_curve(images.labels, result.image_scores)
        roc = (fpr, tpr, m["image_auroc"])
    maps = result.anomaly_maps
    vmin = cal.map_vmin if cal and cal.map_vmin is not None else 0.0
    vmax = cal.map_vmax if cal and cal.map_vmax is not None else 1.0
    masks = [images.mask(i) for i in range(len(images))] if images.has_masks else None
    report = write_html_report(
        out, title=title, metrics=m, images=images, maps=None if maps is None else list(maps),
        masks=masks, names=images.names, labels=images.labels, scores=result.image_scores,
        threshold=cal.threshold if cal else None, vmin=vmin, vmax=vmax, roc=roc,
        extra={"method": det.name, "data": images.description,
               "colour scale": f"{vmin:.4f} .. {vmax:.4f} (from held-out normals)",
               "threshold": f"{cal.threshold:.4f} (target FPR {cal.target_fpr})" if cal else "-"})
    per_image = [{"name": n, "label": int(lab), "score": float(s),
                  "normalized_score": None if result.normalized_scores is None
                  else float(result.normalized_scores[i]),
                  "predicted": None if result.labels is None else int(result.labels[i])}
                 for i, (n, lab, s) in enumerate(zip(images.names, images.labels,
                                                      result.image_scores, strict=True))]
    write_json_atomic(out / "metrics.json", {"metrics": m, "model": det.config(), "images": per_image,
                                       "scoring_seconds": result.seconds})
    print(f"report: {report}")
    return m


def cmd_test(args: argparse.Namespace) -> int:
    import distilad
    from distilad.data import as_image_set

    det = distilad.load_detector(args.model, device=args.device or "auto")
    images = as_image_set(args.data, split="test")
    if images.labels is None:
        raise DistiladError(f"{args.data} has no labels: `test` needs an MVTec-style folder with "
                            "test/good and test/<defect>; use `predict` for unlabelled images")
    out = _fresh_output(Path(args.output), args.overwrite)
    m = run_test(det, images, out, f"{det.name} on {args.data}")
    print(f"{det.name} on {args.data}:")
    _print_metrics(m)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import distilad
    from distilad.data import image_files
    from distilad.report import overlay_heatmap, save_png

    det = distilad.load_detector(args.model, device=args.device or "auto")
    images = image_files(args.inputs)
    for i in range(len(images)):  # fail on an unreadable file before anything is written
        images.image_shape(i)
    out = _fresh_output(Path(args.output), args.overwrite)
    result = det.score(images)
    cal = det.calibration
    rows = []
    for i, name in enumerate(images.names):
        row = {"file": str(images.paths[i]), "score": float(result.image_scores[i]),
               "normalized_score": float(result.normalized_scores[i]),
               "label": int(result.labels[i])}
        if result.anomaly_maps is not None and cal.map_vmin is not None:
            png = out / "overlays" / f"{i:05d}_{Path(name).stem}.png"
            save_png(overlay_heatmap(images.image(i), result.anomaly_maps[i], cal.map_vmin,
                                     cal.map_vmax), png)
            row["overlay"] = str(png)
        rows.append(row)
        print(f"{row['label']}  {row['normalized_score']:.3f}  {row['file']}")
    write_json_atomic(out / "predictions.json", {"threshold": cal.threshold, "predictions": rows})
    with open(out / "predictions.csv", "w") as f:
        f.write("file,score,normalized_score,label\n")
        for r in rows:
            f.write(f"{r['file']},{r['score']:.6g},{r['normalized_score']:.4f},{r['label']}\n")
    n_anom = sum(r["label"] for r in rows)
    print(f"{n_anom} of {len(rows)} images anomalous; results in {out}")
    return 0


def demo_data_path() -> Path:
    """The embedded MVTec AD bottle copy (repo ``data/``), or ``$DISTILAD_DEMO_DATA``."""
    env = os.environ.get("DISTILAD_DEMO_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "mvtec_ad" / "bottle"


def cmd_demo(args: argparse.Namespace) -> int:
    import distilad
    from distilad.backbones import DEFAULT_TEACHER

    data = Path(args.data) if args.data else demo_data_path()
    if not data.is_dir():
        raise DistiladError(f"demo data not found at {data}; run from a clone of the repository "
                            "or set DISTILAD_DEMO_DATA to an MVTec-style category folder")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = _fresh_output(Path(args.output) if args.output else Path("runs") / f"demo-{stamp}",
                        args.overwrite)
    params = _method_params(args)
    params.setdefault("epochs", 12)
    print(f"distilad demo: Reverse Distillation ({params.get('backbone', DEFAULT_TEACHER)} "
          f"teacher) on {data} for {params['epochs']} epochs; output in {out}")
    det = distilad.create_detector("rd", **params)
    det.fit(data)
    det.save(out / "model.distilad")
    print(f"trained in {det.fit_info['train_seconds']:.0f} s on {det.fit_info['n_train']} images")
    m = run_test(det, data, out, f"distilad demo: RD on {data.name}")
    print("test metrics:")
    _print_metrics(m)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from distilad.bench.runner import main_bench

    return main_bench(args)


# --- parser ---------------------------------------------------------------------------------------
def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--backbone", help="teacher network (see `distilad list`)")
    p.add_argument("--weights", help="local weights file for the teacher")
    p.add_argument("--image-size", dest="image_size", type=int, help="input size in pixels")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="training batch size")
    p.add_argument("--seed", type=int, help="random seed (also picks the held-out images)")
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other method argument, value as JSON (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from distilad import __version__

    parser = argparse.ArgumentParser(prog="distilad", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"distilad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="methods and teachers")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("fit", help="train a detector on normal images and save it")
    p.add_argument("method", help="method name (see `distilad list`)")
    p.add_argument("data", help="MVTec-style category folder or a folder of normal images")
    p.add_argument("-o", "--output", required=True, help="model file to write (.distilad)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _add_method_options(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("test", help="evaluate a model on labelled test data; JSON + HTML report")
    p.add_argument("model", help="model file written by `distilad fit`")
    p.add_argument("data", help="MVTec-style category folder (its test/ split is used)")
    p.add_argument("-o", "--output", required=True, help="report folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("predict", help="score images: scores, labels, overlay PNGs")
    p.add_argument("model", help="model file written by `distilad fit`")
    p.add_argument("inputs", nargs="+", help="image files and/or folders")
    p.add_argument("-o", "--output", required=True, help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    p.add_argument("--device", help="auto (default), cpu, cuda, mps")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="train and test RD on the embedded MVTec AD bottle data")
    p.add_argument("--data", help="another MVTec-style category folder")
    p.add_argument("-o", "--output", help="output folder (default runs/demo-<time>)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    _add_method_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmark sweeps (method x dataset x protocol x class x seed)")
    from distilad.bench.runner import add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DistiladError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        # one line, even when the message embeds a multi-line message from torch
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"distilad: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("distilad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
