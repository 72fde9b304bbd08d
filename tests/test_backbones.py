"""Tests of the frozen teachers: real ImageNet weights, taps, freezing, weights files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from distilad.backbones import OFFLINE_TEACHERS, create_teacher
from distilad.backbones.base import file_fingerprint, load_state_dict_file
from distilad.backbones.efficientnet_lite import (
    EfficientNetLiteTeacher,
    build_timm_lite,
    packaged_weights_path,
)
from distilad.backbones.timm_cnn import IMAGENET_MEAN, IMAGENET_STD, TimmCNNTeacher
from distilad.errors import DistiladError


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLiteTeacher:
    return create_teacher("efficientnet_lite0")


def _imagenet_input(path: Path) -> torch.Tensor:
    """Shorter side 256 (bilinear), centre crop 224, (x - 0.5) / 0.5: (1, 3, 224, 224)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = 256 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = im.size
        left, top = (w - 224) // 2, (h - 224) // 2
        im = im.crop((left, top, left + 224, top + 224))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


def test_lite0_imagenet_weights_classify_real_photos(shared_data: Path) -> None:
    folder = shared_data / "imagenet-sample"
    if not (folder / "coffee.png").is_file() or not (folder / "chelsea.png").is_file():
        pytest.skip(f"{folder} with coffee.png and chelsea.png not found")
    model, wid = build_timm_lite("efficientnet_lite0")
    assert len(wid) == 16 and wid != "random"
    x = torch.cat([_imagenet_input(folder / "coffee.png"), _imagenet_input(folder / "chelsea.png")])
    with torch.inference_mode():
        p = model(x).softmax(-1)
    top = p.argmax(-1).tolist()
    assert top[0] == 967, f"coffee.png top-1 {top[0]} (expected 967 espresso)"
    assert 281 <= top[1] <= 285, f"chelsea.png top-1 {top[1]} (expected a cat, 281-285)"
    assert p[0, 967] > 0.5  # confidently espresso (0.957 with correct weights)
    assert p[1, 281:286].sum() > 0.5


TEST_DATA = Path(__file__).resolve().parent / "data"
#: the CC0 crops shipped in tests/data (see its README) and the ImageNet-1k class, checked by
#: name, that each must have in the classifier's top-5
SHIPPED_CROPS = {"coffee_128.jpg": (967, "espresso"), "chelsea_128.jpg": (281, "tabby")}


