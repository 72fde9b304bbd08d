"""Command line: ``distilad fit | test | predict | export | serve | demo | list | bench``.

User errors (missing folder, unreadable image, unknown method, bad model file, existing output)
end with one line on stderr and exit status 2; nothing a user wrote before is overwritten unless
``--overwrite`` is given. Output folders of ``test``, ``predict`` and ``demo`` appear complete
or not at all (see :mod:`distilad.report.staging`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distilad.errors import DataError, DistiladError

if TYPE_CHECKING:
    from distilad.report.staging import StagedFolder

EXIT_USER_ERROR = 2


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``--set KEY=VALUE`` options as a dict; values are JSON where they parse, else strings
    (so ``lr=abc`` reaches the method's checks as the string 'abc' and is refused there)."""
    params: dict[str, Any] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise DistiladError(f"--set expects KEY=VALUE, got {item!r}")
        params[k.strip()] = _parse_value(v)
    return params


def _method_params(args: argparse.Namespace) -> dict[str, Any]:
    """Method arguments from ``--set`` and the named options (which win); checked by
    ``create_detector``."""
    params = parse_set_options(args.set)
    for key in ("epochs", "backbone", "weights", "image_size", "seed", "device", "batch_size",
                "preset"):
        val = getattr(args, key, None)
        if val is not None:
            params[key] = val
    if getattr(args, "quiet", False):
        params["progress"] = False
    return params


def _fresh_output(path: Path, overwrite: bool, inputs: list[str]) -> StagedFolder:
    """The output folder as a :class:`StagedFolder`: refused now (before any work) when it is a
    file, a non-empty folder without ``--overwrite``, or holds one of ``inputs`` or the current
    folder; written in a temporary folder beside it and moved into place only when complete (an
    error or Ctrl-C leaves no partial folder and the earlier results as they were)."""
    from distilad.report import StagedFolder

    return StagedFolder(path, overwrite, keep=inputs)


def _print_metrics(m: dict[str, Any], notes: list[str] | None = None) -> None:
    from distilad.report.metrics_doc import metric_lines

    for line in metric_lines(m):
        print(line)
    for note in notes or []:
        print(f"  note: {note}")


def _print_validation(validation: dict[str, Any] | None) -> None:
    """The model's validation metrics (from fit time), labelled apart from test metrics."""
    from distilad.report.metrics_doc import metric_lines, validation_caption

    if not validation:
        return
    print(f"{validation_caption(validation)}:")
    for line in metric_lines(validation.get("metrics") or {}):
        print(line)


# --- commands ------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from distilad import list_detectors
    from distilad.backbones import OFFLINE_TEACHERS, WEIGHTS_FILE_TEACHERS
    from distilad.detector import _REGISTRY

    if args.method:
        if args.method not in _REGISTRY:
            raise DistiladError(f"unknown method {args.method!r}; known: "
                                f"{', '.join(list_detectors())}")
        cls = _REGISTRY[args.method]
        print(f"{args.method}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        print("arguments (set with the named options of `distilad fit`, or --set KEY=VALUE), "
              "their defaults and accepted values:")
        specs = {**getattr(cls, "common_specs", {}), **getattr(cls, "param_specs", {})}
        for key, value in cls.default_params().items():
            accepted = specs[key].describe() if key in specs else ""
            print(f"  {key:<22s} {json.dumps(value):<24s} {accepted}".rstrip())
        for name, values in cls.presets.items():
            print(f"preset {name!r} (--preset {name}; explicit arguments win): "
                  + ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items()))
        return 0
    print("methods:")
    for name in list_detectors():
        doc = (_REGISTRY[name].__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<14s} {doc}")
    print("teachers (offline ImageNet weights):", ", ".join(OFFLINE_TEACHERS))
    print("teachers (need --weights PATH): rd:", ", ".join(WEIGHTS_FILE_TEACHERS),
          "and other timm CNNs; transformaly: timm ViT / DeiT (vit_base_patch16_384, ...)")
    print("`distilad list METHOD` shows a method's arguments and their defaults")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    import distilad
    from distilad import distributed
    from distilad.writable import check_file_target

    params = _method_params(args)
    if distributed.env_rank() != 0:  # under torchrun rank 0 alone shows progress and results
        params["progress"] = False
    # every argument and the output location are checked before the data is read
    det = distilad.create_detector(args.method, **params)
    out = check_file_target(args.output, args.overwrite, "model file")
    with distributed.process_group_from_env(det.device):  # torchrun: one rank of several
        det.fit(args.data)
        if not distributed.is_main_process():
            return 0  # trained its part; rank 0 calibrates and writes the model
        det.save(out, overwrite=args.overwrite)
    info = det.fit_info
    ranks = info.get("distributed", {}).get("processes")
    print(f"fitted {args.method} on {info['n_train']} images ({info['n_holdout']} held out for "
          f"calibration) in {info['train_seconds']:.1f} s"
          f"{f' by {ranks} processes' if ranks else ''}; threshold "
          f"{det.calibration.threshold:.4f}; saved {out}")
    line = computation_line(info)
    if line:
        print(line)
    _print_validation(info.get("validation"))
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


