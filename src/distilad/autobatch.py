"""Scoring batch size from a measurement: ``score_batch_size="auto"``.

Whether batching helps depends on the network, the image size, the device and the thread count:
on a 2-core CPU RD with the Lite1 teacher took longer per image at batch 16 than at batch 1
(issue 14), while a GPU or a small GAN gains from large batches. So instead of a constant, the
scoring path is timed on synthetic inputs at batch sizes 1, 2, 4, ... and the fastest per image
is used, the smallest of those within 5 % of the best (less memory, lower latency).

Cost: one warm-up and two timed calls per batch size, sizes up to the number of images to
score, stopping at the first of: two sizes in a row slower per image than the best so far, a call
longer than ``max_call_seconds``, running out of memory, or the measurement having taken more
than a tenth of what scoring the images at the best rate so far will take (at least half a
second): a few images are not worth a long search. The result is kept per process for each
(model configuration, device, threads, number of images rounded up to a power of two).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

#: batch sizes tried, in order, on a CPU and on an accelerator.
CPU_CANDIDATES = (1, 2, 4, 8, 16, 32)
GPU_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: a size within this factor of the best per-image time counts as equally fast.
TOLERANCE = 1.05

#: measurements by configuration, then by the number of images they were made for.
_CACHE: dict[str, dict[int, dict[str, Any]]] = {}
_UNLIMITED = 1 << 62


def choose_batch_size(run: Callable[[int], object], candidates: Sequence[int] = CPU_CANDIDATES,
                      n_images: int | None = None, max_call_seconds: float = 3.0,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time ``run(b)`` (scores b images) for each b of ``candidates`` (ascending, those up to
    ``n_images``) and return ``{"batch_size": b, "ms_per_image": {b: ms, ...}}`` for the sizes
    measured; see the module docstring for the rule and the stopping conditions."""
    import torch

    per_image: dict[int, float] = {}
    worse_in_row = 0
    spent = 0.0
    for b in candidates:
        if n_images is not None and b > max(n_images, 1):
            break
        start = clock()
        try:
            run(b)  # warm-up: allocations, kernel choice
            times = []
            for _ in range(2):
                t0 = clock()
                run(b)
                times.append(clock() - t0)
        except (torch.OutOfMemoryError, MemoryError):
            break
        spent += clock() - start
        per_image[b] = 1000.0 * min(times) / b
        best = min(per_image.values())
        worse_in_row = 0 if per_image[b] <= best * TOLERANCE else worse_in_row + 1
        budget = (float("inf") if n_images is None
                  else max(0.5, 0.1 * n_images * best / 1000.0))
        if worse_in_row >= 2 or min(times) > max_call_seconds or spent > budget:
            break
    if not per_image:  # even one image ran out of memory: let scoring report it
        return {"batch_size": 1, "ms_per_image": {}}
    best = min(per_image.values())
    chosen = min(b for b, ms in per_image.items() if ms <= best * TOLERANCE)
    return {"batch_size": chosen, "ms_per_image": {b: round(ms, 3) for b, ms in per_image.items()}}


def measured_batch_size(det: Any, n_images: int | None = None) -> int:
    """The batch size for scoring ``n_images`` images with detector ``det`` (its
    ``_scoring_net`` timed on random images on its device), measured once per process per
    configuration (a measurement made for more images serves fewer); the measurement is left in
    ``det.batch_measurement``."""
    import torch

    if n_images is not None and n_images <= 1:
        return 1
    device = det.device
    params = {k: v for k, v in det.params.items() if k not in det.runtime_params}
    key = json.dumps([det.name, params, str(device), torch.get_num_threads()], sort_keys=True,
                     default=str)
    bucket = _UNLIMITED if n_images is None else 1 << (int(n_images) - 1).bit_length()
    done = _CACHE.setdefault(key, {})
    usable = [b for b in done if b >= bucket]
    if usable:
        measurement = done[min(usable)]
    else:
        net = det._scoring_net()
        modes = [(m, m.training) for m in net.modules()]  # shared with det: put back as found
        net.eval()
        shape = (net.channels, net.image_size, net.image_size)
        candidates = CPU_CANDIDATES if device.type == "cpu" else GPU_CANDIDATES

        @torch.inference_mode()
        def run(b: int) -> None:
            net(torch.rand((b, *shape), device=device))
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        try:
            measurement = {**choose_batch_size(run, candidates, None if bucket == _UNLIMITED
                                               else bucket),
                           "device": str(device), "threads": torch.get_num_threads()}
        finally:
            for m, training in modes:
                m.training = training
        done[bucket] = measurement
    det.batch_measurement = measurement
    return batch_size_for(measurement, n_images)


def batch_size_for(measurement: dict[str, Any], n_images: int | None) -> int:
    """The measured choice, or for fewer images the fastest measured size up to ``n_images``."""
    if n_images is None or n_images >= measurement["batch_size"]:
        return int(measurement["batch_size"])
    table = {int(b): ms for b, ms in measurement["ms_per_image"].items() if int(b) <= n_images}
    if not table:
        return 1
    best = min(table.values())
    return min(b for b, ms in table.items() if ms <= best * TOLERANCE)
