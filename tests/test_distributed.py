"""Multi-process training: ``torchrun`` + DDP (gloo, 2 processes on the CPU) gives the model of a
one-process fit with the same global batch and seed.

Why the tolerance is tight: each rank trains on its half of every global batch, its loss is
weighted so that DDP's gradient average is the whole batch's gradient, and BatchNorm uses the
global batch's statistics; so the arithmetic is that of one process up to the order of float
sums. Measured on 2 epochs of a tiny RD (11 images, batch 4 = parts of 2+2 and 2+1): scores
differ by ~5e-6 relative, against ~0.1 for another seed and ~0.19 for training each half-batch
alone (what a wrong shard or local BatchNorm statistics give); Transformaly ~2e-6 vs ~0.3.
The net is tiny and the run short on purpose: on a full-size RD (Adam, lr 0.005) float-order
differences grow over the epochs to the size of seed noise (one process on 1 vs 2 threads moves
the bottle scores by 7.5 % after 2 epochs at 128 px; README "Scaling").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny_mvtec
from torch import nn

import distilad
from distilad import distributed
from distilad.errors import DistiladError
from distilad.metrics import auroc

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this PyTorch build",
                allow_module_level=True)

COMMON = {"epochs": 2, "image_size": 64, "batch_size": 4, "device": "cpu", "seed": 0}
METHODS = {
    "rd": {"backbone": "efficientnet_lite0", "ocbe_blocks": 1, "decoder_blocks": [1, 1, 1]},
    "transformaly": {"blocks": [2, 3]},
}
#: relative difference of test scores allowed between the 2-process and the 1-process model
#: (measured: rd under 1e-3 on an AMD EPYC, 1.6e-3 on an Intel Xeon, transformaly 4e-6; another
#: seed moves rd's scores by 0.11, so 10x this still separates the two)
SCORE_RTOL = 4e-3


def _torchrun_fit(method: str, data: Path, out: Path) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node=2 -m distilad.cli fit METHOD ...`` started."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "distilad.cli", "fit", method, str(data), "-o", str(out / "model.distilad"),
           "--epochs", str(COMMON["epochs"]), "--image-size", str(COMMON["image_size"]),
           "--batch-size", str(COMMON["batch_size"]), "--device", "cpu", "-q"]
    for key, value in METHODS[method].items():
        cmd += ["--set", f"{key}={value!r}".replace("'", '"')]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, int]]:
    """Both methods fitted by 2 processes (launched together): {method: (out folder, output,
    exit status)}."""
    root = tmp_path_factory.mktemp("ddp")
    data = build_tiny_mvtec(root)
    started = {m: (root / f"out-{m}", _torchrun_fit(m, data, root / f"out-{m}")) for m in METHODS}
    done = {}
    for m, (out, proc) in started.items():
        try:
            text, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.terminate()  # torchrun passes SIGTERM on to its workers
            text, _ = proc.communicate(timeout=30)
            text += "\n(killed after 300 s)"
        done[m] = (out, text, proc.returncode)
    return {**done, "data": data}  # type: ignore[dict-item]


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_fit_the_one_process_model(method: str, runs: dict) -> None:
    out, text, rc = runs[method]
    assert rc == 0, text[-3000:]
    # rank 0 alone wrote the model (atomically: no temporary file left) and printed the result
    assert sorted(p.name for p in out.iterdir()) == ["model.distilad"]
    assert text.count(f"fitted {method} on 11 images") == 1, text[-3000:]
    assert "by 2 processes" in text
    two = distilad.load_detector(out / "model.distilad", device="cpu")
    assert two.fit_info["distributed"] == {"processes": 2, "backend": "gloo"}

    data = runs["data"]
    params = {**COMMON, **METHODS[method], "progress": False}
    one = distilad.create_detector(method, **params).fit(data)
    assert "distributed" not in one.fit_info
    np.testing.assert_allclose(two.fit_info["loss_history"], one.fit_info["loss_history"],
                               rtol=1e-4)
    s2, s1 = two.score(data), one.score(data)
    np.testing.assert_allclose(s2.image_scores, s1.image_scores, rtol=SCORE_RTOL)
    np.testing.assert_array_equal(s2.labels, s1.labels)
    assert two.threshold == pytest.approx(one.threshold, rel=SCORE_RTOL)
    labels = _test_labels(data)
    assert auroc(labels, s2.image_scores) == pytest.approx(auroc(labels, s1.image_scores),
                                                           abs=1e-9)
    # the tolerance separates: another seed moves the scores far more than the 2 processes do
    other = distilad.create_detector(method, **{**params, "seed": 1}).fit(data)
    moved = np.max(np.abs(other.score(data).image_scores - s1.image_scores)
                   / np.abs(s1.image_scores))
    assert moved > 10 * SCORE_RTOL


def _test_labels(data: Path) -> np.ndarray:
    from distilad.data import as_image_set

    return as_image_set(data, split="test").labels


# --- pieces, in one process -----------------------------------------------------------------------
def test_shard_batch_cuts_the_global_batch_into_near_equal_parts_in_order() -> None:
    idx = torch.tensor([7, 3, 9, 1, 4])
    parts = [distributed.shard_batch(idx, r, 2) for r in range(2)]
    assert [p.tolist() for p in parts] == [[7, 3, 9], [1, 4]]
    parts = [distributed.shard_batch(idx, r, 3) for r in range(3)]
    assert [p.tolist() for p in parts] == [[7, 3], [9, 1], [4]]
    assert torch.equal(torch.cat(parts), idx)


def test_unsupported_multi_process_fits_are_refused_in_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 4))
    with pytest.raises(DistiladError, match="edegan cannot be trained in several processes"):
        distilad.create_detector("edegan", device="cpu").fit(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DistiladError, match="batch_size 2 is smaller than the number of "
                       r"processes \(4\)"):
        distributed.check_batch_size(2)
    with pytest.raises(DistiladError, match="rd: adaptivemix=True is not supported"):
        distributed.refuse("rd: adaptivemix=True")
    monkeypatch.setattr(distributed, "rank_and_world", lambda: (0, 1))
    distributed.check_method("edegan")  # one process: anything goes
    distributed.check_batch_size(2)
    assert distributed.fit_info() == {}


def test_global_batchnorm_shares_tensors_and_unwrap_puts_the_layers_back() -> None:
    from timm.layers import BatchNormAct2d

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                        nn.Sequential(BatchNormAct2d(4, act_layer=nn.ReLU)))
    originals = [net[1], net[2][0]]
    x = torch.randn(2, 3, 6, 6)
    net.eval()
    want = net(x)
    distributed._replace_batchnorm(net)
    assert isinstance(net[1], distributed.GlobalBatchNorm)
    assert isinstance(net[2][0], distributed.GlobalBatchNorm)
    assert net[1].weight is originals[0].weight
    assert net[2][0].running_var is originals[1].running_var
    assert len(list(net.parameters())) == 6  # conv weight + bias, two BN weights + biases, no more
    torch.testing.assert_close(net(x), want)  # out of a process group: the original layers
    distributed.unwrap(net)
    assert net[1] is originals[0] and net[2][0] is originals[1]
