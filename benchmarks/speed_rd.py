"""Speed and memory of RD: training images/s, inference ms/image at batch 1 and 16, the
teacher's forward alone, their ratio, and peak RSS. Writes one JSON into benchmarks/results/.

    python benchmarks/speed_rd.py [--backbone efficientnet_lite1] [--preset surface] [--threads 2] \
        [--data DIR]

Run it on a quiet machine; timings are medians over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import distilad
from distilad.bench.record import git_commit, median_seconds_paired, write_speed_record
from distilad.cli import demo_data_path
from distilad.data import mvtec_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default=None, help="RD's teacher (default: the preset's, else "
                    "RD's default)")
    ap.add_argument("--preset", default="none", help="RD's preset, e.g. surface")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed for training speed")
    ap.add_argument("--data", default=str(demo_data_path()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = git_commit()

    chosen = {"backbone": args.backbone} if args.backbone else {}
    det = distilad.create_detector("rd", preset=args.preset, image_size=args.image_size,
                                   epochs=args.epochs, progress=False, device="cpu", **chosen)
    backbone = det.params["backbone"]
    det.fit(args.data)
    info = det.fit_info
    student_s = info["train_seconds"] - info["teacher_feature_seconds"]
    train_ips_student = info["n_train"] * args.epochs / student_s
    # first epoch includes the teacher pass: what a user without a feature cache pays per epoch
    teacher_ips = info["n_train"] / info["teacher_feature_seconds"]

    test = mvtec_test(args.data)
    from distilad.data.transforms import stack_images

    x16 = stack_images(test, range(16), args.image_size)
    x1 = x16[:1]
    res = {}
    with torch.inference_mode():
        for bs, x in ((1, x1), (16, x16)):
            reps = args.repeats * (10 if bs == 1 else 2)
            # interleaved, so a slower moment of a shared machine hits both alike
            teacher, rd = median_seconds_paired(lambda x=x: det.teacher(x),
                                                lambda x=x: det.map_tensor(x), reps)
            res[f"teacher_ms_b{bs}"] = 1000 * teacher / bs
            res[f"infer_ms_b{bs}"] = 1000 * rd / bs
    # the whole public path (file decode, resize, maps back to input size) at batch 16
    t0 = time.perf_counter()
    det.score(test)
    res["score_api_ms_per_image"] = 1000 * (time.perf_counter() - t0) / len(test)
    res["train_images_per_s"] = train_ips_student
    res["teacher_feature_images_per_s"] = teacher_ips
    res["student_params"] = sum(p.numel() for p in det.student.parameters())
    res["teacher_params"] = sum(p.numel() for p in det.teacher.parameters())
    preset = "" if args.preset == "none" else f"{args.preset}_"
    out = Path(args.results) / f"speed_rd_{preset}{backbone}_{args.image_size}_t{args.threads}.json"
    model = f"rd {backbone} {args.image_size}px" + (f" preset {args.preset}" if preset else "")
    record = write_speed_record(out, model=model, method="rd",
                                dataset="mvtec", category=Path(args.data).name, speed=res,
                                threads=args.threads, commit=commit)
    print(f"ratio RD/teacher: b1 {res['infer_ms_b1'] / res['teacher_ms_b1']:.2f}  "
          f"b16 {res['infer_ms_b16'] / res['teacher_ms_b16']:.2f}; peak RSS "
          f"{record['peak_rss_mb']:.0f} MB; wrote {out}")


if __name__ == "__main__":
    main()