def _crop_01(path: Path) -> torch.Tensor:
    """A square crop resized to 224 px (bilinear), values in [0, 1]: (1, 3, 224, 224)."""
    with Image.open(path) as im:
        im = im.convert("RGB").resize((224, 224), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", OFFLINE_TEACHERS)
def test_lite_weights_classify_shipped_crops(name: str) -> None:
    """The position-by-position load gives a working ImageNet classifier: each shipped crop has
    its class in the top-5, and the teacher is exactly that classifier's stem and blocks (with
    the normalisation it applies). Runs without ../shared."""
    from timm.data import ImageNetInfo

    try:
        packaged_weights_path(name)
    except DistiladError as e:
        pytest.skip(f"{name}: weights package not installed ({e})")
    info = ImageNetInfo()
    model, _ = build_timm_lite(name)
    teacher = create_teacher(name)
    x01 = torch.cat([_crop_01(TEST_DATA / f) for f in SHIPPED_CROPS])
    with torch.inference_mode():
        p = model((x01 - teacher.mean) / teacher.std).softmax(-1)
    top5 = p.topk(5, dim=-1).indices.tolist()
    for (file, (cls, word)), top in zip(SHIPPED_CROPS.items(), top5, strict=True):
        assert word in info.index_to_description(cls).lower()  # the index means what we think
        names = [info.index_to_description(i) for i in top]
        assert cls in top, f"{name}: {file} top-5 {top} {names}, expected {cls} ({word})"
    assert top5[0][0] == 967  # espresso is top-1 for the cup (p 0.49-0.75 over Lite0/1/2)
    assert 281 <= top5[1][0] <= 285  # a domestic cat is top-1 for the cat (Egyptian cat, 285)
    full = model.state_dict()
    mine = {f"conv_stem.{k[2:]}" if k.startswith("0.") else f"bn1.{k[2:]}": v
            for k, v in teacher.stem.state_dict().items()}
    mine |= {f"blocks.{k}": v for k, v in teacher.blocks.state_dict().items()}
    assert mine and all(torch.equal(v, full[k]) for k, v in mine.items())


def test_lite0_random_differs_from_packaged() -> None:
    rnd, wid = build_timm_lite("efficientnet_lite0", "random")
    assert wid == "random"
    real, _ = build_timm_lite("efficientnet_lite0")
    assert not torch.equal(rnd.conv_stem.weight, real.conv_stem.weight)


def test_lite0_teacher_taps(lite0: EfficientNetLiteTeacher) -> None:
    assert lite0.channels == (24, 40, 112) and lite0.strides == (4, 8, 16)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        f = lite0(x)
    assert [tuple(t.shape) for t in f] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    # non-square input
    with torch.inference_mode():
        g = lite0(torch.rand(1, 3, 64, 96))
    assert [tuple(t.shape[2:]) for t in g] == [(16, 24), (8, 12), (4, 6)]
    # the taps are linear projections (signed), not ReLU outputs
    assert all((t < 0).any() for t in f)


def test_lite0_taps_match_timm_features_only(lite0: EfficientNetLiteTeacher) -> None:
    """The teacher's taps equal timm's own stride-4/8/16 feature maps with the same weights."""
    full, _ = build_timm_lite("efficientnet_lite0")
    feat = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                             out_indices=(1, 2, 3)).eval()
    missing, _ = feat.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    assert feat.feature_info.channels() == [24, 40, 112]
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = lite0(x)
        ref = feat((x - 0.5) / 0.5)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_teacher_is_frozen(lite0: EfficientNetLiteTeacher) -> None:
    params = list(lite0.parameters())
    assert params and not any(p.requires_grad for p in params)
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    bn = next(m for m in lite0.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    lite0(torch.rand(2, 3, 64, 64) * 5)  # would update BatchNorm statistics in training mode
    torch.testing.assert_close(bn.running_mean, before, rtol=0, atol=0)
    assert lite0.identity.startswith("efficientnet_lite0@") and "random" not in lite0.identity


def test_resnet18_random_and_no_weights() -> None:
    t = create_teacher("resnet18", "random")
    assert isinstance(t, TimmCNNTeacher)
    assert t.channels == (64, 128, 256) and t.strides == (4, 8, 16)
    assert t.identity == "resnet18@random"
    with torch.inference_mode():
        f = t(torch.rand(1, 3, 64, 64))
    assert [tuple(x.shape) for x in f] == [(1, 64, 16, 16), (1, 128, 8, 8), (1, 256, 4, 4)]
    assert not any(p.requires_grad for p in t.parameters())
    with pytest.raises(DistiladError, match="weights"):
        create_teacher("resnet18")
    with pytest.raises(DistiladError, match="weights"):
        create_teacher("resnet18", None)
    with pytest.raises(DistiladError, match="unknown teacher"):
        create_teacher("no_such_net_xyz", "random")


def _resnet18_reference_features(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    h = (x - mean) / std
    h = model.maxpool(model.act1(model.bn1(model.conv1(h))))
    f1 = model.layer1(h)
    f2 = model.layer2(f1)
    f3 = model.layer3(f2)
    return [f1, f2, f3]


@pytest.mark.parametrize("fmt", ["pth", "wrapped", "safetensors"])
def test_resnet18_weights_file(tmp_path: Path, fmt: str) -> None:
    torch.manual_seed(123)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    # non-trivial BatchNorm statistics so that a wrongly loaded file would show
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    sd = ref.state_dict()
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "r18.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        path = tmp_path / "r18.pth"
        torch.save({"state_dict": sd, "epoch": 3} if fmt == "wrapped" else sd, path)
    t = create_teacher("resnet18", path)
    assert t.weights_id == file_fingerprint(path) and len(t.weights_id) == 16
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = t(x)
        want = _resnet18_reference_features(ref, x)
    for a, b in zip(ours, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # a random teacher gives different features
    with torch.inference_mode():
        other = create_teacher("resnet18", "random")(x)
    assert not torch.allclose(other[0], ours[0])


def test_weights_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DistiladError, match="not found"):
        create_teacher("resnet18", tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(DistiladError, match="garbage.pth"):
        create_teacher("resnet18", garbage)
    bad_st = tmp_path / "garbage.safetensors"
    bad_st.write_bytes(b"\xff" * 64)
    with pytest.raises(DistiladError, match="garbage.safetensors"):
        load_state_dict_file(bad_st)
    # weights of another network do not fit
    small = tmp_path / "small.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, small)
    with pytest.raises(DistiladError, match="does not fit"):
        create_teacher("resnet18", small)
    # a tensor, not a state dict
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(DistiladError, match="state dict"):
        create_teacher("resnet18", tensor_file)


class _Evil:
    def __reduce__(self):  # executed by a plain pickle.load
        return (Path("/nonexistent-distilad-test").mkdir, ())


def test_weights_file_is_never_unpickled_as_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv1.weight": _Evil()}, f, protocol=2)
    with pytest.raises(DistiladError, match="evil.pth"):
        load_state_dict_file(path)
    assert not Path("/nonexistent-distilad-test").exists()


def test_cache_entry_not_written_without_room(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache entry that would fill the disk, or whose write fails halfway, is skipped with a
    CacheWarning: no entry, no temp file, and the caller goes on."""
    import shutil
    from collections import namedtuple

    from distilad.backbones import cache
    from distilad.errors import CacheWarning

    full = torch.arange(2000 * 125, dtype=torch.float32).reshape(2000, 125)  # 1 MB

    def batches():  # two batches of rows, the second first (any order is allowed)
        yield 1000, 2000, {"f0": full[1000:]}
        yield 0, 2000, {"f0": full[:1000]}

    path = tmp_path / "entry.safetensors"
    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cache.shutil, "disk_usage",
                        lambda p: usage(real.total, real.used, int(cache.DISK_HEADROOM + 5e5)))
    with pytest.warns(CacheWarning, match="needs 0.0 GB"):
        assert cache.stream_entry(path, batches()) is False
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cache.shutil, "disk_usage",
                        lambda p: usage(real.total, real.used, int(cache.DISK_HEADROOM + 2e6)))
    real_write = cache.EntryWriter.write
    calls = []

    def full_disk(self, name: str, first: int, rows: torch.Tensor) -> None:
        calls.append(first)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_write(self, name, first, rows)

    monkeypatch.setattr(cache.EntryWriter, "write", full_disk)
    with pytest.warns(CacheWarning, match="No space left"):
        assert cache.stream_entry(path, batches()) is False
    assert list(tmp_path.iterdir()) == []  # the partial temp file is gone
    monkeypatch.undo()
    assert cache.stream_entry(path, batches()) is True
    assert [p.name for p in tmp_path.iterdir()] == ["entry.safetensors"]
    # a standard safetensors file, whole and in order
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(path))["f0"], full)
    assert torch.equal(cache.read_rows(path, "f0", torch.tensor([1999, 3])), full[[1999, 3]])


def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    """A writer killed before commit leaves ``<entry>.<host>.<pid>.tmp`` (as large as the entry):
    the next write of that entry deletes it when its process is gone from this machine or it
    has not been touched for STALE_TEMP_SECONDS; a live writer's file stays."""
    import os
    import socket
    import subprocess
    import sys

    from distilad.backbones import cache

    path = tmp_path / "entry.safetensors"
    host = socket.gethostname()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = tmp_path / f"entry.safetensors.{host}.{int(done.stdout)}.tmp"
    alive = tmp_path / f"entry.safetensors.{host}.{os.getppid()}.tmp"  # a running process
    elsewhere = tmp_path / "entry.safetensors.other-host.12.tmp"
    elsewhere_old = tmp_path / "entry.safetensors.other-host.13.tmp"
    other_entry = tmp_path / f"other.safetensors.{host}.{int(done.stdout)}.tmp"
    for f in (dead, alive, elsewhere, elsewhere_old, other_entry):
        f.write_bytes(b"x" * 100)
    old = os.path.getmtime(elsewhere_old) - cache.STALE_TEMP_SECONDS - 10
    os.utime(elsewhere_old, (old, old))
    assert cache.stream_entry(path, iter([(0, 2, {"f0": torch.ones(2, 3)})])) is True
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["entry.safetensors", alive.name, elsewhere.name, other_entry.name])
