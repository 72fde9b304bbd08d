"""Speed and memory of Transformaly (issue 11): training images/s (clones only, with the teacher
boundaries held in memory, and the teacher's one pass over the training images), inference
ms/image at batch 1 and 64 (teacher alone, whole scoring path), the teacher's share of it, and
peak RSS. Writes one JSON into benchmarks/results/.

    python benchmarks/speed_transformaly.py [--backbone efficientnet_lite0] [--threads 2]
                                            [--dataset cifar10 --data-root DATA] [--n-train 512]

Data: the first ``--n-train`` training images of class 0 of a novelty dataset when
``--data-root`` (or $DISTILAD_DATA) holds it, else the embedded bottle images. Run it on a
quiet machine; timings are medians over repeats after a warm-up, teacher and whole path
interleaved.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import distilad
from distilad.bench.record import git_commit, median_seconds_paired, write_speed_record
from distilad.cli import demo_data_path


def training_images(args: argparse.Namespace):  # -> (ImageSet or folder, description)
    if args.dataset == "bottle":  # the embedded category folder: its train/good images
        return str(demo_data_path()), "embedded bottle training images"
    from distilad.data.novelty import make_novelty_split

    split = make_novelty_split(args.dataset, "one-class", 0, root=args.data_root, test=False)
    train = split.train.subset(list(range(min(args.n_train, len(split.train)))))
    return train, f"{args.dataset} class 0, first {len(train)} training images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed for training speed")
    ap.add_argument("--dataset", default="bottle", help="bottle (embedded) or a novelty dataset")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    commit = git_commit()

    train, described = training_images(args)
    det = distilad.create_detector("transformaly", backbone=args.backbone,
                                   image_size=args.image_size, epochs=args.epochs,
                                   progress=False, device="cpu")
    det.fit(train)
    info = det.fit_info
    student_s = info["train_seconds"] - info["teacher_feature_seconds"]
    res: dict[str, float] = {
        "train_images_per_s": info["n_train"] * args.epochs / student_s,
        "teacher_feature_images_per_s": info["n_train"] / info["teacher_feature_seconds"],
    }
    net = det._scoring_net().eval()
    keep = net.keep
    with torch.inference_mode():
        for bs in (1, 64):
            x = torch.rand(bs, 3, args.image_size, args.image_size)
            reps = args.repeats * (10 if bs == 1 else 2)
            teacher, whole = median_seconds_paired(lambda x=x: det.teacher(x, keep),
                                                   lambda x=x: net(x), reps)
            res[f"teacher_ms_b{bs}"] = 1000 * teacher / bs
            res[f"infer_ms_b{bs}"] = 1000 * whole / bs
            res[f"teacher_share_b{bs}"] = teacher / whole
    res["student_params"] = sum(p.numel() for p in det.student.parameters())
    res["teacher_params"] = sum(p.numel() for p in det.teacher.parameters())
    out = (Path(args.results)
           / f"speed_transformaly_{args.backbone}_{args.image_size}_t{args.threads}.json")
    record = write_speed_record(out, model=f"transformaly {args.backbone} {args.image_size}px",
                                method="transformaly", dataset=args.dataset, category=described,
                                speed=res, threads=args.threads, commit=commit)
    print(f"peak RSS {record['peak_rss_mb']:.0f} MB; wrote {out}")


if __name__ == "__main__":
    main()