#: at most this many bytes of anomaly maps (float32 at input resolution) come from one scoring
#: call of ``test`` / ``predict``: a large measured batch of large images stays bounded.
MAX_CHUNK_MAP_BYTES = 256 * 1024 * 1024


def scoring_chunk(det: Any, images: Any, max_map_bytes: int = MAX_CHUNK_MAP_BYTES) -> int:
    """Images per scoring call for ``images``: the model's scoring batch size for that many
    images (its ``score_batch_size``, or for ``"auto"`` the one measured on this machine, see
    :mod:`distilad.autobatch`), fewer where the maps of that many of the largest image would
    pass ``max_map_bytes``; at least 1."""
    n = len(images)
    batch_size = getattr(det, "_score_batch_size", None) or det._batch_size  # OnnxModel's
    size = int(batch_size(n))
    pixels = max((h * w for h, w in (images.image_shape(i)[:2] for i in range(n))), default=1)
    return max(1, min(size, max_map_bytes // (4 * max(pixels, 1))))


def _score_in_chunks(det: Any, images: Any, progress: bool, desc: str,
                     chunk: int | None = None,
                     on_unreadable: Callable[[int, DataError], None] | None = None,
                     ) -> Iterator[tuple[list[int], Any]]:
    """Score ``images`` ``chunk`` at a time (default :func:`scoring_chunk`: one scoring batch)
    under one progress bar (stderr; off when not ``progress``), so that a run of any size shows
    how far it is and holds one chunk's maps at a time. Yields (indices, ScoreResult of those
    images). The method's own bars are switched off: this one replaces them.

    An image that cannot be decoded raises its DataError, unless ``on_unreadable`` is given: then
    its chunk is scored image by image, ``on_unreadable(index, error)`` is called for each image
    that fails, and the chunk's result holds the others (their indices are yielded)."""
    from tqdm.auto import tqdm

    det.params["progress"] = False
    n = len(images)
    chunk = chunk or scoring_chunk(det, images)
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, chunk):
            idx = list(range(start, min(start + chunk, n)))
            try:
                result = det.score(images.subset(idx))
            except DataError:
                if on_unreadable is None:
                    raise
                idx, result = _score_one_by_one(det, images, idx, on_unreadable)
            if idx:
                yield idx, result
            bar.update(min(chunk, n - start))


def _score_one_by_one(det: Any, images: Any, idx: list[int],
                      on_unreadable: Callable[[int, DataError], None]) -> tuple[list[int], Any]:
    """Score ``images[idx]`` one at a time, passing the undecodable ones to ``on_unreadable``;
    (the indices scored, their merged ScoreResult)."""
    kept, parts = [], []
    for i in idx:
        try:
            parts.append(det.score(images.subset([i])))
            kept.append(i)
        except DataError as e:
            on_unreadable(i, e)
    return kept, _merge_results(parts)


def _merge_results(parts: list[Any]) -> Any:
    """One ScoreResult from the chunks of :func:`_score_in_chunks`, in order."""
    import numpy as np

    from distilad import ScoreResult

    maps: Any = None
    if parts and all(p.anomaly_maps is not None for p in parts):
        maps = [m for p in parts for m in p.anomaly_maps]
        if len({m.shape for m in maps}) <= 1:
            maps = np.stack(maps) if maps else np.zeros((0, 0, 0), np.float32)

    def cat(key: str) -> Any:
        vals = [getattr(p, key) for p in parts]
        return None if not vals or any(v is None for v in vals) else np.concatenate(vals)

    return ScoreResult(image_scores=cat("image_scores") if parts else np.zeros(0),
                       anomaly_maps=maps, names=[n for p in parts for n in p.names],
                       normalized_scores=cat("normalized_scores"), labels=cat("labels"),
                       seconds=sum(p.seconds for p in parts))


def run_test(det: Any, data: Any, out: Path, title: str,
             progress: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Score labelled ``data`` and write ``metrics.json`` (strict JSON: undefined metrics are
    null, with the reasons in ``notes``) and ``report.html`` into ``out``.

    Returns (metrics with None where undefined, notes saying why).
    """
    import numpy as np

    from distilad import metrics as M
    from distilad.data import as_image_set
    from distilad.evaluate import compute_metrics
    from distilad.jsonsafe import dumps_strict, to_strict
    from distilad.report import write_html_report
    from distilad.report.metrics_doc import explain_metrics

    images = as_image_set(data, split="test")
    if images.labels is None:
        raise DistiladError("evaluation needs labelled images (an MVTec-style category folder "
                            "with test/good and test/<defect> sub-folders)")
    result = _merge_results([r for _, r in _score_in_chunks(det, images, progress, "scoring")])
    cal = det.calibration
    maps = result.anomaly_maps
    m, notes = explain_metrics(compute_metrics(images, result), has_maps=maps is not None,
                               has_masks=images.has_masks, calibrated=cal is not None)
    roc = None
    if m.get("image_auroc") is not None:
        fpr, tpr, _ = M.roc_curve(images.labels, result.image_scores)
        roc = (fpr, tpr, m["image_auroc"])
    vmin = cal.map_vmin if cal and cal.map_vmin is not None else 0.0
    vmax = cal.map_vmax if cal and cal.map_vmax is not None else 1.0
    masks = [images.mask(i) for i in range(len(images))] if images.has_masks else None
    validation = det.fit_info.get("validation")
    write_html_report(
        out, title=title, metrics=m, images=images, maps=None if maps is None else list(maps),
        masks=masks, names=images.names, labels=images.labels, scores=result.image_scores,
        threshold=cal.threshold if cal else None, vmin=vmin, vmax=vmax, roc=roc,
        notes=notes, validation=validation, progress=progress,
        map_threshold_is_image_threshold=det.params.get("image_score", "max") == "max",
        extra={"method": det.name, "data": images.description,
               "colour scale": f"{vmin:.4f} .. {vmax:.4f} (from held-out normals)",
               "threshold": f"{cal.threshold:.4f} (target FPR {cal.target_fpr})" if cal else "-"})
    per_image = [{"name": n, "label": int(lab), "score": float(s),
                  "normalized_score": None if result.normalized_scores is None
                  else float(result.normalized_scores[i]),
                  "predicted": None if result.labels is None else int(result.labels[i])}
                 for i, (n, lab, s) in enumerate(zip(images.names, images.labels,
                                                      np.asarray(result.image_scores),
                                                      strict=True))]
    doc = {"metrics": m, "notes": notes, "validation": validation, "model": det.config(),
           "images": per_image, "scoring_seconds": result.seconds}
    replaced: list[str] = []
    doc = to_strict(doc, replaced)
    if replaced:
        shown = ", ".join(replaced[:10]) + (f" and {len(replaced) - 10} more"
                                            if len(replaced) > 10 else "")
        doc["notes"].append(f"not finite numbers, written as null: {shown}")
    (out / "metrics.json").write_text(dumps_strict(doc), encoding="utf-8")
    return m, notes


def cmd_test(args: argparse.Namespace) -> int:
    import distilad
    from distilad.data import as_image_set

    out = Path(args.output)
    staged = _fresh_output(out, args.overwrite, [args.model, args.data])
    det = distilad.load_detector(args.model, device=args.device or "auto")
    images = as_image_set(args.data, split="test")
    if images.labels is None:
        raise DistiladError(f"{args.data} has no labels: `test` needs an MVTec-style folder with "
                            "test/good and test/<defect>; use `predict` for unlabelled images")
    with staged as tmp:
        m, notes = run_test(det, images, tmp, f"{det.name} on {args.data}",
                            progress=not args.quiet)
    print(f"{det.name} on {args.data}, test metrics ({m['n_images']} images, "
          f"{m['n_anomalous']} anomalous):")
    _print_metrics(m, notes)
    _print_validation(det.fit_info.get("validation"))
    print(f"report: {out / 'report.html'}; metrics: {out / 'metrics.json'}")
    return 0


PREDICTION_COLUMNS = ("file", "score", "normalized_score", "label", "overlay")


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from tqdm.auto import tqdm

    from distilad.data import image_files
    from distilad.jsonsafe import dumps_strict
    from distilad.report import image_map_panel, safe_stem, save_png

    out = Path(args.output)
    staged = _fresh_output(out, args.overwrite, [args.model, *args.inputs])
    det = load_model(args.model, device=args.device or "auto")
    skipped: list[dict[str, str]] = []  # {"file", "reason"} of each unreadable input skipped
    with _hint_skip_unreadable(not args.skip_unreadable):
        images = _readable_inputs(image_files(args.inputs), args.skip_unreadable, skipped)

    def skip(i: int, error: DataError) -> None:  # a file whose pixels fail to decode
        _note_skipped(images.paths[i], error, skipped)

    cal = det.calibration
    if cal is None:
        raise DistiladError(f"{args.model} has no calibrated threshold; fit it with `distilad fit`")
    # the image threshold is in map units when the image score is the maximum of the map (RD's
    # default image_score); then a pixel above the tick on the colour bar flags the image
    map_threshold = cal.threshold if det.params.get("image_score", "max") == "max" else None
    rows: list[dict[str, Any]] = []
    chunks = _score_in_chunks(det, images, not args.quiet, "predicting",
                              on_unreadable=skip if args.skip_unreadable else None)
    with staged as tmp, _hint_skip_unreadable(not args.skip_unreadable):
        for idx, result in chunks:
            for j, i in enumerate(idx):
                row = {"file": str(images.paths[i]), "score": float(result.image_scores[j]),
                       "normalized_score": float(result.normalized_scores[j]),
                       "label": int(result.labels[j]), "overlay": None}
                if result.anomaly_maps is not None and cal.map_vmin is not None:
                    rel = Path("overlays") / f"{i:05d}_{safe_stem(images.names[i])}.png"
                    save_png(image_map_panel(images.image(i), result.anomaly_maps[j],
                                             cal.map_vmin, cal.map_vmax, map_threshold),
                             tmp / rel)
                    row["overlay"] = rel.as_posix()
                rows.append(row)
                tqdm.write(f"{row['label']}  {row['normalized_score']:.3f}  {row['file']}",
                           file=sys.stdout)
        if not rows:  # every file failed to decode: no output folder
            raise DataError(f"none of the {len(skipped)} images can be read")
        doc = {"model": str(args.model), "threshold": cal.threshold,
               "columns": {"file": "input file as given on the command line",
                           "score": "raw anomaly score (higher = more anomalous)",
                           "normalized_score": "0..1, the threshold at 0.5",
                           "label": "1 = anomalous (score above the threshold), 0 = normal",
                           "overlay": "image | anomaly map | colour bar, relative to this folder"},
               "predictions": rows,
               "skipped": skipped}
        (tmp / "predictions.json").write_text(dumps_strict(doc), encoding="utf-8")
        with open(tmp / "predictions.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(PREDICTION_COLUMNS)
            for r in rows:
                writer.writerow([r["file"], f"{r['score']:.6g}", f"{r['normalized_score']:.4f}",
                                 r["label"], r["overlay"] or ""])
    n_anom = sum(r["label"] for r in rows)
    n_skipped = (f"; {len(skipped)} unreadable skipped (listed in predictions.json)"
                 if skipped else "")
    print(f"{n_anom} of {len(rows)} images anomalous{n_skipped}; results in {out} "
          f"(predictions.csv, predictions.json"
          f"{', overlays/' if any(r['overlay'] for r in rows) else ''})")
    return 0


@contextlib.contextmanager
def _hint_skip_unreadable(active: bool) -> Iterator[None]:
    """When ``active``, a DataError (an image that cannot be decoded) gains the hint that it can
    be skipped."""
    try:
        yield
    except DataError as e:
        if not active:
            raise
        raise DataError(f"{e} (--skip-unreadable scores the other images)") from None


def _note_skipped(path: Path, error: DataError, skipped: list[dict[str, str]]) -> None:
    skipped.append({"file": str(path), "reason": str(error)})
    print(f"distilad: skipped {path}: {error}", file=sys.stderr)


def _readable_inputs(images: Any, skip_unreadable: bool, skipped: list[dict[str, str]]) -> Any:
    """``images`` (a FileImageSet) less the files whose header cannot be read, checked before
    any work: such a file raises its DataError unless ``skip_unreadable``; then it is reported
    on stderr and appended to ``skipped``."""
    from distilad.data.mvtec import FileImageSet

    readable = []
    for i in range(len(images)):
        try:
            images.image_shape(i)
            readable.append(i)
        except DataError as e:
            if not skip_unreadable:
                raise
            _note_skipped(images.paths[i], e, skipped)
    if not readable:
        raise DataError(f"none of the {len(images)} images can be read")
    if len(readable) == len(images):
        return images
    return FileImageSet([images.paths[i] for i in readable], None, None, images.description,
                        names=[images.names[i] for i in readable])


def load_model(path: str, device: str = "auto") -> Any:
    """A ``.onnx`` file (run by onnxruntime, :class:`distilad.onnx_model.OnnxModel`) or a
    ``.distilad`` model file (:func:`distilad.load_detector`); both score alike."""
    from distilad.onnx_model import OnnxModel, is_onnx_path

    if is_onnx_path(path):
        return OnnxModel(path, device=device)
    import distilad

    return distilad.load_detector(path, device=device)


def cmd_export(args: argparse.Namespace) -> int:
    import distilad
    from distilad.onnx_model import is_onnx_path

    if not is_onnx_path(args.output):
        raise DistiladError(f"export: the output file must end in .onnx (predict tells the "
                            f"model formats apart by it), got {args.output}")
    if Path(args.output).exists() and not args.overwrite:
        raise DistiladError(f"{args.output} exists; pass --overwrite to replace it")
    det = distilad.load_detector(args.model, device="cpu")
    out = det.export_onnx(args.output, overwrite=args.overwrite, check=not args.no_check)
    check = det.last_export["export_check"]
    print(f"{det.name} exported to {out} ({out.stat().st_size / 1e6:.1f} MB): input images "
          f"uint8 (N, H, W, 3) of any size; outputs {', '.join(det.last_export['outputs'])} "
          f"(threshold {det.calibration.threshold:.6g})")
    if "skipped" in check:
        print(f"not checked against PyTorch: {check['skipped']}")
    else:
        maps = (f", maps {check['max_map_abs_diff']:.2g}" if "max_map_abs_diff" in check else "")
        print(f"checked with onnxruntime {check['onnxruntime']} against PyTorch on "
              f"{check['images']} synthetic images: largest difference: scores "
              f"{check['max_score_rel_diff']:.2g} (relative){maps}; labels identical")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from distilad.serve import INSTALL_HINT, missing_packages

    missing = missing_packages()
    if missing:
        raise DistiladError(f"serve needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
    from distilad.serve import UploadLimits, create_app
    from distilad.serve.app import load_served_model
    from distilad.serve.server import bind_socket, run_server

    if args.threads is not None:
        if args.threads < 1:
            raise DistiladError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.max_upload_mb <= 0 or args.max_pending < 1:
        raise DistiladError("--max-upload-mb must be above 0 and --max-pending at least 1")
    limits = UploadLimits.default(int(args.max_upload_mb * 1024 * 1024))
    if args.max_pixels is not None:
        text = args.max_pixels.strip().lower()
        if text != "none" and (not text.isdigit() or int(text) < 1):
            raise DistiladError(f"--max-pixels must be a positive pixel count or 'none', got "
                                f"{args.max_pixels!r}")
        limits = UploadLimits(limits.max_bytes, None if text == "none" else int(text))
    model = load_served_model(args.model, device=args.device or "auto", threads=args.threads)
    app = create_app(model, limits=limits, max_pending=args.max_pending, source=args.model)
    sock = bind_socket(args.host, args.port)  # before the banner: a taken port is one line
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"distilad: serving {model.name} from {args.model} on http://{shown}:{port}/ "
          f"(page at /, POST /predict, GET /health, GET /model; Ctrl-C to stop)", flush=True)
    run_server(app, sock, quiet=args.quiet)
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
    out = Path(args.output) if args.output else Path("runs") / f"demo-{stamp}"
    staged = _fresh_output(out, args.overwrite, [str(data)])
    params = _method_params(args)
    params.setdefault("epochs", DEMO_EPOCHS)
    det = distilad.create_detector("rd", **params)
    with staged as tmp:
        print(f"distilad demo: Reverse Distillation ({params.get('backbone', DEFAULT_TEACHER)} "
              f"teacher) on {data} for {params['epochs']} epoch{'s' * (params['epochs'] != 1)}; "
              f"output in {out}")
        det.fit(data)
        det.save(tmp / "model.distilad")
        print(f"trained in {det.fit_info['train_seconds']:.0f} s on {det.fit_info['n_train']} "
              "images")
        m, notes = run_test(det, data, tmp, f"distilad demo: RD on {data.name}",
                            progress=not args.quiet)
    print(f"test metrics ({m['n_images']} images, {m['n_anomalous']} anomalous):")
    _print_metrics(m, notes)
    _print_validation(det.fit_info.get("validation"))
    print(f"report: {out / 'report.html'}; model: {out / 'model.distilad'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from distilad.bench.runner import main_bench

    return main_bench(args)


# --- parser ---------------------------------------------------------------------------------------
class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples keep their line breaks; an option with a default shows it as ``(default: X)``
    unless its help already says it (options without a fixed default say what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


DEMO_EPOCHS = 12
_DEVICE_HELP = "where to compute: auto, cpu, cuda, cuda:1, mps (default: auto = CUDA, then MPS, then CPU)"
_QUIET_HELP = "no progress bars"


_OVERWRITE_FOLDER_HELP = ("replace an existing output folder as a whole (only once the new "
                          "results are complete)")


def _add_results_folder_options(p: argparse.ArgumentParser) -> None:
    """``-o``, ``--overwrite``, ``--device`` and ``-q`` of the commands that score a model into a
    new results folder (``test``, ``predict``)."""
    p.add_argument("-o", "--output", required=True,
                   help="folder to create for the results; refused if it exists and is not "
                   "empty, unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_FOLDER_HELP)
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)


def _add_method_options(p: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Options shared by ``fit`` and ``demo``. ``defaults`` (the method's, when only one method
    is possible) are shown in the help; otherwise the help points to ``distilad list METHOD``."""
    d = defaults or {}

    def default(key: str) -> str:
        if key in d:
            return f" (default: {d[key]})"
        return " (default: the method's own; see `distilad list METHOD`)"

    p.add_argument("--epochs", type=int, help="training epochs" + default("epochs"))
    p.add_argument("--backbone", help="teacher network, see `distilad list`" + default("backbone"))
    p.add_argument("--weights", help="local weights file for teachers that need one "
                   "(default: none; the offline teachers bring their own)")
    p.add_argument("--image-size", dest="image_size", type=int,
                   help="side in pixels the images are resized to" + default("image_size"))
    p.add_argument("--batch-size", dest="batch_size", type=int,
                   help="training batch size" + default("batch_size"))
    p.add_argument("--seed", type=int, help="random seed; also picks the held-out images"
                   + default("seed"))
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("--preset", help="a named bundle of method arguments, e.g. rd's 'surface'; "
                   "the options given explicitly win (`distilad list METHOD` shows them; "
                   "default: none)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other method argument, VALUE as JSON, e.g. --set lr=0.001 "
                   "(repeatable; `distilad list METHOD` lists them; default: none)")
    p.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)


def _demo_defaults() -> dict[str, Any]:
    """RD's defaults as the demo uses them (for its --help)."""
    from distilad.detector import method_defaults

    return {**method_defaults("rd"), "epochs": DEMO_EPOCHS}


def _para(text: str) -> str:
    """A help paragraph wrapped for the terminal (the formatter keeps line breaks as written)."""
    return textwrap.fill(text, width=min(shutil.get_terminal_size().columns, 100) - 2)


_EPILOG_MAIN = """\
a first run (trains RD on the bottle images shipped with the repository, a few minutes on a CPU):
  distilad demo -o demo-run

the usual workflow:
  distilad fit rd path/to/bottle -o bottle.distilad             # train on normal images
  distilad test bottle.distilad path/to/bottle -o report         # metrics + report.html
  distilad predict bottle.distilad new_images/ -o predictions    # scores, labels, overlays
  distilad serve bottle.distilad -p 8000                         # web page + HTTP API

`distilad COMMAND --help` explains each command."""


def build_parser() -> argparse.ArgumentParser:
    from distilad import Detector, __version__

    fmt = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="distilad", formatter_class=fmt, epilog=_EPILOG_MAIN,
        description=_para("Anomaly detection by knowledge distillation: train on normal images only, "
                    "then score new images (higher = more anomalous) and flag those above a "
                    "threshold calibrated on held-out normal images."))
    parser.add_argument("--version", action="version", version=f"distilad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="methods and teachers; with a METHOD, its arguments",
                       formatter_class=fmt, epilog="example:\n  distilad list rd",
                       description=_para("List the methods and teacher networks, or one method's "
                                   "arguments with their defaults."))
    p.add_argument("method", nargs="?", help="show this method's arguments and defaults "
                   "(default: list all methods)")
    p.add_argument("-q", "--quiet", action="store_true", help="accepted for symmetry; no effect")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "fit", help="train a detector on normal images and save it", formatter_class=fmt,
        description=_para("Train a detector on normal (defect-free) images and save it as one file. "
                    "A seeded part of the images is held out to calibrate the threshold and to "
                    "validate the model against synthetic defects made from them (printed after "
                    "training; no labelled defects needed)."),
        epilog="example:\n  distilad fit rd data/mvtec_ad/bottle -o bottle.distilad --epochs 50\n"
               "in 2 processes (rd, transformaly; DDP: one process's computation, split; README "
               "'Scaling'):\n  torchrun --standalone --nproc_per_node=2 -m distilad.cli fit rd "
               "data/mvtec_ad/bottle -o bottle.distilad")
    p.add_argument("method", help="method name: rd, edegan, pkdgan, transformaly (see "
                   "`distilad list`)")
    p.add_argument("data", help="MVTec-style category folder (its train/good is used) or a "
                   "folder of normal images")
    p.add_argument("-o", "--output", required=True, help="model file to write (.distilad)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    _add_method_options(p, {"seed": Detector.common_defaults["seed"]})
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "test", help="evaluate a model on labelled test images: metrics.json + report.html",
        formatter_class=fmt,
        description=_para("Score the test split of an MVTec-style folder (test/good and "
                    "test/<defect>, optional ground_truth/ masks) and write metrics.json and a "
                    "self-contained report.html into a new folder."),
        epilog="example:\n  distilad test bottle.distilad data/mvtec_ad/bottle -o bottle-report")
    p.add_argument("model", help="model file written by `distilad fit`")
    p.add_argument("data", help="MVTec-style category folder (its test/ split is used)")
    _add_results_folder_options(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser(
        "predict", help="score new images: predictions.csv/.json and overlay PNGs",
        formatter_class=fmt,
        description=_para("Score images with a saved model. Writes predictions.csv and "
                    "predictions.json (file, score, normalized score, label: 1 = anomalous) "
                    "and, for methods with anomaly maps, one PNG per image in overlays/: the "
                    "image, the map over it and the colour bar. Prints one line per image: "
                    "label, normalized score (threshold at 0.5), file."),
        epilog="example:\n  distilad predict bottle.distilad new_images/ one_more.png -o preds")
    p.add_argument("model", help="model file written by `distilad fit` (.distilad) or "
                   "`distilad export` (.onnx, run with onnxruntime)")
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    p.add_argument("--skip-unreadable", action="store_true",
                   help="score the images that can be read and list the others (stderr and "
                        "'skipped' in predictions.json); by default the first unreadable file "
                        "stops predict with nothing written")
    _add_results_folder_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export", help="write a model as one ONNX graph (preprocessing to labels)",
        formatter_class=fmt,
        description=_para("Export a saved model to ONNX: one graph from uint8 images (N, H, W, 3) "
                    "of any size to image scores, anomaly maps (rd), normalised scores, labels "
                    "and the calibrated threshold, with the model's description in the ONNX "
                    "metadata. The file is run with onnxruntime against PyTorch on synthetic "
                    "images before it is written. Methods: rd, edegan, pkdgan, transformaly. Needs "
                    "pip install 'distilad[export]'."),
        epilog="example:\n  distilad export bottle.distilad -o bottle.onnx\n"
               "  distilad predict bottle.onnx new_images/ -o preds")
    p.add_argument("model", help="model file written by `distilad fit`")
    p.add_argument("-o", "--output", required=True, help="ONNX file to write (.onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--no-check", action="store_true",
                   help="skip the comparison with PyTorch on synthetic images")
    p.add_argument("-q", "--quiet", action="store_true", help="accepted for symmetry; no effect")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve", help="inspection server: web page and HTTP API scoring uploaded images",
        formatter_class=fmt,
        description=_para("Serve a model over HTTP (FastAPI + uvicorn; needs pip install "
                    "'distilad[serve]'). A web page at / takes dropped images and shows the "
                    "heatmap overlay, the score against the threshold, the label and the last "
                    "10 results. API: POST /predict with the image as the multipart field "
                    "'file' returns JSON (score, normalized_score, label, threshold, "
                    "timing_ms; with ?overlay=true also overlay_png, a base64 PNG of the image, "
                    "its heatmap and the colour bar); GET /health; GET /model (method, input "
                    "size, calibration, arguments, library version). Bad uploads get a 4xx "
                    "answer with {\"error\": message}; requests are scored one at a time in "
                    "arrival order. Listens on localhost only unless --host says otherwise."),
        epilog="examples:\n  distilad serve bottle.distilad -p 8000\n"
               "  curl -F file=@data/mvtec_ad/bottle/test/broken_large/000.jpg "
               "http://127.0.0.1:8000/predict\n"
               "  distilad serve bottle.onnx --host 0.0.0.0 -p 8080 -q")
    p.add_argument("model", help="model file written by `distilad fit` (.distilad) or "
                   "`distilad export` (.onnx, run with onnxruntime)")
    p.add_argument("-p", "--port", type=int, default=8000, help="TCP port (0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 makes the server reachable from other "
                   "machines (it has no authentication)")
    p.add_argument("--device", help=_DEVICE_HELP)
    p.add_argument("--threads", type=int, help="CPU threads for scoring (default: PyTorch's / "
                   "onnxruntime's own choice)")
    p.add_argument("--max-upload-mb", dest="max_upload_mb", type=float, default=20.0,
                   help="largest image file accepted, in MiB")
    p.add_argument("--max-pixels", dest="max_pixels",
                   help="largest image (width x height) decoded, or 'none' (default: PIL's "
                   "decompression-bomb limit, 89,478,485, or $DISTILAD_MAX_IMAGE_PIXELS)")
    p.add_argument("--max-pending", dest="max_pending", type=int, default=64,
                   help="requests that may wait for the model at once; more are answered 503")
    p.add_argument("-q", "--quiet", action="store_true", help="no log line per request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo", help="train and test RD on the embedded MVTec AD bottle images",
        formatter_class=fmt,
        description=_para("Train Reverse Distillation on the MVTec AD bottle images shipped with "
                    "the repository, test it, and write the model, metrics.json and "
                    "report.html into one folder."),
        epilog="examples:\n  distilad demo -o demo-run\n"
               "  distilad demo --data path/to/mvtec/screw --epochs 50 -o screw-run")
    p.add_argument("--data", help="another MVTec-style category folder (default: the embedded "
                   "bottle copy, or $DISTILAD_DEMO_DATA)")
    p.add_argument("-o", "--output", help="folder to create (default: runs/demo-<date-time>)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE_FOLDER_HELP)
    _add_method_options(p, _demo_defaults())
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="benchmark sweeps (method x dataset x protocol x class x "
                       "seed) into result files and RESULTS.md", formatter_class=fmt)
    from distilad.bench.runner import add_bench_arguments

    add_bench_arguments(p)
    if not p.epilog:
        p.epilog = "example:\n  distilad bench --method rd --dataset mnist --classes 0-1 --seeds 0,1,2"
    p.set_defaults(func=cmd_bench)
    return parser


