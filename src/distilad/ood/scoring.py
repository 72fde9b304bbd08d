"""OOD scores of unit embeddings and their AUROC.

Two scores, both "higher = more in-distribution" similarities, negated into OOD scores:

- ``max_logit``: the largest logit ``max_k |<w_k, e>|`` of the classifier's frozen orthogonal
  head, i.e. |cos| of the embedding to the nearest of the head's class directions;
- ``subspace``: ``max_k |<u_k, e>|`` with ``u_k`` the first right singular vector of class k's
  *training* embeddings (the fitted 1-D class subspaces of Zaeemzadeh et al., CVPR 2021, the
  detector the official AdaptiveMix README names for OOD).
"""

from __future__ import annotations

import numpy as np
import torch

from distilad.metrics import auroc

SCORES = ("max_logit", "subspace")


def class_subspaces(embeddings: torch.Tensor, labels: torch.Tensor | np.ndarray,
                    num_classes: int) -> torch.Tensor:
    """(num_classes, D) unit vectors: the first right singular vector of each class's embeddings
    (N, D), i.e. the direction of the best 1-D subspace through the origin; its sign is chosen so
    that the class's embeddings lie on the positive side on average."""
    labels = torch.as_tensor(labels)
    bases = []
    for k in range(num_classes):
        ek = embeddings[labels == k]
        if len(ek) == 0:
            raise ValueError(f"class {k} has no training embeddings to fit its subspace")
        u = torch.linalg.svd(ek.double(), full_matrices=False).Vh[0]
        bases.append((u if float(ek.double().mv(u).sum()) >= 0 else -u).float())
    return torch.stack(bases)


def nearest_subspace_similarity(embeddings: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """``max_k |<b_k, e>|`` (N,) for embeddings (N, D) and unit directions ``bases`` (K, D): the
    |cos| to the nearest 1-D subspace when the embeddings are unit vectors."""
    return (embeddings @ bases.T).abs().max(dim=1).values


def ood_auroc(in_similarity: torch.Tensor | np.ndarray, out_similarity: torch.Tensor | np.ndarray
              ) -> float:
    """AUROC of telling OOD samples (positives) from in-distribution ones by the negated
    similarity (lower similarity = more OOD); 0.5 = chance, 1 = every OOD sample less similar
    than every in-distribution one."""
    s_in = np.asarray(in_similarity, dtype=np.float64).ravel()
    s_out = np.asarray(out_similarity, dtype=np.float64).ravel()
    labels = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    return auroc(labels, -np.r_[s_in, s_out])
