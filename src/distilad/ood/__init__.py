"""Out-of-distribution detection with a classifier (issue 12, AdaptiveMix's third use).

- :mod:`distilad.ood.classifier`: a CIFAR-style ResNet-18 whose embedding is L2-normalised and read
  by a frozen orthogonal bias-free ``|linear|`` head (the official AdaptiveMix classifier's head,
  i.e. one 1-D subspace per class), trained with mixup cross-entropy, with or without the
  AdaptiveMix shrinkage term on the embedding.
- :mod:`distilad.ood.scoring`: OOD scores from the embedding (max logit = nearest head subspace;
  nearest class subspace fitted on training embeddings) and their AUROC.
- :mod:`distilad.ood.data`: images as the classifier takes them (gray 28 px sets upscaled to
  32 px RGB), and the class-held-out relabelling.

The benchmark that trains and compares both arms: ``benchmarks/ood_adaptivemix.py``.
"""