def _one_line(text: str) -> str:
    """A message on one line, even when it embeds a multi-line message (e.g. from torch)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _one_line_usage_errors(parser: argparse.ArgumentParser) -> None:
    """Make argparse's usage errors (bad option value, missing argument) one stderr line with
    exit status 2 too, pointing to ``--help`` instead of printing the usage block."""
    parsers = [parser]
    for p in parsers:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())

    for p in parsers:
        def error(message: str, prog: str = p.prog) -> None:
            command = prog.split(" ", 1)[1] + ": " if " " in prog else ""
            print(f"distilad: error: {command}{_one_line(message)} (see `{prog} --help`)",
                  file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

        p.error = error  # type: ignore[method-assign]


def _user_error_message(e: BaseException) -> str | None:
    """The one-line message for an exception a user can fix, None for anything else (a bug,
    which keeps its traceback)."""
    if isinstance(e, DistiladError):
        return _one_line(str(e))
    if isinstance(e, OSError):  # file system: missing, permission, not a folder, disk full
        where = f": {e.filename}" if e.filename else ""
        return _one_line(f"{e.strerror or e}{where}")
    if isinstance(e, MemoryError):
        return "out of memory: use a smaller --image-size or --batch-size, or fewer images"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(e, torch.OutOfMemoryError):
        return ("out of GPU memory: use a smaller --batch-size or --image-size (score_batch_size "
                "for scoring), or --device cpu")
    return None


def _print_warnings_once() -> None:
    """Show distilad's own warnings (e.g. a threshold the held-out data cannot back) as one
    ``distilad: warning:`` line each, once per message; call inside ``catch_warnings``."""
    import warnings

    from distilad.errors import DistiladWarning

    seen: set[str] = set()
    shown_before = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if not issubclass(category, DistiladWarning):
            shown_before(message, category, filename, lineno, file, line)
            return
        text = _one_line(str(message))
        if text not in seen:
            seen.add(text)
            print(f"distilad: warning: {text}", file=sys.stderr)

    warnings.simplefilter("always", DistiladWarning)  # repeats are dropped above
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    import warnings

    parser = build_parser()
    _one_line_usage_errors(parser)
    args = parser.parse_args(argv)
    if args.command != "fit" and "WORLD_SIZE" in os.environ:  # torchrun's (torch imported only then)
        from distilad.distributed import env_world_size

        world = env_world_size()
    else:
        world = 1
    if world > 1:
        # each process would repeat the whole command and write the same outputs
        print(f"distilad: error: {args.command}: only `fit` runs under torchrun "
              f"(WORLD_SIZE={world}); run `distilad {args.command}` as one process",
              file=sys.stderr)
        return EXIT_USER_ERROR
    with warnings.catch_warnings():
        _print_warnings_once()
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("distilad: interrupted", file=sys.stderr)
            return 130
        except Exception as e:  # only user-caused ones are caught; see _user_error_message
            msg = _user_error_message(e)
            if msg is None:
                raise
            print(f"distilad: error: {msg}", file=sys.stderr)
            return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
