"""One EDE-GAN training step on the CPU: where the time goes, and images/s before and after.

Variants, timed alternately in one process (rounds of each in turn; medians over rounds, so a
machine shared with other jobs slows every variant alike):

- ``before``: the former step (a generator step with its own discriminator passes on x and
  x_hat, then a discriminator step with fresh passes on both; every gradient computed);
- ``after``: :func:`distilad.modules.gan.gan_step` (one discriminator pass per batch on x and on
  x_hat, each loss's gradients only into its own net);
- ``after_channels_last``: the same with weights and batch in channels-last memory order;
- ``after_compiled`` (``--compile``): generator and discriminator through ``torch.compile``
  (compile time reported apart).

Writes one JSON into benchmarks/results/ (``profile_gan_step_c{channels}_t{threads}.json``,
``..._compile.json`` with ``--compile``) with images/s per round and variant, their medians, the
median per-round ratio to ``before``, and the profiler's top operators per step for ``before``
and ``after``.

    OMP_NUM_THREADS=1 python benchmarks/profile_gan_step.py [--rounds 7] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from distilad.bench.record import environment, peak_rss_mb, write_json_atomic
from distilad.methods.edegan.model import EDEGAN
from distilad.modules.gan import gan_step, make_optimizers

WEIGHTS = {"w_adv": 1.0, "w_con": 50.0, "w_enc": 1.0}


def before_step(gan: EDEGAN, opt_g, opt_d, x: torch.Tensor) -> None:
    """The step as it was before (distilad 45448d2^): two discriminator passes per batch each."""
    x_hat, z, z_hat = gan.generator(x)
    _, f_real = gan.discriminator(x)
    _, f_fake = gan.discriminator(x_hat)
    loss_g = ((f_real.detach() - f_fake).pow(2).mean() + 50.0 * (x - x_hat).abs().mean()
              + (z - z_hat).pow(2).mean())
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    real, _ = gan.discriminator(x)
    fake, _ = gan.discriminator(x_hat.detach())
    loss_d = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
              + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_d.item()


def after_step(gan: EDEGAN, opt_g, opt_d, x: torch.Tensor) -> None:
    gan_step(gan, opt_g, opt_d, x, WEIGHTS)


def make_variant(base: EDEGAN, x: torch.Tensor, step: Callable, channels_last: bool = False,
                 compiled: bool = False) -> tuple[Callable[[], None], float]:
    """A no-argument step on its own copy of ``base``; returns (step, seconds to first step)."""
    gan = copy.deepcopy(base).train()
    xb = x.clone()
    if channels_last:
        gan = gan.to(memory_format=torch.channels_last)
        xb = xb.contiguous(memory_format=torch.channels_last)
    if compiled:
        gan.generator = torch.compile(gan.generator)
        gan.discriminator = torch.compile(gan.discriminator)
    opt_g, opt_d = make_optimizers(gan, 2e-4, (0.5, 0.999))

    def run() -> None:
        step(gan, opt_g, opt_d, xb)

    t0 = time.perf_counter()
    run()  # warm-up (and compilation)
    run()
    return run, time.perf_counter() - t0


def top_ops(run: Callable[[], None], steps: int, n: int = 12) -> list[dict]:
    """The ``n`` operators with the most self CPU time, in ms per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return [{"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
             "calls_per_step": e.count // steps} for e in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--nz", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="steps timed per round and variant")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--note", default="", help="e.g. 'machine shared with two other jobs'")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = EDEGAN(args.image_size, args.channels, args.nz, args.width)
    x = torch.rand(args.batch_size, args.channels, args.image_size, args.image_size) * 2 - 1

    variants: dict[str, Callable[[], None]] = {}
    first_step_s: dict[str, float] = {}
    specs = {"before": dict(step=before_step), "after": dict(step=after_step),
             "after_channels_last": dict(step=after_step, channels_last=True)}
    if args.compile:
        specs["after_compiled"] = dict(step=after_step, compiled=True)
    for name, kw in specs.items():
        variants[name], first_step_s[name] = make_variant(base, x, **kw)

    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                variants[name]()
            per_round[name].append(args.batch_size * args.steps / (time.perf_counter() - t0))
        print(f"round {r + 1}: " + "  ".join(f"{k} {per_round[k][-1]:.1f}" for k in variants))
    medians = {k: round(statistics.median(v), 2) for k, v in per_round.items()}
    print("median images/s per training step: "
          + "  ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    print("median over rounds of x / before: " + "  ".join(
        f"{k} {statistics.median(a / b for a, b in zip(v, per_round['before'], strict=True)):.3f}"
        for k, v in per_round.items() if k != "before"))
    profiles = {k: top_ops(variants[k], 3) for k in ("before", "after")}
    record = {
        "kind": "profile_gan_step",
        "model": f"edegan width {args.width} nz {args.nz}, {args.channels} ch, "
                 f"{args.image_size} px, batch {args.batch_size}",
        "rounds": args.rounds, "steps_per_round": args.steps,
        "images_per_s_median": medians,
        "images_per_s_rounds": {k: [round(v, 2) for v in vs] for k, vs in per_round.items()},
        # per-round ratios: each round's variants ran back to back under the same load
        "speedup_vs_before_median_of_rounds": {
            k: round(statistics.median(a / b for a, b in zip(v, per_round["before"], strict=True)),
                     3) for k, v in per_round.items() if k != "before"},
        "warmup_seconds_first_two_steps": {k: round(v, 2) for k, v in first_step_s.items()},
        "top_ops_ms_per_step": profiles,
        "note": args.note,
        "peak_rss_mb": round(peak_rss_mb(), 1), **environment("cpu"),
        "torch_threads": args.threads, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tag = "_compile" if args.compile else ""
    out = Path(args.results) / f"profile_gan_step_c{args.channels}_t{args.threads}{tag}.json"
    write_json_atomic(out, record)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
