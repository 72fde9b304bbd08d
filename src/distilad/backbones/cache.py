"""Teacher features computed once and reused.

``teacher_features`` runs a frozen teacher over an ImageSet and returns its maps. With a cache
folder, the result is stored under a key made of the teacher (name + weights fingerprint), the
preprocessing (size, channels) and the data (the ImageSet's fingerprint), so a sweep over classes
and seeds pays for the teacher once per dataset. Files are written atomically (temp + rename), so
an interrupted run never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from distilad.backbones.base import Teacher
from distilad.data.base import ImageSet, SubsetImageSet
from distilad.data.transforms import iter_batches


def cache_key(teacher: Teacher, images: ImageSet, size: int, channels: int = 3) -> str:
    text = f"{teacher.identity}|size={size}|ch={channels}|{images.content_fingerprint}"
    return hashlib.sha1(text.encode()).hexdigest()[:24]


@torch.inference_mode()
def teacher_features(
    teacher: Teacher, images: ImageSet, size: int, batch_size: int = 32,
    device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
    progress: bool = False, desc: str = "teacher features",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(inputs (N, 3, size, size), [maps (N, c_i, h_i, w_i) per tap]) on the CPU.

    With ``cache_dir`` the pair is loaded from / saved to ``<cache_dir>/<key>.safetensors``.
    """
    from safetensors.torch import load_file, save_file

    if cache_dir is not None and isinstance(images, SubsetImageSet):
        # cache the whole parent set once; every subset (seeded hold-out splits) indexes into it
        x, f = teacher_features(teacher, images.parent, size, batch_size, device, cache_dir,
                                progress, desc)
        idx = torch.as_tensor(images.indices, dtype=torch.long)
        return x[idx], [t[idx] for t in f]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{cache_key(teacher, images, size)}.safetensors"
        if path.is_file():
            try:
                t = load_file(str(path))
                n_taps = len([k for k in t if k.startswith("f")])
                return t["x"], [t[f"f{i}"] for i in range(n_taps)]
            except Exception:  # a damaged entry is recomputed
                path.unlink(missing_ok=True)
    xs, feats = [], None
    teacher = teacher.to(device)
    n = len(images)
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
    for _, x, _ in iter_batches(images, batch_size, size):
        xs.append(x)
        out = [f.float().cpu() for f in teacher(x.to(device))]
        feats = [[o] for o in out] if feats is None else [a + [o] for a, o in zip(feats, out,
                                                                                   strict=True)]
        bar.update(len(x))
    bar.close()
    assert feats is not None
    x_all = torch.cat(xs)
    f_all = [torch.cat(f) for f in feats]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        save_file({"x": x_all.contiguous(), **{f"f{i}": f.contiguous() for i, f in
                                               enumerate(f_all)}}, str(tmp))
        os.replace(tmp, path)
    return x_all, f_all
