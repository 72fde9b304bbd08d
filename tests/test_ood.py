"""OOD classifier glue (issue 12 part 3): shapes and the frozen subspace head, image conversion,
the AdaptiveMix term added only when on, paired arms, class subspaces and the OOD AUROC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distilad.modules.adaptivemix import AdaptiveMix
from distilad.ood.classifier import SubspaceResNet, TrainConfig, mixup_loss, train_classifier
from distilad.ood.data import kept_classes, relabel, to_rgb32
from distilad.ood.scoring import class_subspaces, nearest_subspace_similarity, ood_auroc


def _net(k: int = 3) -> SubspaceResNet:
    torch.manual_seed(0)
    return SubspaceResNet(k, width=4)


def test_network_shapes_unit_embedding_and_frozen_orthogonal_head() -> None:
    net = _net(3)
    x = torch.rand(5, 3, 32, 32)
    e = net.embed(x)
    assert e.shape == (5, 32) and net.embedding_dim == 32
    assert torch.allclose(e.norm(dim=1), torch.ones(5), atol=1e-5)
    logits = net(x)
    assert logits.shape == (5, 3) and (logits >= 0).all() and (logits <= 1 + 1e-6).all()
    w = net.head.weight
    assert not w.requires_grad
    assert torch.allclose(w @ w.T, torch.eye(3), atol=1e-5)  # orthonormal class directions


def test_to_rgb32_gray_and_rgb() -> None:
    gray = np.zeros((2, 28, 28), np.uint8)
    gray[:, 10:18, 10:18] = 255
    x = to_rgb32(gray)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2]) and 0 <= x.min() and x.max() == 1.0
    rgb = np.zeros((1, 32, 32, 3), np.uint8)
    rgb[0, 3, 5, 2] = 51
    y = to_rgb32(rgb)
    assert y.shape == (1, 3, 32, 32) and y[0, 2, 3, 5] == pytest.approx(0.2) and y.sum() == y[0, 2, 3, 5]


def test_held_out_relabelling() -> None:
    kept = kept_classes(10, [0, 7])
    assert kept == [1, 2, 3, 4, 5, 6, 8, 9]
    mask, new = relabel(np.array([0, 1, 9, 7, 8, 2]), kept)
    assert mask.tolist() == [False, True, True, False, True, True]
    assert new.tolist() == [0, 7, 6, 1]
    with pytest.raises(ValueError):
        kept_classes(10, [10])


def test_adaptivemix_term_only_when_on_and_same_mixture_in_both_arms() -> None:
    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    net = _net(3).train()
    off = mixup_loss(net, x, y, AdaptiveMix.seeded(1), None)
    assert off.term is None and off.total is off.ce
    on = mixup_loss(net, x, y, AdaptiveMix.seeded(1), AdaptiveMix.seeded(2, weight=3.0))
    # the same mixer seed gives the same mixture, so the cross-entropy is the same in both arms
    assert float(on.ce.detach()) == pytest.approx(float(off.ce.detach()), rel=1e-6)
    assert float(on.term.detach()) > 0
    total, ce, term = (float(t.detach()) for t in on)
    assert total == pytest.approx(ce + 3.0 * term, rel=1e-6)
    # the term's gradient reaches the trainable weights
    net.zero_grad()
    on.term.backward()
    assert net.stem[0].weight.grad.abs().sum() > 0


def _tiny_data(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 3


def test_training_pairs_arms_and_records_the_term_only_when_on() -> None:
    x, y = _tiny_data()
    base = dict(width=4, epochs=2, batch_size=8, seed=3)
    m_off, h_off = train_classifier(x, y, 3, TrainConfig(**base))
    m_zero, h_zero = train_classifier(x, y, 3, TrainConfig(**base, adaptivemix=True,
                                                            adaptivemix_weight=0.0))
    m_on, h_on = train_classifier(x, y, 3, TrainConfig(**base, adaptivemix=True))
    assert h_off["adaptivemix_term"] is None and len(h_on["adaptivemix_term"]) == 2
    assert h_off["steps"] == 6 and len(h_off["ce"]) == 2
    # weight 0: same init, data order, augmentations and mixtures -> the same trained weights
    for a, b in zip(m_off.parameters(), m_zero.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert h_zero["ce"] == pytest.approx(h_off["ce"], rel=1e-5)
    # weight 1 changes them
    assert not torch.allclose(m_off.stem[0].weight, m_on.stem[0].weight)


def test_class_subspaces_recover_the_class_directions() -> None:
    g = torch.Generator().manual_seed(0)
    axes = torch.eye(4)[:2]
    e = torch.cat([axes[k] * (1 + torch.rand(20, 1, generator=g)) for k in range(2)])
    e = torch.nn.functional.normalize(e + 0.05 * torch.randn(40, 4, generator=g), dim=1)
    labels = torch.arange(40) // 20
    bases = class_subspaces(e, labels, 2)
    assert (bases * axes).sum(1).min() > 0.99  # same direction and sign
    sim = nearest_subspace_similarity(torch.tensor([[0.0, 0, 1, 0], [0.6, 0.8, 0, 0]]), axes)
    assert sim.tolist() == pytest.approx([0.0, 0.8])


def test_ood_auroc_on_a_toy_case() -> None:
    # OOD samples are the positives, scored by the negated similarity: 0.1 is below every
    # in-distribution similarity (3 wins), 0.75 below 0.9 and 0.8 only (2 of 3)
    assert ood_auroc([0.9, 0.8, 0.7], [0.75, 0.1]) == pytest.approx(5 / 6)
    assert ood_auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert ood_auroc([0.1, 0.2], [0.9, 0.8]) == 0.0


def _record(seed: int, arm: str, acc: float, auroc: float) -> dict:
    return {"kind": "ood_adaptivemix", "name": "toy", "arm": arm, "seed": seed,
            "config": {"epochs": 1, "batch_size": 8, "lr": 0.1, "momentum": 0.9,
                       "weight_decay": 5e-4, "adaptivemix_weight": 1.0, "sigma": 0.05},
            "model": "toy", "n_train": 10, "trained_classes": [1, 2], "held_out_classes": [0],
            "timings": {"wall_seconds": 60.0},
            "metrics": {"accuracy_in": acc, "auroc": {"mnist": {"max_logit": auroc}},
                        "mixing_residual_test": 1e-4}}


def test_results_section_pairs_seeds() -> None:
    from distilad.bench.ood_results import ood_adaptivemix_section

    recs = [_record(0, "off", 0.50, 0.80), _record(0, "on", 0.52, 0.70),
            _record(1, "off", 0.60, 0.90), _record(1, "on", 0.66, 0.85),
            _record(2, "off", 0.70, 0.95)]  # seed 2 has no "on": not in the paired column
    text = "\n".join(ood_adaptivemix_section(recs))
    # off over 3 seeds: 60.00 ± 10.00; paired diffs +2 and +6 -> +4.00 ± 2.83
    assert "| in-distribution accuracy | 60.00 ± 10.00 | 59.00 ± 9.90 | +4.00 ± 2.83 |" in text
    assert "| AUROC mnist, max logit | 88.33 ± 7.64 | 77.50 ± 10.61 | -7.50 ± 3.54 |" in text
    assert "Seeds 0, 1 paired" in text
