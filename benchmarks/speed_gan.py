"""CPU inference speed of the EDE-GAN teacher and the P-KDGAN students, beside their FLOPs.

For each dataset's student size (methods/pkdgan/README.md) it times the generator (the part a
deployed detector runs: x -> z, x_hat, z_hat and the latent score) at batch 1 and 256, and writes
one JSON into benchmarks/results/.

    python benchmarks/speed_gan.py [--threads 2] [--repeats 5]

Speed does not depend on the weights' values, so freshly initialised networks are timed; medians
over repeats after a warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from distilad.bench.record import environment, median_seconds, peak_rss_mb, write_json_atomic
from distilad.methods.edegan.model import Generator, count_flops
from distilad.modules.gan import latent_score

# dataset: (channels, student width, student nz) giving the paper's computation ratios
STUDENTS = {"mnist": (1, 3, 36), "fashion-mnist": (1, 2, 4), "cifar10": (3, 12, 8)}
TEACHER = (64, 100)  # width, nz
SIZE = 32


def images_per_s(gen: Generator, x: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        _, z, z_hat = gen(x)
        latent_score(z, z_hat)

    return len(x) / median_seconds(once, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with torch.inference_mode():
        for dataset, (nc, sw, snz) in STUDENTS.items():
            models = {"teacher": Generator(SIZE, nc, TEACHER[1], TEACHER[0]).eval(),
                      "student": Generator(SIZE, nc, snz, sw).eval()}
            row: dict = {"dataset": dataset, "channels": nc, "student_width": sw, "student_nz": snz}
            for role, gen in models.items():
                row[f"{role}_flops"] = count_flops(gen, SIZE, nc)
                row[f"{role}_params"] = sum(p.numel() for p in gen.parameters())
                for bs in (1, 256):
                    x = torch.rand(bs, nc, SIZE, SIZE) * 2 - 1
                    reps = args.repeats * (20 if bs == 1 else 1)
                    row[f"{role}_images_per_s_b{bs}"] = round(images_per_s(gen, x, reps), 1)
            row["flops_ratio"] = round(row["teacher_flops"] / row["student_flops"], 2)
            for bs in (1, 256):
                row[f"speedup_b{bs}"] = round(row[f"student_images_per_s_b{bs}"]
                                              / row[f"teacher_images_per_s_b{bs}"], 2)
            rows.append(row)
            print(f"{dataset:14s} FLOPs {row['teacher_flops'] / 1e6:7.1f}M / "
                  f"{row['student_flops'] / 1e6:6.3f}M = {row['flops_ratio']:7.1f}:1   img/s b1 "
                  f"{row['teacher_images_per_s_b1']:8.0f} / {row['student_images_per_s_b1']:8.0f} "
                  f"({row['speedup_b1']:.1f}x)   b256 {row['teacher_images_per_s_b256']:8.0f} / "
                  f"{row['student_images_per_s_b256']:8.0f} ({row['speedup_b256']:.1f}x)")
    record = {"kind": "speed_gan", "model": "edegan teacher vs p-kdgan students, 32 px",
              "rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1), **environment("cpu"),
              "torch_threads": args.threads, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    out = Path(args.results) / f"speed_gan_t{args.threads}.json"
    write_json_atomic(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
